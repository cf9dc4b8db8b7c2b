"""Events leave only after commit and never after rollback (SQLite stands in for the database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from opsdesk import events
from opsdesk.events import EventBus


class FakeRedis:
    """Records publish() calls."""

    def __init__(self, *, fail: bool = False) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def publish(self, channel: str, message: str) -> int:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.append((channel, json.loads(message)))
        return 1


@pytest.fixture
def session() -> Iterator[Session]:
    """A Session on in-memory SQLite (the commit hooks are database-agnostic)."""
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        yield session
    engine.dispose()  # its pooled connection closed now, not by the GC (ResourceWarning on 3.13)


def test_event_is_published_after_commit_on_prefixed_channel(session: Session) -> None:
    redis = FakeRedis()
    EventBus(redis, prefix="gw3:").bind(session)
    session.execute(text("SELECT 1"))
    events.record(session, "crm", "contact.created", 7, email="a@b.co")
    assert redis.published == []  # not before commit
    session.commit()
    [(channel, evt)] = redis.published
    assert channel == "gw3:opsdesk.crm"
    assert evt["type"] == "crm.contact.created"
    assert evt["domain"] == "crm"
    assert evt["id"] == 7
    assert evt["data"] == {"email": "a@b.co"}
    assert "occurred_at" in evt


def test_rollback_publishes_nothing(session: Session) -> None:
    redis = FakeRedis()
    EventBus(redis).bind(session)
    session.execute(text("SELECT 1"))
    events.record(session, "tasks", "task.created", 1)
    session.rollback()
    session.commit()
    assert redis.published == []
    assert events.pending(session) == []


def test_bus_bound_to_sessionmaker_reaches_every_session() -> None:
    redis = FakeRedis()
    engine = create_engine("sqlite://")
    factory = sessionmaker(engine)
    EventBus(redis, prefix="p:").bind(factory)
    with factory() as s:
        s.execute(text("SELECT 1"))
        events.record(s, "finance", "account.created", 1)
        s.commit()
    engine.dispose()
    assert [c for c, _ in redis.published] == ["p:opsdesk.finance"]


def test_decimal_and_datetime_are_encoded_exactly(session: Session) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    redis = FakeRedis()
    EventBus(redis).bind(session)
    session.execute(text("SELECT 1"))
    when = datetime(2030, 1, 1, tzinfo=UTC)
    events.record(session, "finance", "invoice.created", 1, total=Decimal("0.10"), at=when)
    session.commit()
    assert redis.published[0][1]["data"] == {"total": "0.10", "at": "2030-01-01T00:00:00+00:00"}


def test_broker_failure_does_not_break_the_commit(session: Session) -> None:
    EventBus(FakeRedis(fail=True)).bind(session)
    session.execute(text("SELECT 1"))
    events.record(session, "canvas", "canvas.saved", 1)
    session.commit()  # logged, not raised: the data is already committed


def test_unknown_domain_is_a_programming_error(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown domain"):
        events.record(session, "hr", "x", 1)


def test_channels_cover_every_domain() -> None:
    assert EventBus(None, prefix="x:").channels() == [
        "x:opsdesk.crm", "x:opsdesk.tasks", "x:opsdesk.tickets",
        "x:opsdesk.knowledge", "x:opsdesk.canvas", "x:opsdesk.finance",
    ]  # fmt: skip
