"""Commit-or-translate: the one place services turn database errors into domain errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.orm import Session

from opsdesk.errors import Conflict, InvalidArgument, NotFound, OpsdeskError, RuleViolation

T = TypeVar("T")
V = TypeVar("V")

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
NUL_MESSAGE = "must not contain NUL (\\x00) characters"
# SQLSTATEs whose cause is the argument itself: NOT NULL, too long, out of range, malformed text
# representation, bad regex, syntax (JSON path), invalid parameter. (22P05, \u0000 inside JSONB,
# is mapped on its own below, with the NUL message.)
_INVALID_STATES = ("23502", "22001", "22003", "22P02", "2201B", "42601", "22023")


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


def _diag(exc: DBAPIError, field: str) -> str:
    diag = getattr(exc.orig, "diag", None)
    return str(getattr(diag, field, "") or "")


def _is_client_nul(exc: DBAPIError) -> bool:
    # psycopg refuses a str holding NUL before sending it: a DataError without SQLSTATE.
    return not _sqlstate(exc) and "cannot contain NUL" in str(exc.orig)


def translate(exc: DBAPIError, what: str) -> OpsdeskError:
    """Map a database error to the domain error a caller can act on."""
    state = _sqlstate(exc)
    primary = _diag(exc, "message_primary") or str(exc.orig)
    if state == "22P05" or _is_client_nul(exc):
        return InvalidArgument(f"{what}: text and JSON {NUL_MESSAGE} ({primary})")
    constraint = _diag(exc, "constraint_name")
    if state == "23505":
        detail = _diag(exc, "message_detail")
        return Conflict(f"{what} already exists ({detail or constraint}); use a different value")
    if state == "23503":
        return NotFound(f"{what}: a referenced object does not exist ({constraint})")
    if state == "23514":
        return RuleViolation(f"{what}: {primary}")
    if state in _INVALID_STATES:
        return InvalidArgument(f"{what}: {primary}")
    raise exc


def rollback(session: Session) -> None:
    """Roll back ``session``; if a failing after-commit hook left it stuck, close it instead.

    An exception raised by an after_commit listener leaves the transaction in 'committed'
    state, where rollback() itself raises and would hide the real error; close() resets it.
    """
    try:
        session.rollback()
    except InvalidRequestError:
        session.close()


@contextmanager
def unit_of_work(session: Session, *, what: str, commit: bool = True) -> Iterator[None]:
    """Run the block, then commit; on any error roll back and raise a domain error if known."""
    try:
        yield
        if commit:
            session.commit()
    except DBAPIError as exc:
        rollback(session)
        if (
            isinstance(exc, IntegrityError)
            or _sqlstate(exc).startswith(("22", "42601"))
            or _is_client_nul(exc)
        ):
            raise translate(exc, what) from exc
        raise
    except BaseException:
        rollback(session)
        raise


def get_or_raise(session: Session, model: type[T], id_: int, *, what: str, lock: bool = False) -> T:
    """Return the row with primary key ``id_`` or raise NotFound naming it."""
    obj = session.get(model, id_, with_for_update=lock)
    if obj is None:
        raise NotFound(f"{what} {id_} does not exist")
    return obj


def find_nul(value: Any) -> str | None:
    """Return where a NUL character sits in a str or JSON value ("$", "$.k[0]", "a key of $.k")."""
    stack: list[tuple[str, Any]] = [("$", value)]
    # A loop, not recursion: a deeply nested payload must not hit the recursion limit.
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
        elif isinstance(item, dict):
            for key, inner in reversed(list(item.items())):
                if isinstance(key, str) and "\x00" in key:
                    return f"a key of {where}"
                stack.append((f"{where}.{key}", inner))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(item))))
    return None


def require_no_nul(value: V, *, field: str) -> V:
    """Return ``value`` (str, JSON or None), or raise InvalidArgument if it holds a NUL."""
    where = find_nul(value)
    if where is not None:
        at = "" if where == "$" else f" (at {where})"
        raise InvalidArgument(f"{field} {NUL_MESSAGE}{at}; PostgreSQL cannot store them")
    return value


def require_text(value: str, *, field: str, max_length: int) -> str:
    """Return ``value`` stripped, or raise InvalidArgument if empty, too long or holding NUL."""
    text = require_no_nul(value, field=field).strip()
    if not text:
        raise InvalidArgument(f"{field} must not be empty")
    if len(text) > max_length:
        raise InvalidArgument(f"{field} is {len(text)} characters; the limit is {max_length}")
    return text


def require_email(value: str, *, field: str = "email") -> str:
    """Return the stripped email, or raise InvalidArgument if it does not look like one."""
    email = require_text(value, field=field, max_length=320)
    if not _EMAIL_RE.fullmatch(email):
        raise InvalidArgument(
            f"{field} {email!r} is not an email address (expected name@domain.tld)"
        )
    return email


def require_choice(value: str, choices: Any, *, field: str) -> str:
    """Return ``value`` if it is one of ``choices`` (an Enum or iterable of str), else raise."""
    allowed = [getattr(c, "value", c) for c in choices]
    if value not in allowed:
        raise InvalidArgument(f"{field} {value!r} is not valid; use one of {', '.join(allowed)}")
    return str(value)
