"""testbed's fixtures: small overridable ones composed into the big ones (pytest-django style).

Session scope = one xdist worker: its schema, engine and Redis database. Function scope = one
test: a rolled-back or committed Session, a flushed Redis database, seeded data. The app under
test comes from the settings (e2e_metadata, e2e_schema_setup, e2e_channel_format) or from a
conftest overriding e2e_metadata, e2e_schema_setup, e2e_channel_name or e2e_session_options.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from testbed.config import Settings, app
from testbed.isolation.pubsub import EventListener
from testbed.isolation.sessions import (
    WorkerDatabase,
    committed_session,
    export_urls,
    rollback_session,
    run_redis,
    worker_redis,
)
from testbed.isolation.workers import Worker, worker_from_input
from testbed.run import stash
from testbed.run.controller import RunInfo
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    # Imported where used: this module loads with the plugin in every pytest process,
    # including the xdist controller and unit-test runs, which need neither SQLAlchemy nor Faker.
    import redis
    from sqlalchemy import Engine, MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from testbed.data.context import DataContext
    from testbed.data.factory import Factory

ROLLBACK, COMMITTED = "e2e_postgres_db", "e2e_committed_db"


def current_run(config: pytest.Config, *, start: bool) -> RunInfo:
    """The run's RunInfo; in a single process with no e2e path, start the services first."""
    controller = config.stash.get(stash.CONTROLLER, None)
    if start and controller is not None and not controller.info.attempted:
        controller.start()
    return config.stash[stash.RUN]


# Session scope: the worker -----------------------------------------------------------------
@pytest.fixture(scope="session")
def e2e_settings(pytestconfig: pytest.Config) -> Settings:
    """testbed's resolved settings (flags > env vars > ini > defaults)."""
    return pytestconfig.stash[stash.SETTINGS]


@pytest.fixture(scope="session")
def e2e_run(pytestconfig: pytest.Config) -> RunInfo:
    """The run shared by all workers: run id, seed, endpoints (or why there are none)."""
    return current_run(pytestconfig, start=False)


@pytest.fixture(scope="session")
def e2e_docker_compose(pytestconfig: pytest.Config, e2e_run: RunInfo) -> Endpoints:
    """The E2E services' Endpoints, whatever the backend (despite the name); brought up once
    per run by the controller. Skips when unavailable outside CI; errors under CI."""
    e2e_run = current_run(pytestconfig, start=True)
    if e2e_run.error:
        pytest.fail(e2e_run.error, pytrace=False)
    if e2e_run.skip_reason or e2e_run.endpoints is None:
        pytest.skip(e2e_run.skip_reason or "E2E services were not started for this run")
    return e2e_run.endpoints


@pytest.fixture(scope="session")
def e2e_worker(pytestconfig: pytest.Config, e2e_run: RunInfo) -> Worker:
    """This process's identity: worker id, schema name, Redis database and prefix."""
    workerinput = getattr(pytestconfig, "workerinput", None)
    return worker_from_input(workerinput, run_id=e2e_run.run_id, redis_db=e2e_run.redis_db)


@pytest.fixture(scope="session")
def e2e_metadata(e2e_settings: Settings) -> MetaData | None:
    """The app's MetaData (ini e2e_metadata); every worker schema gets its tables.
    Override it in a conftest to hand testbed the MetaData directly."""
    return app.metadata(e2e_settings.metadata)


@pytest.fixture(scope="session")
def e2e_schema_setup(e2e_settings: Settings) -> Callable[[Engine], object] | None:
    """The app's setup (ini e2e_schema_setup), run once per worker schema with its Engine:
    migrations, init scripts, seed data. Override it in a conftest to pass a function."""
    return app.schema_setup(e2e_settings.schema_setup)


@pytest.fixture(scope="session")
def e2e_database(
    pytestconfig: pytest.Config,
    e2e_settings: Settings,
    e2e_docker_compose: Endpoints,
    e2e_worker: Worker,
    e2e_metadata: MetaData | None,
    e2e_schema_setup: Callable[[Engine], object] | None,
) -> Iterator[WorkerDatabase]:
    """The worker's schema e2e_<run>_<worker>, its tables and the app's setup; dropped when
    the worker ends (with every table in it, including those tests created)."""
    from testbed.isolation import templates

    export_urls(e2e_settings, e2e_docker_compose, e2e_worker)
    database = WorkerDatabase(
        e2e_docker_compose.database_url,
        e2e_worker,
        e2e_metadata,
        e2e_schema_setup,
        templates.for_worker(
            e2e_settings,
            e2e_docker_compose.pg_version,
            e2e_metadata,
            e2e_schema_setup,
            pytestconfig.rootpath,
        ),
    )
    database.create()
    pytestconfig.stash[stash.SETUP_SECONDS] = database.setup_seconds
    pytestconfig.stash[stash.SETUP_SOURCE] = database.setup_source
    yield database
    database.drop()


@pytest.fixture(scope="session")
def e2e_engine(e2e_database: WorkerDatabase) -> Engine:
    """The worker's Engine: every connection has search_path set to the worker's schema."""
    return e2e_database.engine


@pytest.fixture(scope="session")
def e2e_database_url(e2e_database: WorkerDatabase) -> str:
    """The worker's database URL selecting its schema (options=-csearch_path=...), for an
    engine the app builds itself; testbed also exports it as each e2e_database_url_env."""
    return e2e_database.url


