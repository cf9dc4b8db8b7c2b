"""opsdesk's E2E fixtures over testbed's: the App, its MCP client, and the factories.

testbed itself knows nothing of opsdesk: backend/pyproject.toml names the project, the schema
setup and the channel format (e2e_* ini keys); everything opsdesk-shaped lives here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import pytest

from testbed.fixtures import factory_fixture

if TYPE_CHECKING:
    # Imported where used: the xdist controller loads this conftest too and runs no test, so
    # it never needs opsdesk, the MCP SDK or SQLAlchemy (about a second of start-up each).
    import redis
    from mcp import ClientSession
    from mcp.server.mcpserver import MCPServer
    from sqlalchemy.orm import Session

    from opsdesk.app import App

    # mcp_client_for: connects a client to the worker's server serving the App given.
    MCPClientFor = Callable[[App], AbstractAsyncContextManager[ClientSession]]

collect_ignore = ["fixtures"]

# One fixture per factory, bound to e2e_session (rolled back, or committed when marked); by
# path, so the factories (and opsdesk's models) load when a test first asks for one.
_FACTORIES = "fixtures.test_data_factory:"
company_factory = factory_fixture(_FACTORIES + "CompanyFactory")
crm_contact_factory = factory_fixture(_FACTORIES + "CRMContactFactory")
deal_factory = factory_fixture(_FACTORIES + "DealFactory")
task_factory = factory_fixture(_FACTORIES + "TaskFactory")
task_comment_factory = factory_fixture(_FACTORIES + "TaskCommentFactory")
support_ticket_factory = factory_fixture(_FACTORIES + "SupportTicketFactory")
knowledge_doc_factory = factory_fixture(_FACTORIES + "KnowledgeDocFactory")
canvas_data_factory = factory_fixture(_FACTORIES + "CanvasDataFactory")
account_factory = factory_fixture(_FACTORIES + "AccountFactory")
ledger_transaction_factory = factory_fixture(_FACTORIES + "LedgerTransactionFactory")
finance_data_factory = factory_fixture(_FACTORIES + "FinanceDataFactory")
invoice_line_factory = factory_fixture(_FACTORIES + "InvoiceLineFactory")


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown without xdist
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist controller, as a worker finishes: hypothesis's plugin imports hypothesis for its
    terminal summary, which runs after the last worker ends with nothing else to do (0.3-0.7 s
    of CPU). Imported now, it runs on the core the finished worker left while the others end."""
    import hypothesis  # noqa: F401


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The MCP server and its client run on asyncio only."""
    return "asyncio"


@pytest.fixture
def opsdesk_app(e2e_session: Session, e2e_redis: redis.Redis[str], e2e_redis_prefix: str) -> App:
    """opsdesk's App over the test's Session and the worker's Redis database and prefix."""
    from opsdesk.app import App

    return App.for_session(e2e_session, redis=e2e_redis, prefix=e2e_redis_prefix)


@pytest.fixture(scope="session")
def e2e_mcp_server() -> tuple[App, MCPServer[object]]:
    """(App, server): one opsdesk MCP server per worker, since building one costs ~0.1 s;
    mcp_service points the App at each test's opsdesk_app for the length of the test."""
    from sqlalchemy.orm import Session

    from opsdesk.app import App
    from opsdesk.mcp_server import build_server

    shared = App.for_session(Session())  # placeholder until a test binds its own
    return shared, build_server(shared)


@contextmanager
def _serving(shared: App, app: App) -> Iterator[None]:
    """The server's tools read the App's fields at call time: lend them the test's."""
    names = [f.name for f in dataclasses.fields(app)]
    idle = {name: getattr(shared, name) for name in names}
    try:
        for name in names:
            setattr(shared, name, getattr(app, name))
        yield
    finally:
        for name, value in idle.items():  # a late call must never reach a finished test
            setattr(shared, name, value)


@pytest.fixture
def mcp_client_for(e2e_mcp_server: tuple[App, MCPServer[object]]) -> MCPClientFor:
    """``async with mcp_client_for(app) as client``: an MCP ClientSession connected in-memory to
    the worker's opsdesk server while it serves ``app`` (an App the test built itself, e.g.
    over committed sessions, or from the server's environment), without building a server."""
    shared, server = e2e_mcp_server

    @asynccontextmanager
    async def connect(app: App) -> AsyncIterator[ClientSession]:
        from mcp import Client

        with _serving(shared, app):
            async with Client(server) as client:
                yield client.session

    return connect


@pytest.fixture
async def mcp_service(
    opsdesk_app: App, mcp_client_for: MCPClientFor, anyio_backend: str
) -> AsyncIterator[ClientSession]:
    """An MCP ClientSession connected in-memory to opsdesk's server over opsdesk_app (the
    test's Session, the worker's Redis namespace). Use it from async tests."""
    async with mcp_client_for(opsdesk_app) as client:
        yield client
