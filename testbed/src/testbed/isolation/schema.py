"""The worker schema, in one place: its name, quoting, creation, truncation, drop, listing, reaping.

A worker schema is `e2e_<run>_<worker>` (e.g. e2e_1a2b3c4d_gw3). It is selected by
`search_path` at connect time, so ORM queries, raw SQL, the app's own engines and migrations
all land in it. A run holds an advisory lock for as long as it lives; a schema whose run holds
no lock belongs to a dead run and is reaped.
"""

from __future__ import annotations

import re
import select
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from testbed import guard

if TYPE_CHECKING:
    # SQLAlchemy is imported where it is used: the xdist controller needs only psycopg.
    from sqlalchemy import Connection, Engine, MetaData

PREFIX = "e2e_"
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; a silently truncated schema name
# could make two workers share one schema, so names are checked, never trimmed.
MAX_IDENTIFIER_BYTES = 63
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_WORKER_SCHEMA = re.compile(r"^e2e_(?P<run>[0-9a-f]{8})_(?P<worker>[a-z0-9]+)$")
RUN_ID = re.compile(r"^[0-9a-f]{8}$")
# Advisory-lock namespace for "this run is alive": (LOCK_CLASS, run) is held by the controller.
LOCK_CLASS = 0x0E2E
CONNECT_TIMEOUT_S = 5
# Bound at import: gevent's monkey.patch_select() (and suites that patch `select`) remove or
# replace select.poll later, which made every checkout fail with an AttributeError.
_POLL = getattr(select, "poll", None)


def check_identifier(name: str) -> str:
    """Return name if it is a lowercase unquoted-style identifier of at most 63 bytes."""
    if not _IDENTIFIER.fullmatch(name) or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"schema name {name!r} must be lowercase letters, digits and '_', starting with a "
            f"letter or '_', at most {MAX_IDENTIFIER_BYTES} bytes (PostgreSQL would truncate it)"
        )
    return name


def quote(name: str) -> str:
    """Any identifier (schema, table) double-quoted for SQL: the one quoting helper."""
    if not name or "\x00" in name or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def worker_schema(run_id: str, worker_id: str) -> str:
    """The schema of one worker of one run, checked."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {run_id!r} must be 8 lowercase hex chars")
    if not re.fullmatch(r"[a-z0-9]+", worker_id):
        raise ValueError(f"worker id {worker_id!r} must be lowercase letters and digits")
    return check_identifier(f"{PREFIX}{run_id}_{worker_id}")


def parse(name: str) -> tuple[str, str] | None:
    """(run id, worker id) of a worker schema name, None for any other name."""
    match = _WORKER_SCHEMA.fullmatch(name)
    return (match["run"], match["worker"]) if match else None


def libpq_url(url: str) -> str:
    """A plain libpq URL for psycopg (drops SQLAlchemy's +driver suffix)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def sqlalchemy_url(url: str, *, driver: str = "psycopg") -> str:
    """The URL for SQLAlchemy with psycopg 3 (sync and async alike)."""
    scheme, sep, rest = libpq_url(url).partition("://")
    return f"postgresql+{driver}{sep}{rest}" if scheme in ("postgresql", "postgres") else url


def search_path_option(schema: str) -> str:
    """libpq's `options` value selecting the schema (the name is checked: no escaping needed)."""
    return f"-csearch_path={quote(check_identifier(schema))}"


def schema_url(url: str, schema: str) -> str:
    """The database URL with `options=-csearch_path=<schema>`: any engine built from it
    (the app's own, a migration tool's) uses the worker schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    given = dict(parse_qsl(parts.query)).get("options", "")
    options = f"{given} {search_path_option(schema)}".strip()
    return urlunsplit(parts._replace(query=urlencode([*query, ("options", options)])))


def make_engine(url: str, schema: str, **kwargs: Any) -> Engine:
    """An Engine whose every connection has search_path set to the schema at connect time.

    A pooled connection the server has closed (a restart, pg_terminate_backend, an idle timeout)
    is replaced at checkout, as `pool_pre_ping` would, but without its round trip: the check
    looks at the socket (see `server_hung_up`). A caller's own `pool_pre_ping` is kept.
    """
    from sqlalchemy import create_engine, event

    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args["options"] = f"{connect_args.get('options', '')} {search_path_option(schema)}"
    socket_check = "pool_pre_ping" not in kwargs and _POLL is not None
    kwargs.setdefault("pool_pre_ping", not socket_check)
    engine = create_engine(sqlalchemy_url(url), connect_args=connect_args, **kwargs)
    if socket_check:
        event.listen(engine, "checkout", _replace_if_hung_up)
    return engine


def server_hung_up(dbapi_connection: Any) -> bool:
    """True when an idle connection cannot be used: the driver knows it is closed, or the server
    has sent something unasked (its FATAL 'terminating connection' or end of file). An idle
    connection's socket is otherwise silent, so one poll with no wait tells, and costs no
    round trip; a NOTIFY left unread also counts, which only costs a new connection."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # a closed or foreign connection (drivers differ): let the pool replace it
        return True
    if _POLL is None:  # no poll() on this platform: make_engine uses pool_pre_ping there
        return False
    poller = _POLL()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _replace_if_hung_up(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout: raising DisconnectionError makes the pool connect afresh and retry."""
    if server_hung_up(dbapi_connection):
        from sqlalchemy.exc import DisconnectionError

        raise DisconnectionError("the server closed this pooled connection")


def create(engine: Engine, schema: str, metadata: MetaData | None = None) -> None:
    """Create the schema and, given a MetaData, its tables; idempotent, one transaction."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"))
        if metadata is None or not metadata.tables:
            return
        # SET LOCAL scopes the search_path to this transaction, whatever the engine's default.
        conn.execute(text(f"SET LOCAL search_path TO {quote(schema)}"))
        names = [table.name for table in metadata.sorted_tables]
        existing = len(set(names) & set(tables(conn, schema)))
        if existing < len(names):
            # All or nothing is the fast path; a partial schema (crashed run) gets checks.
            metadata.create_all(conn, checkfirst=existing > 0)


