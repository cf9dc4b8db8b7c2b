"""Watching a create tool's Session: which row it made, and whether that row is committed.

Services commit inside themselves, so the tool layer cannot see the new id before the COMMIT
or wrap the COMMIT in its own transaction. Instead, while :meth:`Creation.watch` is active,
Session events note the id of the first new ``model`` row at flush, write the idempotency
record just before COMMIT (in the same transaction) and mark the creation committed after it.
A failure after that point is then reported as "created <id>, then failed", never as
"changed nothing".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

WATCH_KEY = "opsdesk.creation"
COMMITS_KEY = "opsdesk.commits"


@dataclass
class Creation:
    """One create call: what it makes, and what happened to it so far."""

    tool: str
    model: type[Any]
    key: str | None = None
    fingerprint: str = ""
    object_id: int | None = None
    committed: bool = False
    # Writes the idempotency record before COMMIT; set by the idempotency store.
    record: Callable[[Session, Creation], None] | None = None

    @contextmanager
    def watch(self, session: Session) -> Iterator[Creation]:
        """Track this creation through ``session``'s flushes and commits while the block runs."""
        outer = session.info.get(WATCH_KEY)
        session.info[WATCH_KEY] = self
        try:
            yield self
        finally:
            if outer is None:
                session.info.pop(WATCH_KEY, None)
            else:
                session.info[WATCH_KEY] = outer


def commits(session: Session) -> int:
    """Return how many times ``session`` has committed (see :func:`_count_commit`)."""
    return int(session.info.get(COMMITS_KEY, 0))


def _watched(session: Session) -> Creation | None:
    found = session.info.get(WATCH_KEY)
    return found if isinstance(found, Creation) else None


@event.listens_for(Session, "after_flush")
def _note_new_row(session: Session, flush_context: UOWTransaction) -> None:
    creation = _watched(session)
    if creation is None or creation.object_id is not None:
        return
    for obj in session.new:  # still the pre-flush state here, ids already assigned
        if isinstance(obj, creation.model):
            creation.object_id = int(obj.id)
            return


@event.listens_for(Session, "before_commit")
def _record_before_commit(session: Session) -> None:
    creation = _watched(session)
    if creation is None or creation.record is None or creation.committed:
        return
    if creation.object_id is not None:
        creation.record(session, creation)


@event.listens_for(Session, "after_commit")
def _count_commit(session: Session) -> None:
    session.info[COMMITS_KEY] = commits(session) + 1
    creation = _watched(session)
    if creation is not None and creation.object_id is not None:
        creation.committed = True


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back_row(session: Session, previous_transaction: SessionTransaction) -> None:
    creation = _watched(session)
    if creation is not None and not creation.committed:
        creation.object_id = None  # its INSERT was rolled back: that id names nothing
