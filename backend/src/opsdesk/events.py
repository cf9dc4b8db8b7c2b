"""Domain events: queued on the Session, published to Valkey pub/sub only after it commits.

Services call :func:`record`; the event waits in ``session.info`` until the Session commits,
then goes out on channel ``<prefix>opsdesk.<domain>`` through the :class:`EventBus` bound to
that Session (or its sessionmaker). A rollback drops the queue, so nothing is published for a
change that did not happen. Payload (JSON)::

    {"type": "crm.contact.created", "domain": "crm", "id": 1, "data": {...},
     "occurred_at": "2025-01-01T00:00:00+00:00"}
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from opsdesk.db import utcnow

log = logging.getLogger(__name__)

PENDING_KEY = "opsdesk.events.pending"
BUS_KEY = "opsdesk.events.bus"
DOMAINS = ("crm", "tasks", "tickets", "knowledge", "canvas", "finance")


class Publisher(Protocol):
    """What the bus needs from a Redis client (redis.Redis fits)."""

    def publish(self, channel: str, message: str) -> Any:
        """Publish ``message`` on ``channel``."""
        ...


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)  # exact: money never goes through float
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} in an event")


def make_event(domain: str, type_: str, id_: int | str, data: dict[str, Any]) -> dict[str, Any]:
    """Return an event dict; ``type_`` is the part after the domain, e.g. "contact.created"."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return {
        "type": f"{domain}.{type_}",
        "domain": domain,
        "id": id_,
        "data": data,
        "occurred_at": utcnow().isoformat(),
    }


def encode(evt: dict[str, Any]) -> str:
    """Serialize an event to JSON (Decimal as string, datetimes as ISO 8601)."""
    return json.dumps(evt, default=_json_default, sort_keys=True)


def record(session: Session, domain: str, type_: str, id_: int | str, **data: Any) -> None:
    """Queue an event on ``session``; it is published only if the Session commits."""
    session.info.setdefault(PENDING_KEY, []).append(make_event(domain, type_, id_, data))


def pending(session: Session) -> list[dict[str, Any]]:
    """Return the events queued on ``session`` and not yet published (a copy)."""
    return list(session.info.get(PENDING_KEY, []))


class EventBus:
    """Publishes domain events on ``<prefix>opsdesk.<domain>`` channels."""

    def __init__(self, redis: Publisher | None, *, prefix: str = "") -> None:
        """Wrap a Redis client (None: events are dropped, e.g. in unit tests)."""
        self.redis = redis
        self.prefix = prefix

    def channel(self, domain: str) -> str:
        """Return the pub/sub channel name for ``domain``."""
        return f"{self.prefix}opsdesk.{domain}"

    def channels(self) -> list[str]:
        """Return the channel names of every domain."""
        return [self.channel(d) for d in DOMAINS]

    def bind(self, target: Session | sessionmaker[Session]) -> None:
        """Publish events of ``target`` (a Session, or every Session a sessionmaker makes)."""
        if isinstance(target, Session):
            target.info[BUS_KEY] = self
        else:
            info = dict(target.kw.get("info") or {})
            info[BUS_KEY] = self
            target.kw["info"] = info

    def publish(self, evt: dict[str, Any]) -> None:
        """Publish one event now (callers normally let the commit hook do this)."""
        if self.redis is not None:
            self.redis.publish(self.channel(evt["domain"]), encode(evt))


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    events = session.info.pop(PENDING_KEY, [])
    bus = session.info.get(BUS_KEY)
    if not isinstance(bus, EventBus):
        return
    for evt in events:
        try:
            bus.publish(evt)
        except Exception:
            # The commit already happened; a broken broker must not turn it into an error.
            log.exception("could not publish %s event %s", evt["type"], evt["id"])


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    # Fires for every rollback() call, including a savepoint-joined test Session's.
    session.info.pop(PENDING_KEY, None)
