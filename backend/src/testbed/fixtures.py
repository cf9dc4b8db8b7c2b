"""testbed's fixtures: small overridable ones composed into the big ones (pytest-django style).

Session scope = one xdist worker: its schema, engine and Redis database. Function scope = one
test: a rolled-back or committed Session, a flushed Redis database, seeded data, an MCP client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from testbed.isolation import (
    WorkerDatabase,
    committed_session,
    rollback_session,
    run_redis,
    worker_redis,
)
from testbed.pubsub import EventListener
from testbed.run import RunInfo
from testbed.services import Endpoints
from testbed.workers import Worker, worker_from_input

if TYPE_CHECKING:
    # Imported where used: this module loads with the plugin in every pytest process,
    # including the xdist controller and `make unit`, which need neither SQLAlchemy nor Faker.
    import redis
    from mcp import ClientSession
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from testbed.data import DataContext
    from testbed.factory import Factory

SETUP_STASH = pytest.StashKey[float]()
ROLLBACK, COMMITTED = "e2e_postgres_db", "e2e_committed_db"


def _run(config: pytest.Config, *, start: bool) -> RunInfo:
    from testbed.plugin import CONTROLLER_KEY, RUN_KEY

    controller = config.stash.get(CONTROLLER_KEY, None)
    if start and controller is not None and not controller.info.attempted:
        # Single process and no e2e directory among the paths: start on first use instead.
        controller.start()
    return config.stash[RUN_KEY]


# Session scope: the worker -----------------------------------------------------------------
@pytest.fixture(scope="session")
def e2e_run(pytestconfig: pytest.Config) -> RunInfo:
    """The run shared by all workers: run id, seed, endpoints (or why there are none)."""
    return _run(pytestconfig, start=False)


@pytest.fixture(scope="session")
def e2e_docker_compose(pytestconfig: pytest.Config, e2e_run: RunInfo) -> Endpoints:
    """The E2E services' Endpoints, whatever the backend (despite the name); brought up once
    per run by the controller. Skips when unavailable outside CI; errors under CI."""
    e2e_run = _run(pytestconfig, start=True)
    if e2e_run.error:
        pytest.fail(e2e_run.error, pytrace=False)
    if e2e_run.skip_reason or e2e_run.endpoints is None:
        pytest.skip(e2e_run.skip_reason or "E2E services were not started for this run")
    return e2e_run.endpoints


@pytest.fixture(scope="session")
def e2e_worker(pytestconfig: pytest.Config, e2e_run: RunInfo) -> Worker:
    """This process's identity: worker id, schema name, Redis database and prefix."""
    return worker_from_input(getattr(pytestconfig, "workerinput", None), run_id=e2e_run.run_id)


@pytest.fixture(scope="session")
def e2e_database(
    pytestconfig: pytest.Config, e2e_docker_compose: Endpoints, e2e_worker: Worker
) -> Iterator[WorkerDatabase]:
    """The worker's schema e2e_<run>_<worker> with every table; dropped when the worker ends."""
    database = WorkerDatabase(e2e_docker_compose.database_url, e2e_worker)
    database.create()
    pytestconfig.stash[SETUP_STASH] = database.setup_seconds
    yield database
    database.drop()


@pytest.fixture(scope="session")
def e2e_engine(e2e_database: WorkerDatabase) -> Engine:
    """The worker's Engine: every connection has search_path set to the worker's schema."""
    return e2e_database.engine


@pytest.fixture(scope="session")
def e2e_redis_prefix(e2e_worker: Worker) -> str:
    """The worker's key and channel prefix, e2e:<run>:<worker>:."""
    return e2e_worker.prefix


@pytest.fixture(scope="session")
def e2e_redis_client(
    e2e_docker_compose: Endpoints, e2e_worker: Worker
) -> Iterator[redis.Redis[str]]:
    """The worker's client on its own logical database (1 + worker index), flushed at start
    (a dead run may have used the same number) and at the end."""
    client = worker_redis(
        e2e_docker_compose.redis_url, e2e_worker, e2e_docker_compose.redis_databases
    )
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def e2e_run_redis(e2e_docker_compose: Endpoints, e2e_run: RunInfo) -> Iterator[redis.Redis[str]]:
    """A client on database 0 for run-wide keys shared by all workers; use keys under
    e2e:<run>: with a TTL (the controller deletes them at the end of the run)."""
    client = run_redis(e2e_docker_compose.redis_url)
    yield client
    client.close()