@pytest.fixture(scope="session")
def e2e_async_engine(e2e_database: WorkerDatabase) -> AsyncEngine:
    """An AsyncEngine (psycopg async) on the worker's schema; NullPool, so no connection
    crosses event loops."""
    from testbed.isolation.aio import make_async_engine

    return make_async_engine(
        e2e_database.database_url,
        e2e_database.schema,
        connect_args={"connect_timeout": 5},
    )


@pytest.fixture(scope="session")
def e2e_session_options(e2e_settings: Settings) -> dict[str, Any]:
    """Keyword arguments of every test Session (ini e2e_session_options); override to change."""
    return dict(e2e_settings.session_options)


@pytest.fixture(scope="session")
def e2e_redis_prefix(e2e_worker: Worker) -> str:
    """The worker's key and channel prefix, e2e:<run>:<worker>:."""
    return e2e_worker.prefix


@pytest.fixture(scope="session")
def e2e_channel_name(e2e_settings: Settings, e2e_redis_prefix: str) -> Callable[[str], str]:
    """name -> the worker's pub/sub channel, by e2e_channel_format (default {prefix}{name});
    override it when the app names channels in a way a format cannot say."""
    return app.channel_namer(e2e_settings.channel_format, e2e_redis_prefix)


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
    request: pytest.FixtureRequest,
    e2e_database: WorkerDatabase,
    e2e_session_options: dict[str, Any],
) -> Iterator[Session]:
    """A Session in the worker's schema joined to an outer transaction that is rolled back;
    code under test may commit (only SAVEPOINTs are released)."""
    _refuse_mix(request, ROLLBACK)
    with rollback_session(e2e_database.engine, **e2e_session_options) as session:
        yield session


@pytest.fixture
def e2e_committed_db(
    request: pytest.FixtureRequest,
    e2e_database: WorkerDatabase,
    e2e_session_options: dict[str, Any],
) -> Iterator[Session]:
    """A Session that really commits (other connections see it); afterwards every table of the
    worker's schema is emptied with TRUNCATE ... RESTART IDENTITY CASCADE."""
    _refuse_mix(request, COMMITTED)
    with committed_session(e2e_database, **e2e_session_options) as session:
        yield session


@pytest.fixture
def e2e_session(request: pytest.FixtureRequest) -> Session:
    """The test's Session: e2e_committed_db if marked @pytest.mark.committed, else
    e2e_postgres_db. Factories use this one."""
    committed = request.node.get_closest_marker("committed") is not None
    session: Session = request.getfixturevalue(COMMITTED if committed else ROLLBACK)
    return session


@pytest.fixture
async def e2e_async_session(
    e2e_async_engine: AsyncEngine, e2e_session_options: dict[str, Any]
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession joined to an outer transaction that is rolled back (the savepoint recipe,
    async); needs an async test plugin (anyio's, or pytest-asyncio)."""
    from testbed.isolation.aio import rollback_async_session

    async with rollback_async_session(e2e_async_engine, **e2e_session_options) as session:
        yield session


@pytest.fixture(autouse=True)
def _e2e_committed_cleanup(request: pytest.FixtureRequest) -> Iterator[None]:
    """A committed test that commits through the app's own engine: truncate afterwards too."""
    if request.node.get_closest_marker("committed") is None or COMMITTED in request.fixturenames:
        yield
        return
    database: WorkerDatabase = request.getfixturevalue("e2e_database")
    yield
    database.truncate()


@pytest.fixture
def e2e_redis(e2e_redis_client: redis.Redis[str]) -> Iterator[redis.Redis[str]]:
    """A client on the worker's own logical database; put keys under e2e_redis_prefix.
    The database is FLUSHDB'd after the test; other workers' databases are never flushed."""
    yield e2e_redis_client
    e2e_redis_client.flushdb()


@pytest.fixture
def e2e_events(
    e2e_redis: redis.Redis[str], e2e_channel_name: Callable[[str], str]
) -> EventListener:
    """Subscribe to the worker's channels: `with e2e_events.subscribe("orders") as sub:`."""
    return EventListener(e2e_redis, e2e_channel_name)


@pytest.fixture
def e2e_data(
    request: pytest.FixtureRequest, e2e_run: RunInfo, e2e_settings: Settings
) -> DataContext:
    """Seeded generators for this test: a function of the run seed and the test id."""
    from testbed.data.context import DataContext

    return DataContext(e2e_run.seed, request.node.nodeid, cache_dir=e2e_settings.cache_dir)


def factory_fixture(cls: type[Factory[Any]] | str) -> Callable[..., Factory[Any]]:
    """A fixture named after the factory (CRMContactFactory -> crm_contact_factory) that binds
    it to the test's Session (e2e_session) and seeded data (e2e_data).

    ``cls`` may be the class or its "module:Class" path: a path is imported when a test first
    uses the fixture, so a conftest that declares factories imports none of the app (nor
    SQLAlchemy) in a process that runs no test, such as the xdist controller."""
    from testbed.data.names import fixture_name

    def make(e2e_session: Session, e2e_data: DataContext) -> Factory[Any]:
        factory = app.load(cls, setting="factory_fixture") if isinstance(cls, str) else cls
        made: Factory[Any] = factory(e2e_session, e2e_data)
        return made

    name = fixture_name(cls)
    make.__doc__ = f"{cls if isinstance(cls, str) else cls.__name__} bound to the test's Session "
    make.__doc__ += "and seeded data."
    make.__name__ = name
    return pytest.fixture(name=name)(make)
