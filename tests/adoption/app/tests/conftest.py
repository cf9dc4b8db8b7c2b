"""The ledger suite's fixtures: offline tests, its own db_session, factories bound to it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import factories
import pytest
from ledger.service import Ledger
from sqlalchemy.orm import Session

# The service's settings, read when the suite is imported, as its own modules do.
DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]


class UnmockedError(Exception):
    """A test tried the network (httpretty raises its own UnmockedError, not an OSError)."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs offline, as with httpretty.enable(allow_net_connect=False)."""
    # Tests may reach the service's Redis and nothing else (PostgreSQL goes through libpq's
    # own sockets, which no Python-level mock sees).
    redis = urlsplit(REDIS_URL)
    allowed = {(redis.hostname, redis.port)}
    real_connect, real_create_connection = socket.socket.connect, socket.create_connection

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != socket.AF_UNIX and tuple(address)[:2] not in allowed:
            raise UnmockedError(f"test tried to reach {address}")
        real_connect(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if tuple(address)[:2] not in allowed:
            raise UnmockedError(f"test tried to reach {address}")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def db_session(e2e_session: Session) -> Iterator[Session]:
    """The suite's own session fixture, now on testbed's: what it did (binding the factories)
    it still does."""
    factories.bind(e2e_session)
    yield e2e_session
    factories.bind(None)


@pytest.fixture
def ledger(e2e_database: object, e2e_redis: object) -> Iterator[Ledger]:
    """The service as it runs: its own engine and Redis client, from DATABASE_URL/REDIS_URL."""
    service = Ledger(DATABASE_URL)
    yield service
    service.close()
