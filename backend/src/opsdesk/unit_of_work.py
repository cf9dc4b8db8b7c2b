"""Commit-or-translate: the one place services turn database errors into domain errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from opsdesk.errors import Conflict, InvalidArgument, NotFound, OpsdeskError, RuleViolation

T = TypeVar("T")

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


def _diag(exc: DBAPIError, field: str) -> str:
    diag = getattr(exc.orig, "diag", None)
    return str(getattr(diag, field, "") or "")


def translate(exc: DBAPIError, what: str) -> OpsdeskError:
    """Map a database error to the domain error a caller can act on."""
    state = _sqlstate(exc)
    primary = _diag(exc, "message_primary") or str(exc.orig)
    constraint = _diag(exc, "constraint_name")
    if state == "23505":
        detail = _diag(exc, "message_detail")
        return Conflict(f"{what} already exists ({detail or constraint}); use a different value")
    if state == "23503":
        return NotFound(f"{what}: a referenced object does not exist ({constraint})")
    if state == "23514":
        return RuleViolation(f"{what}: {primary}")
    if state in ("23502", "22001", "22003", "22P02", "2201B", "42601", "22023"):
        return InvalidArgument(f"{what}: {primary}")
    raise exc


@contextmanager
def unit_of_work(session: Session, *, what: str, commit: bool = True) -> Iterator[None]:
    """Run the block, then commit; on any error roll back and raise a domain error if known."""
    try:
        yield
        if commit:
            session.commit()
    except DBAPIError as exc:
        session.rollback()
        if isinstance(exc, IntegrityError) or _sqlstate(exc).startswith(("22", "42601")):
            raise translate(exc, what) from exc
        raise
    except BaseException:
        session.rollback()
        raise


def get_or_raise(session: Session, model: type[T], id_: int, *, what: str, lock: bool = False) -> T:
    """Return the row with primary key ``id_`` or raise NotFound naming it."""
    obj = session.get(model, id_, with_for_update=lock)
    if obj is None:
        raise NotFound(f"{what} {id_} does not exist")
    return obj


def require_text(value: str, *, field: str, max_length: int) -> str:
    """Return ``value`` stripped, or raise InvalidArgument if empty or too long."""
    text = value.strip()
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
