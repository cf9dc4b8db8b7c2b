"""Listening for the app's events without a server: a fake broker delivers in publish order, as
Valkey does, and a fake clock moves only while a read waits, so every bound is exact."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testbed.isolation import pubsub
from testbed.isolation.pubsub import SENTINEL, EventListener, Subscription


class Clock:
    """pubsub's `time`: monotonic() moves only when a read waits for nothing."""

    def __init__(self) -> None:
        self.now = 500.0

    def monotonic(self) -> float:
        return self.now


class PubSub:
    """redis-py's PubSub as pubsub.py uses it, fed by a Broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.queue: list[dict[str, Any]] = []
        self.channels: list[str] = []
        self.closed = False

    def subscribe(self, *channels: str) -> None:
        for channel in channels:
            self.channels.append(channel)
            if channel not in self.broker.unconfirmed:
                self.queue.append({"type": "subscribe", "channel": channel, "data": 1})

    def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float = 0.0
    ) -> dict[str, Any] | None:
        assert not self.closed
        if not self.queue:
            self.broker.clock.now += timeout  # waited the whole timeout for nothing
            return None
        msg = self.queue.pop(0)
        if ignore_subscribe_messages and msg["type"] in ("subscribe", "unsubscribe"):
            return None  # as redis-py: consumed, not returned
        return msg

    def close(self) -> None:
        self.closed = True


class Broker:
    """redis.Redis as pubsub.py uses it: publish() reaches every open subscription."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.subs: list[PubSub] = []
        self.unconfirmed: set[str] = set()  # channels whose subscription is never confirmed
        self.lost: set[str] = set()  # channels whose publishes never arrive

    def pubsub(self) -> PubSub:
        self.subs.append(PubSub(self))
        return self.subs[-1]

    def publish(self, channel: str, data: str) -> int:
        readers = [s for s in self.subs if channel in s.channels and not s.closed]
        if channel not in self.lost:
            for sub in readers:
                sub.queue.append({"type": "message", "channel": channel, "data": data})
        return len(readers)

    def event(self, channel: str, **event: Any) -> None:
        self.publish(channel, json.dumps(event))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(pubsub, "time", fake)
    return fake


@pytest.fixture
def broker(clock: Clock) -> Broker:
    return Broker(clock)


@pytest.fixture
def listener(broker: Broker) -> EventListener:
    return EventListener(broker, lambda name: f"e2e:run:gw0:{name}")  # type: ignore[arg-type]


# -- subscribe ----------------------------------------------------------------------------------
def test_subscribe_names_the_workers_channels_and_closes_after(
    listener: EventListener, broker: Broker
) -> None:
    with listener.subscribe("crm", "tasks") as sub:
        assert sub.channels == ["e2e:run:gw0:crm", "e2e:run:gw0:tasks"]
        (ps,) = broker.subs
        assert ps.channels == sub.channels
        assert ps.queue == []  # both confirmations read before the action under test
        assert not ps.closed
    assert ps.closed


def test_subscribe_closes_when_the_test_fails_inside(
    listener: EventListener, broker: Broker
) -> None:
    with pytest.raises(KeyError), listener.subscribe("crm"):
        raise KeyError("the test's own failure")
    assert broker.subs[0].closed


@pytest.mark.parametrize("unconfirmed", [{"crm"}, {"tasks"}, {"crm", "tasks"}])
def test_an_unconfirmed_subscription_fails_in_bounded_time(
    listener: EventListener, broker: Broker, clock: Clock, unconfirmed: set[str]
) -> None:
    broker.unconfirmed = {f"e2e:run:gw0:{name}" for name in unconfirmed}
    began = clock.now
    with pytest.raises(AssertionError) as failed, listener.subscribe("crm", "tasks"):
        pytest.fail("entered without a confirmed subscription")
    assert "could not subscribe to e2e:run:gw0:crm, e2e:run:gw0:tasks" in str(failed.value)
    assert 5 <= clock.now - began <= 6  # 5 s, read in waits of at most 1 s
    assert broker.subs[0].closed


# -- next ---------------------------------------------------------------------------------------
def test_next_returns_the_next_event_with_its_channel(
    listener: EventListener, broker: Broker
) -> None:
    with listener.subscribe("crm", "tasks") as sub:
        broker.event("e2e:run:gw0:tasks", type="task.created", data={"id": 7})
        broker.event("e2e:run:gw0:crm", type="lead.won")
        assert sub.next() == {
            "type": "task.created",
            "data": {"id": 7},
            "_channel": "e2e:run:gw0:tasks",
        }
        assert sub.next()["type"] == "lead.won"


def test_next_skips_what_is_not_a_message(listener: EventListener, broker: Broker) -> None:
    with listener.subscribe("crm") as sub:
        ps = broker.subs[0]
        ps.queue.append({"type": "subscribe", "channel": "e2e:run:gw0:crm", "data": 2})
        ps.queue.append({"type": "pong", "channel": None, "data": "x"})
        broker.event("e2e:run:gw0:crm", type="lead.won")
        assert sub.next()["type"] == "lead.won"


def test_next_fails_after_its_timeout_naming_the_channels(
    listener: EventListener, clock: Clock
) -> None:
    with listener.subscribe("crm", "tasks") as sub:
        began = clock.now
        with pytest.raises(AssertionError) as failed:
            sub.next(timeout=0.5)
    assert str(failed.value) == "no event on e2e:run:gw0:crm, e2e:run:gw0:tasks within 0.5s"
    assert clock.now - began == pytest.approx(0.5)


