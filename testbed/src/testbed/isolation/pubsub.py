"""Listen for the app's events on the worker's prefixed pub/sub channels."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

# Type of the marker drain() publishes; no app event carries it.
SENTINEL = "testbed.sentinel"


def _event(msg: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a message carries; AssertionError naming its channel for any other
    payload (an array, a string, a number, null, or not JSON at all): no event of the app's."""
    data = msg["data"]
    try:
        event = json.loads(data)
    except ValueError:  # not JSON (or not UTF-8)
        event = None
    if isinstance(event, dict):
        return event
    shown = repr(data)
    if len(shown) > 60:
        shown = shown[:59] + "…"
    raise AssertionError(
        f"the message on {msg['channel']} is not a JSON object: {shown}; e2e_events reads each "
        'message as an event: publish a JSON object (e.g. {"type": "order.created", ...}) on '
        "the channels a test subscribes to"
    )


class Subscription:
    """Messages of the subscribed channels, each a JSON object (the event). A message that is
    anything else (a JSON array, string, number or null, or no JSON) fails next() or drain()
    with an AssertionError naming its channel."""

    def __init__(
        self, pubsub: redis.client.PubSub, channels: list[str], client: redis.Redis[str]
    ) -> None:
        self._pubsub = pubsub
        self.channels = channels
        self._client = client

    def next(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next event; AssertionError naming the channels if none arrives in time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is not None and msg["type"] == "message":
                event = _event(msg)
                if event.get("type") == SENTINEL:
                    continue  # another subscription's drain() on the same channel
                event["_channel"] = msg["channel"]
                return event
        raise AssertionError(f"no event on {', '.join(self.channels)} within {timeout:g}s")

    def drain(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every event published before this call, in order; [] proves nothing was published.

        No fixed wait: a sentinel goes out on each subscribed channel and messages are read
        until every sentinel is back. Valkey runs commands one at a time and delivers them to
        a subscriber in that order, so an event whose PUBLISH finished before this call (e.g. an
        app publishing synchronously after commit) arrives before the sentinels. `timeout` only
        bounds the wait for the sentinels (AssertionError if they do not come back).
        """
        token = uuid.uuid4().hex
        marker = json.dumps({"type": SENTINEL, "token": token})
        for channel in self.channels:
            self._client.publish(channel, marker)
        events: list[dict[str, Any]] = []
        missing = set(self.channels)
        deadline = time.monotonic() + timeout
        while missing:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"drain: sentinel not back on {', '.join(sorted(missing))} within "
                    f"{timeout:g}s; is the subscription still open?"
                )
            msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is None or msg["type"] != "message":
                continue
            event = _event(msg)
            if event.get("type") == SENTINEL:
                # Ours comes back once per channel; another drain's (a subscription to the same
                # channel, an earlier drain) is no event either.
                if event.get("token") == token:
                    missing.discard(msg["channel"])
                continue
            event["_channel"] = msg["channel"]
            events.append(event)
        return events


class EventListener:
    """Subscribes to the worker's channels (named by the app's channel format) before the
    action under test."""

    def __init__(self, client: redis.Redis[str], channel: Callable[[str], str]) -> None:
        self.client = client
        self.channel = channel  # name -> the worker's channel, e.g. "crm" -> "e2e:…:gw0:crm"

    @contextmanager
    def subscribe(self, *names: str) -> Iterator[Subscription]:
        """Subscribe (and wait for the server's confirmation) to the named channels."""
        channels = [self.channel(name) for name in names]
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(*channels)
            # Only a confirmed subscription is guaranteed to see the next publish.
            confirmed = 0
            deadline = time.monotonic() + 5
            while confirmed < len(channels) and time.monotonic() < deadline:
                msg = pubsub.get_message(timeout=1.0)
                if msg is not None and msg["type"] == "subscribe":
                    confirmed += 1
            if confirmed < len(channels):
                raise AssertionError(f"could not subscribe to {', '.join(channels)}")
            yield Subscription(pubsub, channels, self.client)
        finally:
            pubsub.close()
