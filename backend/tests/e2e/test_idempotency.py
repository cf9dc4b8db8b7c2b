"""Idempotency keys through MCP: every create tool replays, other arguments conflict, a race
on one key makes one object."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import ClientSession
from mcp_calls import call, call_error
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session

from opsdesk.app import App
from opsdesk.domains.crm.models import Company
from testbed.data.context import DataContext

if TYPE_CHECKING:
    from conftest import MCPClientFor

pytestmark = pytest.mark.anyio

Arguments = Callable[[DataContext, Session, Any], dict[str, Any]]


def _two_accounts(data: DataContext, session: Session, accounts: Any) -> list[dict[str, Any]]:
    cash, sales = accounts.create(type="asset"), accounts.create(type="income")
    return [
        {"account_id": cash.id, "amount": "12.50"},
        {"account_id": sales.id, "amount": "-12.50"},
    ]


# Each create tool: the table its object lands in, valid arguments, and a text argument to
# change for "the same key with other arguments".
CREATE_TOOLS: dict[str, tuple[str, Arguments, str]] = {
    "crm_create_company": ("crm_companies", lambda d, s, a: {"name": "Idem Co"}, "name"),
    "crm_create_contact": (
        "crm_contacts",
        lambda d, s, a: {"email": d.email(), "name": "Idem"},
        "name",
    ),
    "crm_create_deal": (
        "crm_deals",
        lambda d, s, a: {"title": "Idem deal", "amount": "10.00"},
        "title",
    ),
    "tasks_create_task": (
        "tasks",
        lambda d, s, a: {"title": "Idem task", "priority": "high"},
        "title",
    ),
    "tickets_create_ticket": (
        "tickets",
        lambda d, s, a: {"subject": "Idem", "requester_email": d.email(), "priority": "urgent"},
        "subject",
    ),
    "knowledge_create_doc": (
        "knowledge_docs",
        lambda d, s, a: {"title": "Idem doc", "body": "Retried safely.", "tags": ["idem"]},
        "body",
    ),
    "canvas_create": (
        "canvas_docs",
        lambda d, s, a: {"name": "Idem canvas", "data": {"a": 1}},
        "name",
    ),
    "finance_create_account": (
        "finance_accounts",
        lambda d, s, a: {"code": d.code("ID-", 8), "name": "Idem", "type": "asset"},
        "name",
    ),
    "finance_post_transaction": (
        "ledger_transactions",
        lambda d, s, a: {"memo": "Idem", "lines": _two_accounts(d, s, a)},
        "memo",
    ),
    "finance_create_invoice": (
        "invoices",
        lambda d, s, a: {
            "number": d.code("IDI-", 10),
            "customer_name": "Idem",
            "lines": [{"description": "x", "quantity": "2", "unit_price": "3.00"}],
        },
        "customer_name",
    ),
}


def _count(session: Session, table: str) -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.mark.parametrize("tool", sorted(CREATE_TOOLS))
async def test_every_create_tool_replays_its_object_for_the_same_key(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_data: DataContext,
    account_factory: Any,
    tool: str,
) -> None:
    table, arguments, varied = CREATE_TOOLS[tool]
    args = {**arguments(e2e_data, e2e_session, account_factory), "idempotency_key": f"k-{tool}"}
    before = _count(e2e_session, table)
    first = await call(mcp_service, tool, **args)
    again = await call(mcp_service, tool, **args)
    assert first["idempotent_replay"] is False
    assert again["idempotent_replay"] is True
    assert again["id"] == first["id"]
    assert _count(e2e_session, table) == before + 1
    # The same key with other arguments is refused, and creates nothing either.
    other = {**args, varied: f"{args[varied]} (changed)"}
    message = await call_error(mcp_service, tool, **other)
    assert "Conflict" in message
    assert "different arguments" in message
    assert _count(e2e_session, table) == before + 1


async def test_the_key_is_recorded_in_the_same_transaction_as_the_object(
    mcp_service: ClientSession, e2e_session: Session
) -> None:
    out = await call(mcp_service, "crm_create_company", name="Recorded", idempotency_key="rec-1")
    row = e2e_session.execute(
        text("SELECT tool, object_id FROM idempotency_keys WHERE key = 'rec-1'")
    ).one()
    assert tuple(row) == ("crm_create_company", out["id"])


async def test_same_key_on_another_tool_is_independent(mcp_service: ClientSession) -> None:
    company = await call(mcp_service, "crm_create_company", name="A", idempotency_key="shared")
    task = await call(mcp_service, "tasks_create_task", title="A", idempotency_key="shared")
    assert company["idempotent_replay"] is task["idempotent_replay"] is False


BLOCKED_WITHIN = 30.0  # seconds: how long the first COMMIT waits for the race to happen


@pytest.fixture
def first_commit_waits_for_the_race(e2e_engine: Engine) -> Iterator[threading.Event]:
    """Hold the first COMMIT of any Session (its key's record is written by then) until another
    backend waits on that transaction's locks, as PostgreSQL shows it (pg_blocking_pids): the
    second call's record is then queued behind the first's. Set when the first COMMIT is held.
    """
    held = threading.Event()
    lock = threading.Lock()

    def hold(session: Session) -> None:
        with lock:
            if held.is_set():
                return
            held.set()
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        blocked = text(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid)))"
        )
        deadline = time.monotonic() + BLOCKED_WITHIN
        with e2e_engine.connect() as watcher:
            # The condition is PostgreSQL's lock table; polled, since no one can notify it.
            while not watcher.execute(blocked, {"pid": pid}).scalar_one():
                watcher.rollback()  # a fresh snapshot of the activity view for every look
                if time.monotonic() > deadline:
                    return  # no race: the test's last assertion says so
                threading.Event().wait(0.005)

    event.listen(Session, "before_commit", hold)
    try:
        yield held
    finally:
        event.remove(Session, "before_commit", hold)


@pytest.mark.committed
async def test_a_race_past_an_expired_lease_still_makes_one_object(
    e2e_engine: Engine,
    e2e_committed_db: Session,
    e2e_redis: Any,
    e2e_redis_prefix: str,
    mcp_client_for: MCPClientFor,
    first_commit_waits_for_the_race: threading.Event,
) -> None:
    # A lease shorter than the first call: the second call starts while the first is held in
    # its COMMIT, waits out the lease and takes the key, and the first COMMIT goes on only
    # once the second call's record waits on it. The record's primary key must refuse the
    # second object.
    held = first_commit_waits_for_the_race
    app = App.for_engine(e2e_engine, redis=e2e_redis, prefix=e2e_redis_prefix, lease=0.1)
    args = {"name": "Raced Co", "idempotency_key": "race-1"}
    results: list[dict[str, Any]] = []
    async with mcp_client_for(app) as client:

        async def create() -> None:
            results.append(await call(client, "crm_create_company", **args))

        async def create_once_the_first_is_held() -> None:
            assert await anyio.to_thread.run_sync(held.wait, BLOCKED_WITHIN)
            await create()

        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            tg.start_soon(create_once_the_first_is_held)
    assert {r["id"] for r in results} == {results[0]["id"]}
    assert sorted(r["idempotent_replay"] for r in results) == [False, True]
    count = e2e_committed_db.scalar(
        select(func.count()).select_from(Company).where(Company.name == "Raced Co")
    )
    assert count == 1
    # The race did happen: the second call inserted a company of its own, which the key's
    # record then refused (its id was drawn from the sequence and rolled back).
    drawn = e2e_committed_db.scalar(text("SELECT last_value FROM crm_companies_id_seq"))
    assert drawn == results[0]["id"] + 1
