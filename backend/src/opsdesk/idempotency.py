"""Idempotency keys for create tools: PostgreSQL remembers, a short Valkey lease orders retries.

The key's record (tool, key, fingerprint of the arguments, id of the new object) is written in
the same transaction as the object, so the row exists exactly when the record does: a retry
with the same key and arguments returns that object, whatever happened to Valkey or to the
first call after its COMMIT. The same key with other arguments is a Conflict. Records older
than ``KEEP_SECONDS`` are forgotten.

While a first call runs it holds a lease in Valkey (``<prefix>idem:<tool>:<key>``, SET NX with
a TTL of ``LEASE_SECONDS``), so a concurrent retry waits for it instead of doing the work
twice. The lease only orders calls; if one is lost (expired, or never released because Valkey
failed), the record's primary key still refuses a second object and the loser replays the
winner's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from opsdesk.creation import Creation
from opsdesk.db import Base, utcnow
from opsdesk.errors import Conflict, InvalidArgument

log = logging.getLogger(__name__)

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_KEY_RE = re.compile(KEY_PATTERN)
LEASE_SECONDS = 30.0  # longer than any create takes; a crashed call blocks its key this long
KEEP_SECONDS = 24 * 3600


class IdempotencyRecord(Base):
    """Which object a create tool made for an idempotency key (written with the object)."""

    __tablename__ = "idempotency_keys"

    tool: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KeyValueStore(Protocol):
    """The slice of redis.Redis this module uses (a fake fits in unit tests)."""

    def get(self, name: str) -> Any:
        """Return the value or None."""
        ...

    def set(self, name: str, value: str, *, px: int | None = None, nx: bool = False) -> Any:
        """Set the value with a TTL in milliseconds; with nx only if missing."""
        ...

    def delete(self, *names: str) -> Any:
        """Delete keys."""
        ...


def fingerprint(arguments: dict[str, Any]) -> str:
    """Return a short stable hash of a call's arguments (key excluded by the caller)."""
    raw = json.dumps(arguments, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid idempotency key, else raise InvalidArgument."""
    if not _KEY_RE.fullmatch(key):
        raise InvalidArgument(
            f"idempotency_key {key!r} is not valid: use 1-128 of A-Z a-z 0-9 . _ : -"
        )
    return key


def record_creation(session: Session, creation: Creation) -> None:
    """Write the key's record for ``creation`` in the current transaction (before COMMIT).

    A fresh record for the same key (another call won a race) aborts the transaction with a
    Conflict, so the second object is never committed; an expired one is replaced.
    """
    assert creation.key is not None
    assert creation.object_id is not None
    now = utcnow()
    values = {
        "tool": creation.tool,
        "key": creation.key,
        "fingerprint": creation.fingerprint,
        "object_id": creation.object_id,
        "created_at": now,
    }
    table = IdempotencyRecord.__table__
    stmt = (
        insert(IdempotencyRecord)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[table.c.tool, table.c.key],
            set_=values,
            where=table.c.created_at < now - timedelta(seconds=KEEP_SECONDS),
        )
        .returning(table.c.object_id)
    )
    if session.execute(stmt).first() is None:
        raise Conflict(
            f"idempotency_key {creation.key!r} was just used by another call; "
            "retry to get its object"
        )


class IdempotencyStore:
    """Runs a create at most once per (tool, idempotency key)."""

    def __init__(
        self,
        redis: KeyValueStore,
        *,
        prefix: str = "",
        lease: float = LEASE_SECONDS,
        wait: float = 5.0,
        poll: float = 0.05,
    ) -> None:
        """Lease keys for ``lease`` s; wait up to ``wait`` s for a concurrent first call."""
        self.redis, self.prefix, self.lease, self.wait, self.poll = redis, prefix, lease, wait, poll

    def redis_key(self, tool: str, key: str) -> str:
        """Return the Valkey key of the lease on ``key`` used with ``tool``."""
        return f"{self.prefix}idem:{tool}:{check_key(key)}"

    def find(self, session: Session, creation: Creation) -> int | None:
        """Return the id recorded for the creation's key, or None; other arguments: Conflict."""
        assert creation.key is not None
        cutoff = utcnow() - timedelta(seconds=KEEP_SECONDS)
        row = session.execute(
            select(IdempotencyRecord.fingerprint, IdempotencyRecord.object_id).where(
                IdempotencyRecord.tool == creation.tool,
                IdempotencyRecord.key == creation.key,
                IdempotencyRecord.created_at >= cutoff,
            )
        ).first()
        if row is None:
            return None
        if row.fingerprint != creation.fingerprint:
            raise Conflict(
                "this idempotency_key was already used with different arguments; "
                "use a new key for a new request"
            )
        return int(row.object_id)

    def run(
        self, session: Session, creation: Creation, make: Callable[[], Any]
    ) -> tuple[int, bool]:
        """Return (id, replayed): the recorded id on a repeat, else the id ``make()`` commits.

        ``make`` runs inside ``creation.watch(session)``, which records the key with the row.
        """
        assert creation.key is not None
        rkey = self.redis_key(creation.tool, creation.key)
        # PostgreSQL first: a finished key replays even while Valkey is down.
        found = self.find(session, creation)
        if found is not None:
            return found, True
        found, leased_at = self._acquire(session, creation, rkey)
        if found is not None:
            return found, True
        try:
            found = self.find(session, creation)  # finished between our look and our lease
            if found is not None:
                return found, True
            creation.record = record_creation
            try:
                with creation.watch(session):
                    make()
            except Exception:
                if creation.committed:
                    raise
                # Nothing of ours was committed. If a racing call recorded the key (its lease
                # expired, or ours did), the unique record refused our object: replay theirs.
                found = self._find_after_failure(session, creation)
                if found is None:
                    raise
                return found, True
            assert creation.object_id is not None
            return creation.object_id, False
        finally:
            self._release(rkey, leased_at)

    def _acquire(self, session: Session, creation: Creation, rkey: str) -> tuple[int | None, float]:
        """Take the lease: (None, when it was taken), or (the id a concurrent call recorded, 0)."""
        deadline = time.monotonic() + self.wait
        value = f"pending:{creation.fingerprint}"
        while True:
            attempt = time.monotonic()
            if self.redis.set(rkey, value, px=max(1, int(self.lease * 1000)), nx=True):
                return None, attempt
            found = self.find(session, creation)
            if found is not None:
                return found, 0.0
            held = self.redis.get(rkey)
            held = held.decode() if isinstance(held, bytes) else held
            if held is not None and held != value:
                raise Conflict(
                    "this idempotency_key is in use with different arguments; "
                    "use a new key for a new request"
                )
            if time.monotonic() >= deadline:
                raise Conflict(
                    f"a call with idempotency_key {creation.key!r} is still in progress; "
                    "retry shortly"
                )
            time.sleep(self.poll)

    def _find_after_failure(self, session: Session, creation: Creation) -> int | None:
        try:
            return self.find(session, creation)
        except Exception:
            log.warning("could not look up idempotency_key %r after a failure", creation.key)
            return None

    def _release(self, rkey: str, leased_at: float) -> None:
        if time.monotonic() - leased_at >= self.lease:
            return  # expired: the key may be another call's lease by now
        try:
            self.redis.delete(rkey)
        except Exception:
            # The outcome is already decided and recorded (or nothing was created); the lease
            # expires by itself, and retries read the record in PostgreSQL meanwhile.
            log.warning("could not release idempotency lease %s; it expires by itself", rkey)