def test_next_never_returns_another_drains_marker(listener: EventListener, broker: Broker) -> None:
    with listener.subscribe("crm") as outer, listener.subscribe("crm") as inner:
        assert inner.drain() == []  # its markers reach the outer subscription too
        broker.event("e2e:run:gw0:crm", type="lead.won")
        assert outer.next()["type"] == "lead.won"


# -- drain --------------------------------------------------------------------------------------
def test_drain_returns_every_event_published_before_it_in_order(
    listener: EventListener, broker: Broker, clock: Clock
) -> None:
    with listener.subscribe("crm", "tasks") as sub:
        for i in range(3):
            broker.event("e2e:run:gw0:crm", type="lead.created", n=i)
            broker.event("e2e:run:gw0:tasks", type="task.created", n=i)
        began = clock.now
        events = sub.drain()
        assert clock.now == began  # no fixed wait: the markers came back at once
        assert [(e["_channel"].rsplit(":", 1)[1], e["n"]) for e in events] == [
            ("crm", 0),
            ("tasks", 0),
            ("crm", 1),
            ("tasks", 1),
            ("crm", 2),
            ("tasks", 2),
        ]
        assert all(e["type"] != SENTINEL for e in events)
        assert sub.drain() == []  # [] proves nothing more was published
        assert broker.subs[0].queue == []  # every marker read back


def test_drain_ignores_the_markers_of_another_subscription_on_the_same_channel(
    listener: EventListener, broker: Broker
) -> None:
    with listener.subscribe("crm") as outer:
        broker.event("e2e:run:gw0:crm", type="before")
        with listener.subscribe("crm") as inner:
            broker.event("e2e:run:gw0:crm", type="inside")
            assert [e["type"] for e in inner.drain()] == ["inside"]
        assert [e["type"] for e in outer.drain()] == ["before", "inside"]


def test_drain_waits_for_its_own_marker_not_an_older_one(
    listener: EventListener, broker: Broker
) -> None:
    with listener.subscribe("crm") as sub:
        stale = json.dumps({"type": SENTINEL, "token": "an-earlier-drain"})
        broker.publish("e2e:run:gw0:crm", stale)
        broker.event("e2e:run:gw0:crm", type="lead.won")
        assert [e["type"] for e in sub.drain()] == ["lead.won"]


def test_drain_fails_in_bounded_time_naming_the_channels_still_missing(
    listener: EventListener, broker: Broker, clock: Clock
) -> None:
    with listener.subscribe("tasks", "crm", "mail") as sub:
        broker.lost = {"e2e:run:gw0:tasks", "e2e:run:gw0:crm"}  # e.g. the subscription dropped
        began = clock.now
        with pytest.raises(AssertionError) as failed:
            sub.drain(timeout=2.0)
    message = str(failed.value)
    assert "sentinel not back on e2e:run:gw0:crm, e2e:run:gw0:tasks within 2s" in message
    assert "mail" not in message
    assert "subscription still open" in message
    assert clock.now - began == pytest.approx(2.0)


def test_a_subscription_reads_only_its_own_pubsub(broker: Broker, clock: Clock) -> None:
    ps = broker.pubsub()
    ps.subscribe("a")
    ps.queue.clear()
    sub = Subscription(ps, ["a"], broker)  # type: ignore[arg-type]
    other = broker.pubsub()
    other.subscribe("b")
    broker.event("b", type="elsewhere")
    assert sub.drain() == []


# -- payloads that are not an event ------------------------------------------------------------
NOT_AN_OBJECT = ["[1, 2]", '"x"', "3", "null", "not json", ""]


@pytest.mark.parametrize("payload", NOT_AN_OBJECT)
def test_next_refuses_a_payload_that_is_not_a_json_object_naming_the_channel(
    listener: EventListener, broker: Broker, payload: str
) -> None:
    with listener.subscribe("crm", "tasks") as sub:
        broker.publish("e2e:run:gw0:tasks", payload)
        with pytest.raises(AssertionError) as failed:
            sub.next()
    assert str(failed.value) == (
        f"the message on e2e:run:gw0:tasks is not a JSON object: {payload!r}; "
        "e2e_events reads each message as an event: publish a JSON object "
        '(e.g. {"type": "order.created", ...}) on the channels a test subscribes to'
    )


@pytest.mark.parametrize("payload", NOT_AN_OBJECT)
def test_drain_refuses_a_payload_that_is_not_a_json_object_naming_the_channel(
    listener: EventListener, broker: Broker, payload: str
) -> None:
    with listener.subscribe("crm") as sub:
        broker.event("e2e:run:gw0:crm", type="lead.won")
        broker.publish("e2e:run:gw0:crm", payload)
        with pytest.raises(AssertionError, match=r"^the message on e2e:run:gw0:crm is not a JSON"):
            sub.drain()
        # The next drain reads past the refused drain's marker and finds nothing more.
        assert sub.drain() == []


def test_a_long_payload_is_shown_cut_short(listener: EventListener, broker: Broker) -> None:
    with listener.subscribe("crm") as sub:
        broker.publish("e2e:run:gw0:crm", json.dumps(list(range(100))))
        with pytest.raises(AssertionError) as failed:
            sub.next()
    assert "is not a JSON object: '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14" in str(
        failed.value
    )
    assert "99" not in str(failed.value)
    assert "…" in str(failed.value)
