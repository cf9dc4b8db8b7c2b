"""Failures after a create's COMMIT, injected inside opsdesk against real PostgreSQL and Valkey:
the object is reported (with its id), and a retry with the same key returns it."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from mcp import ClientSession
from mcp_calls import call, call_error
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from opsdesk.app import App
from opsdesk.domains.crm.models import Contact, Deal
from testbed.data.context import DataContext


def _closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BreakableValkey:
    """A real Valkey client for opsdesk whose server can be made unreachable and back."""

    def __init__(self, like: redis.Redis[str]) -> None:
        """Connect like ``like`` (same server, database and timeouts)."""
        self.pool = redis.ConnectionPool(**like.connection_pool.connection_kwargs)
        self.client: redis.Redis[str] = redis.Redis(connection_pool=self.pool)
        self.port = self.pool.connection_kwargs["port"]

    def _point_at(self, port: int) -> None:
        self.pool.connection_kwargs["port"] = port
        self.pool.reset()  # drop open connections; new ones dial the new port

    def cut(self) -> None:
        """From now on every command fails: the connection is refused."""
        self._point_at(_closed_port())

    def restore(self) -> None:
        """Reach the real server again."""
        self._point_at(self.port)

    def cut_after_next_commit(self, session: Session) -> None:
        """Cut the connection right after ``session``'s next COMMIT."""
        event.listen(session, "after_commit", lambda s: self.cut(), once=True)


@pytest.fixture
def valkey(e2e_redis: redis.Redis[str]) -> Iterator[BreakableValkey]:
    """opsdesk's Valkey connection, breakable on demand (restored after the test)."""
    breakable = BreakableValkey(e2e_redis)
    yield breakable
    breakable.restore()
    breakable.client.close()


@pytest.fixture
def opsdesk_app(e2e_session: Session, valkey: BreakableValkey, e2e_redis_prefix: str) -> App:
    """The App mcp_service serves, on the breakable Valkey connection."""
    return App.for_session(e2e_session, redis=valkey.client, prefix=e2e_redis_prefix)


def fail_after_next_commit(session: Session) -> None:
    """Make ``session``'s next COMMIT raise once it has happened (a crash right after it)."""

    def explode(committed: Session) -> None:
        raise RuntimeError("injected failure after COMMIT")

    event.listen(session, "after_commit", explode, once=True)


def contacts_with(session: Session, email: str) -> list[int]:
    """Ids of the contacts with ``email``."""
    return list(session.scalars(select(Contact.id).where(Contact.email == email)))


async def test_valkey_failing_after_the_commit_loses_neither_the_object_nor_the_key(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_data: DataContext,
    valkey: BreakableValkey,
    e2e_redis: redis.Redis[str],
    e2e_redis_prefix: str,
) -> None:
    args = {"email": e2e_data.email(), "name": "After Commit", "idempotency_key": "vk-1"}
    valkey.cut_after_next_commit(e2e_session)
    first = await call(mcp_service, "crm_create_contact", **args)
    assert contacts_with(e2e_session, args["email"]) == [first["id"]]
    # Valkey still unreachable: the retry is answered from PostgreSQL.
    again = await call(mcp_service, "crm_create_contact", **args)
    assert (again["id"], again["idempotent_replay"]) == (first["id"], True)
    valkey.restore()
    # The lease the first call could not release lasts seconds (not the day a key is kept for),
    # and does not block the retry.
    left = e2e_redis.pttl(f"{e2e_redis_prefix}idem:crm_create_contact:vk-1")
    assert 0 < left <= 60_000
    third = await call(mcp_service, "crm_create_contact", **args)
    assert (third["id"], third["idempotent_replay"]) == (first["id"], True)
    assert contacts_with(e2e_session, args["email"]) == [first["id"]]


async def test_valkey_failing_before_the_commit_changes_nothing(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_data: DataContext,
    valkey: BreakableValkey,
) -> None:
    args = {"email": e2e_data.email(), "name": "Before Commit", "idempotency_key": "vk-2"}
    valkey.cut()
    message = await call_error(mcp_service, "crm_create_contact", **args)
    assert "changed nothing" in message
    assert contacts_with(e2e_session, args["email"]) == []
    valkey.restore()
    created = await call(mcp_service, "crm_create_contact", **args)
    assert created["idempotent_replay"] is False
    assert contacts_with(e2e_session, args["email"]) == [created["id"]]


@pytest.mark.parametrize("key", ["crash-1", None])
async def test_an_error_after_the_commit_names_the_created_object(
    mcp_service: ClientSession, e2e_session: Session, e2e_data: DataContext, key: str | None
) -> None:
    args: dict[str, Any] = {"email": e2e_data.email(), "name": "Crash After Commit"}
    if key is not None:
        args["idempotency_key"] = key
    fail_after_next_commit(e2e_session)
    message = await call_error(mcp_service, "crm_create_contact", **args)
    (created,) = contacts_with(e2e_session, args["email"])
    assert "changed nothing" not in message
    assert re.search(rf"created Contact id {created}\b", message), message
    if key is not None:
        again = await call(mcp_service, "crm_create_contact", **args)
        assert (again["id"], again["idempotent_replay"]) == (created, True)
    else:
        got = await call(mcp_service, "crm_get_contact", contact_id=created)
        assert got["email"] == args["email"]
    assert contacts_with(e2e_session, args["email"]) == [created]


async def test_an_error_after_any_other_commit_says_the_change_is_saved(
    mcp_service: ClientSession, e2e_session: Session, deal_factory: Any
) -> None:
    deal = deal_factory.create()
    fail_after_next_commit(e2e_session)
    message = await call_error(mcp_service, "crm_move_deal", deal_id=deal.id, stage="qualified")
    assert "changed nothing" not in message
    assert "committed its change" in message
    stage = e2e_session.scalar(select(Deal.stage).where(Deal.id == deal.id))
    assert stage == "qualified"
    assert e2e_session.scalar(select(func.count()).select_from(Deal)) == 1
