"""Isolation: worker schemas, per-test transactions, Redis namespaces, and reaping dead runs."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from testbed import guard
from testbed.workers import SCHEMA_PREFIX, Worker, parse_schema

if TYPE_CHECKING:
    # SQLAlchemy is imported where it is used: the controller (which only needs psycopg and
    # redis) then starts the xdist workers ~0.7 s sooner, and `make unit` does not pay it.
    import redis
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

# Advisory-lock namespace for "this run is alive": the controller holds (LOCK_CLASS, run) for the
# whole run on one connection, so a run that died (even SIGKILL) has released it.
LOCK_CLASS = 0x0E2E

# Bounded waits: a server that is alive but silent (frozen, partitioned) must fail a test within
# seconds instead of hanging the run; statement/lock timeouts bound work the server does accept.
CONNECT_TIMEOUT_S = 5
PG_SESSION_OPTIONS = "-c statement_timeout=60s -c lock_timeout=30s"
REDIS_SOCKET_TIMEOUT_S = 10.0


def _run_key(run_id: str) -> int:
    """The run id as a signed int4, the second half of the advisory-lock key."""
    value = int(run_id, 16)
    return value - (1 << 32) if value >= (1 << 31) else value


def _libpq(url: str) -> str:
    """A plain libpq URL for psycopg (drops SQLAlchemy's +driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class RunLock:
    """Marks this run alive in the E2E database until release() (or process death)."""

    def __init__(self, database_url: str, run_id: str) -> None:
        guard.check_postgres_url(database_url)
        self.run_id = run_id
        self._conn = psycopg.connect(
            _libpq(database_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, _run_key(run_id)))

    def release(self) -> None:
        """Drop the lock (closing the connection releases it)."""
        if not self._conn.closed:
            self._conn.close()


def reap_stale_schemas(database_url: str, *, current_run: str) -> list[str]:
    """Drop e2e_<run>_<worker> schemas whose run is no longer alive; returns what was dropped."""
    guard.check_postgres_url(database_url)
    dropped: list[str] = []
    with psycopg.connect(
        _libpq(database_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1",
                (SCHEMA_PREFIX,),
            )
        ]
        by_run: dict[str, list[str]] = {}
        for name in names:
            parsed = parse_schema(name)
            if parsed and parsed[0] != current_run:
                by_run.setdefault(parsed[0], []).append(name)
        # A leftover transaction of a dying run must not hang the new run's start.
        conn.execute("SET lock_timeout = '5s'")
        for run_id, schemas in by_run.items():
            key = (LOCK_CLASS, _run_key(run_id))
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]:  # type: ignore[index]
                continue  # that run is alive (its controller holds the lock)
            try:
                for schema in schemas:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )
                    dropped.append(schema)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    return dropped


def list_run_schemas(engine: Engine, run_id: str) -> list[str]:
    """Every worker schema of one run (for cross-worker isolation checks)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, :p) ORDER BY 1"),
            {"p": f"{SCHEMA_PREFIX}{run_id}_"},
        )
        return [row[0] for row in rows]


@dataclass
class WorkerDatabase:
    """One worker's schema: created once with every table, truncated on demand, dropped at end."""

    database_url: str
    worker: Worker
    engine: Engine = field(init=False)
    tables: list[str] = field(init=False, default_factory=list)
    setup_seconds: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        guard.check_postgres_url(self.database_url)

    def create(self) -> None:
        """Create the worker's schema and every opsdesk table in it (search_path at connect)."""
        from opsdesk import db

        started = time.perf_counter()
        self.engine = db.make_engine(
            self.database_url,
            schema=self.worker.schema,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": PG_SESSION_OPTIONS},
        )
        db.create_schema(self.engine, self.worker.schema)
        self.tables = list(db.table_names())
        self.setup_seconds = time.perf_counter() - started

    def drop(self) -> None:
        """Drop the worker's schema and dispose of its connections."""
        from opsdesk import db

        try:
            db.drop_schema(self.engine, self.worker.schema)
        finally:
            self.engine.dispose()

    def truncate(self) -> None:
        """Empty every table of the worker's schema, resetting sequences, in one statement."""
        if not self.tables:
            return
        from sqlalchemy import text

        names = ", ".join(f'"{self.worker.schema}"."{name}"' for name in self.tables)
        with self.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


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
    session_kwargs.setdefault("expire_on_commit", False)  # as opsdesk's own sessions
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

    session_kwargs.setdefault("expire_on_commit", False)
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


def delete_run_keys(client: redis.Redis[str], run_prefix: str) -> int:
    """Remove the run-wide keys of one run from database 0."""
    keys: Sequence[str] = list(client.scan_iter(match=f"{run_prefix}*", count=1000))
    return int(client.unlink(*keys)) if keys else 0