def tables(conn: Connection, schema: str) -> list[str]:
    """Every table of the schema, whoever made it (MetaData, a migration, a test)."""
    from sqlalchemy import text

    rows = conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"), {"s": schema}
    )
    return [row[0] for row in rows]


def non_empty_tables(engine: Engine, schema: str) -> list[str]:
    """Tables of the schema that hold at least one row."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return [
            name
            for name in tables(conn, schema)
            if conn.execute(
                text(f"SELECT EXISTS (SELECT FROM {quote(schema)}.{quote(name)})")
            ).scalar_one()
        ]


def truncate(engine: Engine, schema: str, *, keep: Iterable[str] = ()) -> list[str]:
    """Empty every table of the schema but `keep`, resetting sequences, in one statement."""
    from sqlalchemy import text

    kept = set(keep)
    with engine.begin() as conn:
        names = [name for name in tables(conn, schema) if name not in kept]
        if names:
            listed = ", ".join(f"{quote(schema)}.{quote(name)}" for name in names)
            conn.execute(text(f"TRUNCATE {listed} RESTART IDENTITY CASCADE"))
    return names


def drop(engine: Engine, schema: str) -> None:
    """Drop the schema and everything in it; a missing schema is not an error."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"))


def _connect(database_url: str) -> psycopg.Connection[Any]:
    guard.check_postgres_url(database_url)
    return psycopg.connect(
        libpq_url(database_url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    )


def listed(conn: psycopg.Connection[Any], run_id: str = "") -> list[str]:
    """Worker schemas in the database (of one run when run_id is given), sorted."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) ORDER BY 1",
        (f"{PREFIX}{run_id}_" if run_id else PREFIX,),
    )
    return [row[0] for row in rows if parse(row[0])]


def run_lock_key(run_id: str) -> tuple[int, int]:
    """The advisory-lock key of a run: (LOCK_CLASS, the run id as a signed int4)."""
    value = int(run_id, 16)
    return LOCK_CLASS, value - (1 << 32) if value >= (1 << 31) else value


class RunLock:
    """Marks this run alive in the E2E database until release() (or process death)."""

    def __init__(self, database_url: str, run_id: str) -> None:
        self.run_id = run_id
        self._conn = _connect(database_url)
        self._conn.execute("SELECT pg_advisory_lock(%s, %s)", run_lock_key(run_id))

    def release(self) -> None:
        """Drop the lock (closing the connection releases it)."""
        if not self._conn.closed:
            self._conn.close()


def reap(database_url: str, *, current_run: str) -> list[str]:
    """Drop worker schemas whose run is no longer alive; returns what was dropped."""
    dropped: list[str] = []
    with _connect(database_url) as conn:
        by_run: dict[str, list[str]] = {}
        for name in listed(conn):
            run_id = parse(name)[0]  # type: ignore[index]  # listed() keeps parseable names
            if run_id != current_run:
                by_run.setdefault(run_id, []).append(name)
        # A leftover transaction of a dying run must not hang the new run's start.
        conn.execute("SET lock_timeout = '5s'")
        for run_id, schemas in by_run.items():
            key = run_lock_key(run_id)
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]:  # type: ignore[index]
                continue  # that run is alive (its controller holds the lock)
            try:
                for name in schemas:
                    conn.execute(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE")
                    dropped.append(name)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
    return dropped
