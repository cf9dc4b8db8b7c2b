"""A Valkey that accepts connections and never answers must not hang the stdio server: calls
answer within the server's Valkey timeout, and nothing is reported as done that was not.

The App is built exactly as `python -m opsdesk.mcp_server` builds it (``app_from_env`` on the
same environment, OPSDESK_VALKEY_TIMEOUT included) and served in-process by the worker's opsdesk
server (the same tools, lent this App): the contract is the bounded Valkey call, not the pipe
(test_mcp_stdio*.py cover the pipe), so no test pays a second server process for it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from stdio_server import server_env

from opsdesk.domains.crm.models import Company
from opsdesk.mcp_server import app_from_env
from testbed.isolation.workers import Worker
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    from conftest import MCPClientFor

pytestmark = pytest.mark.anyio
VALKEY_TIMEOUT = 0.25  # seconds, given to the server as OPSDESK_VALKEY_TIMEOUT
ANSWER_WITHIN = 15.0  # seconds: a few Valkey timeouts, never "forever"


@pytest.fixture
def silent_valkey_url() -> Iterator[str]:
    """A loopback port that completes TCP connections (the backlog) but never replies."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.heavy  # waits out Valkey timeouts: started first, so no worker ends on it
@pytest.mark.committed
async def test_a_silent_valkey_costs_a_timeout_not_a_hang(
    e2e_docker_compose: Endpoints,
    e2e_worker: Worker,
    e2e_session: Session,
    silent_valkey_url: str,
    mcp_client_for: MCPClientFor,
) -> None:
    env = server_env(
        e2e_docker_compose,
        e2e_worker,
        REDIS_URL=silent_valkey_url,
        OPSDESK_VALKEY_TIMEOUT=str(VALKEY_TIMEOUT),
    )
    app = app_from_env(env)
    with app.session_scope() as session:
        engine = session.get_bind()
    try:
        async with mcp_client_for(app) as client:
            with anyio.fail_after(ANSWER_WITHIN):
                keyed = await client.call_tool(
                    "crm_create_company", {"name": "Keyed", "idempotency_key": "s1"}
                )
            assert keyed.is_error
            assert "changed nothing" in str(keyed.content[0])
            # Without a key Valkey is only needed for the event after the COMMIT: it succeeds.
            with anyio.fail_after(ANSWER_WITHIN):
                plain = await client.call_tool("crm_create_company", {"name": "Plain"})
            assert not plain.is_error, plain.content
    finally:
        engine.dispose()
    assert list(e2e_session.scalars(select(Company.name))) == ["Plain"]
