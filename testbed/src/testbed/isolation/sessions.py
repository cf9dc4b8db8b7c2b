"""Isolation: the worker's database, per-test transactions and Redis namespaces."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from testbed import guard
from testbed.config import Settings
from testbed.config.app import SchemaSetup
from testbed.isolation import schema
from testbed.isolation.templates import SchemaTemplates
from testbed.isolation.workers import Worker
from testbed.services.endpoints import Endpoints

if TYPE_CHECKING:
    # SQLAlchemy is imported where it is used: the controller (which only needs psycopg and
    # redis) then starts the xdist workers ~0.7 s sooner, and unit-test runs do not pay it.
    import redis
    from sqlalchemy import Engine, MetaData
    from sqlalchemy.orm import Session

# Bounded waits: a server that is alive but silent (frozen, partitioned) must fail a test within
# seconds instead of hanging the run; statement/lock timeouts bound work the server does accept.
CONNECT_TIMEOUT_S = schema.CONNECT_TIMEOUT_S
PG_SESSION_OPTIONS = "-c statement_timeout=60s -c lock_timeout=30s"
REDIS_SOCKET_TIMEOUT_S = 10.0


@dataclass
class WorkerDatabase:
    """One worker's schema: created once (tables, then the app's setup), truncated on demand,
    dropped at the end."""

    database_url: str
    worker: Worker
    metadata: MetaData | None = None
    setup: SchemaSetup | None = None
    templates: SchemaTemplates | None = None  # set: restore a cached dump instead of migrating
    engine: Engine = field(init=False)
    seeded: frozenset[str] = field(init=False, default=frozenset())
    setup_seconds: float = field(init=False, default=0.0)
    setup_source: str = field(init=False, default="built")  # or "restored" (from templates)

    def __post_init__(self) -> None:
        guard.check_postgres_url(self.database_url)

    @property
    def schema(self) -> str:
        """The worker's schema name."""
        return self.worker.schema

    @property
    def url(self) -> str:
        """The database URL selecting the worker's schema, for engines the app builds itself."""
        return schema.schema_url(self.database_url, self.worker.schema)

    def create(self) -> None:
        """Create the schema, the MetaData's tables, then run the app's setup (migrations), or
        restore all of that from a dump of the same inputs (testbed.isolation.templates)."""
        started = time.perf_counter()
        self.engine = schema.make_engine(
            self.database_url,
            self.worker.schema,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": PG_SESSION_OPTIONS},
        )
        if self.templates is None:
            self._build()
        else:
            self.setup_source, self.seeded = self.templates.create(
                self.database_url, self.worker.schema, self._build
            )
        self.setup_seconds = time.perf_counter() - started

    def _build(self) -> frozenset[str]:
        schema.create(self.engine, self.worker.schema, self.metadata)
        if self.setup is not None:
            self.setup(self.engine)
            # Rows a setup wrote (seed data, alembic_version) survive committed-mode truncation.
            self.seeded = frozenset(schema.non_empty_tables(self.engine, self.worker.schema))
        return self.seeded

    def drop(self) -> None:
        """Drop the worker's schema and dispose of its connections."""
        try:
            schema.drop(self.engine, self.worker.schema)
        finally:
            self.engine.dispose()

    def truncate(self) -> list[str]:
        """Empty every table of the worker's schema but the seeded ones, in one statement."""
        return schema.truncate(self.engine, self.worker.schema, keep=self.seeded)


@contextmanager
def rollback_session(engine: Engine, **session_kwargs: Any) -> Iterator[Session]:
    """A Session joined to an outer transaction that is rolled back at the end.

    The SQLAlchemy recipe "Joining a Session into an External Transaction": with
    join_transaction_mode="create_savepoint", code under test may commit() or rollback()
    freely; only SAVEPOINTs are released, and the outer transaction never commits.
    """
    from sqlalchemy.orm import Session

    conn = engine.connect()
    trans = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", **session_kwargs)
    try:
        yield session
    finally:
        session.close()
        if trans.is_active:
            trans.rollback()
        conn.close()


@contextmanager
def committed_session(database: WorkerDatabase, **session_kwargs: Any) -> Iterator[Session]:
    """A Session that really commits; the worker's tables are truncated afterwards."""
    from sqlalchemy.orm import Session

    session = Session(bind=database.engine, **session_kwargs)
    try:
        yield session
    finally:
        session.close()
        database.truncate()


class NotEnoughDatabases(RuntimeError):
    """The Valkey server has fewer logical databases than this run has workers."""


def check_redis_databases(worker: Worker, available: int, redis_url: str) -> None:
    """Fail with what to do when the worker's database number does not exist on the server."""
    if worker.redis_db >= available:
        raise NotEnoughDatabases(
            f"worker {worker.worker_id} needs Valkey database {worker.redis_db}, but "
            f"{guard.redact(redis_url)} has only {available} (0..{available - 1}): start it with "
            f"--databases {max(64, worker.count + 1)} (the native and docker backends do) "
            f"or run fewer workers (-n {max(1, available - 1)})"
        )


def with_db(redis_url: str, db: int) -> str:
    """The URL pointed at logical database `db` (redis-py lets the URL's /N win over db=)."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def _no_retry() -> Any:
    """No command retries: a silent server fails a test after one socket timeout, not minutes."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def worker_redis(redis_url: str, worker: Worker, available: int) -> redis.Redis[str]:
    """A client on the worker's own logical database (never database 0; only it is ever flushed)."""
    import redis as redis_lib

    guard.check_redis_url(redis_url)
    check_redis_databases(worker, available, redis_url)
    return redis_lib.Redis.from_url(
        with_db(redis_url, worker.redis_db),
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_no_retry(),
    )


def run_redis(redis_url: str) -> redis.Redis[str]:
    """A client on database 0 for run-wide keys (always under the run prefix, with a TTL)."""
    import redis as redis_lib

    guard.check_redis_url(redis_url)
    return redis_lib.Redis.from_url(
        with_db(redis_url, 0),
        decode_responses=True,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_no_retry(),
    )


def export_urls(settings: Settings, endpoints: Endpoints, worker: Worker) -> None:
    """Set the e2e_database_url_env / e2e_redis_url_env variables to the worker's URLs, so an
    app that builds its own engine or client from the environment lands in its namespace."""
    if settings.database_url_env:
        url = schema.schema_url(endpoints.database_url, worker.schema)
        os.environ.update(dict.fromkeys(settings.database_url_env, url))
    if settings.redis_url_env:
        check_redis_databases(worker, endpoints.redis_databases, endpoints.redis_url)
        url = with_db(endpoints.redis_url, worker.redis_db)
        os.environ.update(dict.fromkeys(settings.redis_url_env, url))


def delete_run_keys(client: redis.Redis[str], run_prefix: str) -> int:
    """Remove the run-wide keys of one run from database 0."""
    keys: Sequence[str] = list(client.scan_iter(match=f"{run_prefix}*", count=1000))
    return int(client.unlink(*keys)) if keys else 0
