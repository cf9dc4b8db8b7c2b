"""opsdesk's E2E fixtures over testbed's: the App, its MCP client, and the factories.

testbed itself knows nothing of opsdesk: backend/pyproject.toml names the project, the schema
setup and the channel format (e2e_* ini keys); everything opsdesk-shaped lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import redis
from fixtures.test_data_factory import (
    AccountFactory,
    CanvasDataFactory,
    CompanyFactory,
    CRMContactFactory,
    DealFactory,
    FinanceDataFactory,
    InvoiceLineFactory,
    KnowledgeDocFactory,
    LedgerTransactionFactory,
    SupportTicketFactory,
    TaskCommentFactory,
    TaskFactory,
)
from mcp import Client, ClientSession
from mcp.server.mcpserver import MCPServer
from sqlalchemy.orm import Session
from stdio_server import StdioServer, server_env

from opsdesk.app import App
from opsdesk.mcp_server import build_server
from testbed.fixtures import factory_fixture
from testbed.isolation.workers import Worker
from testbed.services.endpoints import Endpoints

collect_ignore = ["fixtures"]

# One fixture per factory, bound to e2e_session (rolled back, or committed when marked).
company_factory = factory_fixture(CompanyFactory)
crm_contact_factory = factory_fixture(CRMContactFactory)
deal_factory = factory_fixture(DealFactory)
task_factory = factory_fixture(TaskFactory)
task_comment_factory = factory_fixture(TaskCommentFactory)
support_ticket_factory = factory_fixture(SupportTicketFactory)
knowledge_doc_factory = factory_fixture(KnowledgeDocFactory)
canvas_data_factory = factory_fixture(CanvasDataFactory)
account_factory = factory_fixture(AccountFactory)
ledger_transaction_factory = factory_fixture(LedgerTransactionFactory)
finance_data_factory = factory_fixture(FinanceDataFactory)
invoice_line_factory = factory_fixture(InvoiceLineFactory)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The MCP server and its client run on asyncio only."""
    return "asyncio"


@pytest.fixture
def opsdesk_app(e2e_session: Session, e2e_redis: redis.Redis[str], e2e_redis_prefix: str) -> App:
    """opsdesk's App over the test's Session and the worker's Redis database and prefix."""
    return App.for_session(e2e_session, redis=e2e_redis, prefix=e2e_redis_prefix)


@pytest.fixture(scope="session")
def e2e_mcp_server() -> tuple[App, MCPServer[object]]:
    """(App, server): one opsdesk MCP server per worker, since building one costs ~0.1 s;
    mcp_service points the App at each test's opsdesk_app for the length of the test."""
    shared = App.for_session(Session())  # placeholder until a test binds its own
    return shared, build_server(shared)


@contextmanager
def _serving(shared: App, app: App) -> Iterator[None]:
    """The server's tools read the App's fields at call time: lend them the test's."""
    names = [f.name for f in dataclasses.fields(App)]
    idle = {name: getattr(shared, name) for name in names}
    try:
        for name in names:
            setattr(shared, name, getattr(app, name))
        yield
    finally:
        for name, value in idle.items():  # a late call must never reach a finished test
            setattr(shared, name, value)


@pytest.fixture
async def mcp_service(
    opsdesk_app: App, e2e_mcp_server: tuple[App, MCPServer[object]], anyio_backend: str
) -> AsyncIterator[ClientSession]:
    """An MCP ClientSession connected in-memory to opsdesk's server over opsdesk_app (the
    test's Session, the worker's Redis namespace). Use it from async tests."""
    shared, server = e2e_mcp_server
    with _serving(shared, opsdesk_app):
        async with Client(server) as client:
            yield client.session


@pytest.fixture(scope="session")
def opsdesk_stdio(e2e_docker_compose: Endpoints, e2e_worker: Worker) -> Iterator[StdioServer]:
    """One `python -m opsdesk.mcp_server` per worker in the worker's schema and Valkey
    namespace, initialized, shared by the stdio tests (mark them xdist_group("opsdesk_stdio")
    so one worker runs them all). At the end its stdin closes: it must exit with status 0."""
    server = StdioServer(server_env(e2e_docker_compose, e2e_worker))
    try:
        server.initialize()
    except BaseException:
        server.close()
        raise
    yield server
    log = server.log()
    code = server.close()
    assert code == 0, f"the stdio server did not exit cleanly at end of input:\n{log}"
