"""A suite hostile to its harness (copied to <tmp>/e2e/test_hostile.py): an autouse fixture
makes `socket` raise what no socket would, as httpretty's `allow_net_connect=False` does. The
tests reach PostgreSQL through psycopg (libpq's own sockets), so only testbed's Python socket
calls would meet the patch; $REL_PROGRESS records each test, $REL_SLEEP paces them.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session


class UnmockedError(Exception):
    """Not an OSError: what a socket-mocking library raises for a real connection."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise UnmockedError("a real connection in a test (the suite mocks the network)")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with the network mocked away (monkeypatch undoes it afterwards)."""
    for name in ("socket", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, _refuse)


@pytest.mark.parametrize("n", range(int(os.environ.get("REL_TESTS", "12"))))
def test_hostile(n: int, e2e_postgres_db: Session) -> None:
    assert e2e_postgres_db.execute(text("SELECT count(*) FROM crm_contacts")).scalar_one() == 0
    progress = os.environ.get("REL_PROGRESS")
    if progress:
        Path(progress, f"{os.getpid()}-{n}").touch()
    time.sleep(float(os.environ.get("REL_SLEEP", "0.3")))