# Function scope: the test ------------------------------------------------------------------
def _refuse_mix(request: pytest.FixtureRequest, wanted: str) -> None:
    committed = request.node.get_closest_marker("committed") is not None
    if wanted == ROLLBACK and committed:
        pytest.fail(
            "this test is marked @pytest.mark.committed: use the e2e_committed_db fixture "
            "(or e2e_session), not e2e_postgres_db",
            pytrace=False,
        )
    other = COMMITTED if wanted == ROLLBACK else ROLLBACK
    if other in request.fixturenames:
        pytest.fail(
            f"a test uses either {ROLLBACK} (rolled back) or {COMMITTED} (real commits, "
            "then TRUNCATE), not both; e2e_session picks one from the committed marker",
            pytrace=False,
        )


@pytest.fixture
def e2e_postgres_db(
    request: pytest.FixtureRequest, e2e_database: WorkerDatabase
) -> Iterator[Session]:
    """A Session in the worker's schema joined to an outer transaction that is rolled back;
    code under test may commit (only SAVEPOINTs are released)."""
    _refuse_mix(request, ROLLBACK)
    with rollback_session(e2e_database.engine) as session:
        yield session


@pytest.fixture
def e2e_committed_db(
    request: pytest.FixtureRequest, e2e_database: WorkerDatabase
) -> Iterator[Session]:
    """A Session that really commits (other connections see it); afterwards every table of the
    worker's schema is emptied with TRUNCATE ... RESTART IDENTITY CASCADE."""
    _refuse_mix(request, COMMITTED)
    with committed_session(e2e_database) as session:
        yield session


@pytest.fixture
def e2e_session(request: pytest.FixtureRequest) -> Session:
    """The test's Session: e2e_committed_db if marked @pytest.mark.committed, else
    e2e_postgres_db. Factories and mcp_service use this one."""
    committed = request.node.get_closest_marker("committed") is not None
    session: Session = request.getfixturevalue(COMMITTED if committed else ROLLBACK)
    return session


@pytest.fixture
def e2e_redis(e2e_redis_client: redis.Redis[str]) -> Iterator[redis.Redis[str]]:
    """A client on the worker's own logical database; put keys under e2e_redis_prefix.
    The database is FLUSHDB'd after the test; other workers' databases are never flushed."""
    yield e2e_redis_client
    e2e_redis_client.flushdb()


@pytest.fixture
def e2e_events(e2e_redis: redis.Redis[str], e2e_redis_prefix: str) -> EventListener:
    """Subscribe to the worker's event channels: `with e2e_events.subscribe("crm") as sub:`."""
    return EventListener(e2e_redis, e2e_redis_prefix)


@pytest.fixture
def e2e_data(request: pytest.FixtureRequest, e2e_run: RunInfo) -> DataContext:
    """Seeded generators for this test: a function of the run seed and the test id."""
    from testbed.data import DataContext

    return DataContext(e2e_run.seed, request.node.nodeid)


@pytest.fixture
def opsdesk_app(e2e_session: Session, e2e_redis: redis.Redis[str], e2e_redis_prefix: str) -> Any:
    """opsdesk's App over the test's Session and the worker's Redis database and prefix."""
    from opsdesk.app import App

    return App.for_session(e2e_session, redis=e2e_redis, prefix=e2e_redis_prefix)


@pytest.fixture(scope="session")
def e2e_mcp_server() -> tuple[Any, Any]:
    """(App, server): one opsdesk MCP server per worker, since building one costs ~0.1 s;
    mcp_service rebinds the App to each test's opsdesk_app."""
    from sqlalchemy.orm import Session

    from opsdesk.app import App
    from opsdesk.mcp_server import build_server

    shared = App.for_session(Session())  # placeholder until a test binds its own
    return shared, build_server(shared)


@pytest.fixture
async def mcp_service(
    opsdesk_app: Any, e2e_mcp_server: tuple[Any, Any], anyio_backend: Any
) -> AsyncIterator[ClientSession]:
    """An MCP ClientSession connected in-memory to opsdesk's server over opsdesk_app (the
    test's Session, the worker's Redis namespace). Use it from async tests."""
    from mcp import Client

    shared, server = e2e_mcp_server
    idle = dict(vars(shared))
    vars(shared).update(vars(opsdesk_app))  # the tools read the App's fields at call time
    try:
        async with Client(server) as client:
            yield client.session
    finally:
        vars(shared).update(idle)  # a late call must never reach a finished test's Session


def factory_fixture(cls: type[Factory[Any]]) -> Callable[..., Factory[Any]]:
    """A fixture named after the factory (CRMContactFactory -> crm_contact_factory) that binds
    it to the test's Session (e2e_session) and seeded data (e2e_data)."""
    from testbed.factory import fixture_name

    def make(e2e_session: Session, e2e_data: DataContext) -> Factory[Any]:
        return cls(e2e_session, e2e_data)

    make.__doc__ = f"{cls.__name__} bound to the test's Session and seeded data."
    make.__name__ = fixture_name(cls)
    return pytest.fixture(name=fixture_name(cls))(make)
