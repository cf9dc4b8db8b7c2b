"""A real MCP client over stdio: `python -m opsdesk.mcp_server` in the worker's schema."""

from __future__ import annotations

import os
import sys

import pytest
from mcp import Client, StdioServerParameters
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsdesk.domains.crm.models import Contact
from opsdesk.domains.tasks.models import Task
from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener
from testbed.isolation.workers import Worker
from testbed.services import Endpoints

pytestmark = pytest.mark.anyio


@pytest.mark.heavy
@pytest.mark.committed
async def test_stdio_server_one_tool_per_domain(
    e2e_docker_compose: Endpoints,
    e2e_worker: Worker,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": e2e_docker_compose.database_url,
        "REDIS_URL": e2e_docker_compose.redis_url,
        "OPSDESK_SCHEMA": e2e_worker.schema,
        "OPSDESK_EVENT_PREFIX": e2e_worker.prefix,
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "opsdesk.mcp_server"], env=env
    )
    calls = [
        ("crm_create_contact", {"email": e2e_data.email(), "name": "Stdio User"}),
        ("tasks_create_task", {"title": "Over stdio"}),
        ("tickets_create_ticket", {"subject": "Stdio", "requester_email": e2e_data.email()}),
        ("knowledge_create_doc", {"title": "Stdio doc", "body": "Spoken over pipes."}),
        ("canvas_create", {"name": "Stdio canvas", "data": {"a": 1}}),
        (
            "finance_create_account",
            {"code": e2e_data.code("SIO-", 8), "name": "Stdio", "type": "asset"},
        ),
    ]
    domains = ("crm", "tasks", "tickets", "knowledge", "canvas", "finance")
    with e2e_events.subscribe(*domains) as sub:
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            for tool, args in calls:
                assert tool in tools
                result = await client.call_tool(tool, args)
                assert not result.is_error, result.content
        events = sub.drain()
    assert {e["domain"] for e in events} == set(domains)
    # The server committed into this worker's schema: the test's Session sees it.
    assert e2e_session.scalar(select(func.count()).select_from(Contact)) == 1
    assert e2e_session.scalar(select(Task.title)) == "Over stdio"
