"""Listen for opsdesk domain events on the worker's prefixed channels."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis


class Subscription:
    """Messages of the subscribed channels, decoded from JSON."""

    def __init__(self, pubsub: redis.client.PubSub, channels: list[str]) -> None:
        self._pubsub = pubsub
        self.channels = channels

    def next(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next event; AssertionError naming the channels if none arrives in time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is not None and msg["type"] == "message":
                event: dict[str, Any] = json.loads(msg["data"])
                event["_channel"] = msg["channel"]
                return event
        raise AssertionError(f"no event on {', '.join(self.channels)} within {timeout:g}s")

    def drain(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        """Every event that arrives until `timeout` passes without one."""
        events: list[dict[str, Any]] = []
        while True:
            try:
                events.append(self.next(timeout))
            except AssertionError:
                return events


class EventListener:
    """Subscribes to `<prefix>opsdesk.<domain>` channels before the action under test."""

    def __init__(self, client: redis.Redis[str], prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def channel(self, domain: str) -> str:
        """The worker's channel for a domain (what opsdesk's EventBus publishes on)."""
        return f"{self.prefix}opsdesk.{domain}"

    @contextmanager
    def subscribe(self, *domains: str) -> Iterator[Subscription]:
        """Subscribe (and wait for the server's confirmation) to the domains' channels."""
        channels = [self.channel(d) for d in domains]
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
            yield Subscription(pubsub, channels)
        finally:
            pubsub.close()
