"""The MCP surface as a whole: every tool has an E2E test; events follow real commits."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import ClientSession
from mcp_calls import call
from sqlalchemy import Engine, text

from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener

HERE = Path(__file__).parent


async def test_every_tool_is_exercised_by_some_e2e_test(mcp_service: ClientSession) -> None:
    tools = {tool.name for tool in (await mcp_service.list_tools()).tools}
    sources = "".join(
        path.read_text() for path in HERE.glob("test_*.py") if path.name != Path(__file__).name
    )
    untested = sorted(name for name in tools if f'"{name}"' not in sources)
    assert not untested, f"MCP tools without an E2E test: {', '.join(untested)}"


@pytest.mark.committed
async def test_event_arrives_after_a_real_commit(
    mcp_service: ClientSession,
    e2e_events: EventListener,
    e2e_engine: Engine,
    e2e_data: DataContext,
) -> None:
    # A subscriber that reacts to the event with its own connection must find the row.
    email = e2e_data.email()
    with e2e_events.subscribe("crm") as sub:
        await call(mcp_service, "crm_create_contact", email=email, name="Committed Reader")
        event = sub.next()
    with e2e_engine.connect() as other:
        found = other.execute(
            text("SELECT email FROM crm_contacts WHERE id = :id"), {"id": event["id"]}
        ).scalar_one()
    assert found == email


@pytest.mark.committed
async def test_failed_call_publishes_nothing_and_commits_nothing(
    mcp_service: ClientSession, e2e_events: EventListener, e2e_engine: Engine
) -> None:
    with e2e_events.subscribe("crm") as sub:
        result = await mcp_service.call_tool("crm_move_deal", {"deal_id": 1, "stage": "won"})
        assert result.is_error
        assert sub.drain() == []
    with e2e_engine.connect() as other:
        assert other.execute(text("SELECT count(*) FROM crm_deals")).scalar_one() == 0
