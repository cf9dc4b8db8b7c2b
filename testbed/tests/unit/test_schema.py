"""The worker schema without a server: names, URLs, and what create/truncate/drop/reap send
to PostgreSQL, against a small fake catalog that answers the queries schema.py makes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from testbed.errors import ForeignTarget
from testbed.isolation import schema

URL = "postgresql://app_e2e:pw@127.0.0.1:5433/app_e2e"


class Result:
    """Rows of one statement, read the ways schema.py reads them."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def scalar_one(self) -> Any:
        (row,) = self.rows
        return row[0]


class Catalog:
    """Schemas, their tables (name -> row count) and held advisory locks; one for every
    connection, as one database would be."""

    def __init__(self, schemas: dict[str, dict[str, int]] | None = None) -> None:
        self.schemas = schemas or {}
        self.locked: set[tuple[int, int]] = set()  # held by other sessions
        self.ours: set[tuple[int, int]] = set()
        self.sql: list[str] = []
        self.closed = False

    # psycopg.Connection and sqlalchemy.Connection alike
    def execute(self, stmt: Any, params: Any = None) -> Result:
        sql = " ".join(str(stmt).split())
        self.sql.append(sql)
        if m := re.fullmatch(r'CREATE SCHEMA IF NOT EXISTS "(\w+)"', sql):
            self.schemas.setdefault(m[1], {})
        elif m := re.fullmatch(r'DROP SCHEMA IF EXISTS "(\w+)" CASCADE', sql):
            self.schemas.pop(m[1], None)
        elif sql.startswith("SELECT tablename FROM pg_tables"):
            return Result([(t,) for t in sorted(self.schemas.get(params["s"], {}))])
        elif m := re.fullmatch(r'SELECT EXISTS \(SELECT FROM "(\w+)"\."(\w+)"\)', sql):
            return Result([(self.schemas[m[1]][m[2]] > 0,)])
        elif sql.startswith("TRUNCATE "):
            for s, t in re.findall(r'"(\w+)"\."(\w+)"', sql):
                self.schemas[s][t] = 0
        elif sql.startswith("SELECT nspname FROM pg_namespace"):
            (prefix,) = params
            return Result([(s,) for s in sorted(self.schemas) if s.startswith(prefix)])
        elif sql == "SELECT pg_try_advisory_lock(%s, %s)":
            free = tuple(params) not in self.locked
            if free:
                self.ours.add(tuple(params))
            return Result([(free,)])
        elif sql == "SELECT pg_advisory_unlock(%s, %s)":
            self.ours.discard(tuple(params))
        elif sql == "SELECT pg_advisory_lock(%s, %s)":
            self.ours.add(tuple(params))
        elif not sql.startswith(("SET ", "SET LOCAL ")):
            raise AssertionError(f"the fake catalog does not know {sql!r}")
        return Result([])

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine:
    """What schema.py uses of a SQLAlchemy Engine: begin() and connect() over the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @contextmanager
    def begin(self) -> Iterator[Catalog]:
        yield self.catalog

    @contextmanager
    def connect(self) -> Iterator[Catalog]:
        yield self.catalog


def _engine(catalog: Catalog) -> Any:
    return Engine(catalog)


# -- names ------------------------------------------------------------------------------------
def test_worker_schema_names_are_checked_and_parsed_back() -> None:
    name = schema.worker_schema("1a2b3c4d", "gw3")
    assert name == "e2e_1a2b3c4d_gw3"
    assert schema.parse(name) == ("1a2b3c4d", "gw3")
    for other in ("e2e_1a2b3c4d", "e2e_1A2B3C4D_gw3", "x_e2e_1a2b3c4d_gw3", "e2e_1a2b3c4d_gw3 "):
        assert schema.parse(other) is None
    for run, worker in (("1a2b3c4", "gw0"), ("1a2b3c4dd", "gw0"), ("1a2b3c4d", "gw-0")):
        with pytest.raises(ValueError, match="must be"):
            schema.worker_schema(run, worker)
    with pytest.raises(ValueError, match="worker id"):
        schema.worker_schema("1a2b3c4d", "GW0")
    with pytest.raises(ValueError, match="at most 63 bytes"):
        schema.worker_schema("1a2b3c4d", "w" * 51)
    assert schema.worker_schema("1a2b3c4d", "w" * 50) == f"e2e_1a2b3c4d_{'w' * 50}"


@pytest.mark.parametrize("name", ["a", "_x", "e2e_abc_gw0", "a" * 63])
def test_identifiers_that_pass(name: str) -> None:
    assert schema.check_identifier(name) == name


@pytest.mark.parametrize("name", ["", "A", "1a", "a-b", "a b", "a" * 64, "é", 'a"'])
def test_identifiers_that_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        schema.check_identifier(name)


def test_quote_doubles_quotes_and_refuses_what_postgresql_cannot_name() -> None:
    assert schema.quote("plain") == '"plain"'
    assert schema.quote('we"ird') == '"we""ird"'
    assert schema.quote("x" * 63) == f'"{"x" * 63}"'
    for bad in ("", "nul\x00", "x" * 64, "é" * 32):
        with pytest.raises(ValueError, match="invalid SQL identifier"):
            schema.quote(bad)


def test_run_lock_key_is_a_signed_int4_in_testbed_namespace() -> None:
    assert schema.run_lock_key("00000001") == (0x0E2E, 1)
    assert schema.run_lock_key("7fffffff") == (0x0E2E, 2**31 - 1)
    assert schema.run_lock_key("80000000") == (0x0E2E, -(2**31))
    assert schema.run_lock_key("ffffffff") == (0x0E2E, -1)


# -- URLs -------------------------------------------------------------------------------------
def test_libpq_and_sqlalchemy_urls() -> None:
    assert schema.libpq_url("postgresql+psycopg://u@h/d") == "postgresql://u@h/d"
    assert schema.libpq_url("postgresql+psycopg+x://u@h/d") == "postgresql://u@h/d"
    assert schema.libpq_url("postgresql://u@h/d+x") == "postgresql://u@h/d+x"
    assert schema.sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert schema.sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert schema.sqlalchemy_url("postgresql+asyncpg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert schema.sqlalchemy_url("postgres://u@h/d", driver="x") == "postgresql+x://u@h/d"
    assert schema.sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_schema_url_selects_the_schema_and_keeps_the_rest() -> None:
    url = schema.schema_url(f"{URL}?sslmode=disable&application_name=", "e2e_1a2b3c4d_gw0")
    parts = urlsplit(url)
    assert url.startswith(f"{URL}?")
    query = parse_qs(parts.query, keep_blank_values=True)
    assert query == {
        "sslmode": ["disable"],
        "application_name": [""],
        "options": ['-csearch_path="e2e_1a2b3c4d_gw0"'],
    }


def test_schema_url_adds_to_options_already_given() -> None:
    url = schema.schema_url(f"{URL}?options=-cstatement_timeout%3D5s", "s")
    assert parse_qs(urlsplit(url).query) == {
        "options": ['-cstatement_timeout=5s -csearch_path="s"']
    }
    with pytest.raises(ValueError, match="schema name"):
        schema.schema_url(URL, "Bad")


def test_make_engine_sets_search_path_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    made: list[tuple[str, dict[str, Any]]] = []
    real = sqlalchemy.create_engine

    def recording(url: str, **kw: Any) -> Any:
        made.append((url, kw))
        return real(url, **kw)

    monkeypatch.setattr("sqlalchemy.create_engine", recording)
    checked = schema.make_engine(URL, "s", connect_args={"options": "-cx=1", "sslmode": "disable"})
    pinged = schema.make_engine(URL, "t", pool_pre_ping=True)
    assert made == [
        (
            "postgresql+psycopg://app_e2e:pw@127.0.0.1:5433/app_e2e",
            {
                "connect_args": {"options": '-cx=1 -csearch_path="s"', "sslmode": "disable"},
                "pool_pre_ping": False,
            },
        ),
        (
            "postgresql+psycopg://app_e2e:pw@127.0.0.1:5433/app_e2e",
            {"connect_args": {"options": ' -csearch_path="t"'}, "pool_pre_ping": True},
        ),
    ]
    # The socket check replaces the ping round trip; a caller who asks for the ping keeps it.
    assert sqlalchemy.event.contains(checked, "checkout", schema._replace_if_hung_up)
    assert not sqlalchemy.event.contains(pinged, "checkout", schema._replace_if_hung_up)


class FakeConnection:
    """A DBAPI connection over one end of a socket pair; the test plays the server's end.
    It has no cursor(): the check must not send a query."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = False
        self.broken = False

    def fileno(self) -> int:
        return int(self.sock.fileno())


@pytest.fixture
def wire() -> Iterator[tuple[FakeConnection, Any]]:
    import socket

    client, server = socket.socketpair()
    with client, server:
        yield FakeConnection(client), server


def test_a_silent_idle_connection_is_kept(wire: tuple[FakeConnection, Any]) -> None:
    conn, _ = wire
    assert schema.server_hung_up(conn) is False
    schema._replace_if_hung_up(conn, None, None)  # no DisconnectionError


@pytest.mark.parametrize("server_does", ["sends FATAL", "closes"])
def test_a_connection_the_server_hung_up_is_replaced(
    wire: tuple[FakeConnection, Any], server_does: str
) -> None:
    from sqlalchemy.exc import DisconnectionError

    conn, server = wire
    if server_does == "closes":
        server.close()
    else:
        server.sendall(b"E\x00\x00\x00\x10SFATAL\x00C57P01\x00\x00")
    assert schema.server_hung_up(conn) is True
    with pytest.raises(DisconnectionError, match="closed this pooled connection"):
        schema._replace_if_hung_up(conn, None, None)


@pytest.mark.parametrize("server_does", ["nothing", "closes"])
def test_the_check_survives_a_suite_that_removes_select_poll(
    wire: tuple[FakeConnection, Any], server_does: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gevent's monkey.patch_select() deletes select.poll after the engine was made.
    import select

    conn, server = wire
    if server_does == "closes":
        server.close()
    monkeypatch.delattr(select, "poll")
    assert schema.server_hung_up(conn) is (server_does == "closes")


@pytest.mark.parametrize("state", ["closed", "broken", "no socket"])
def test_a_connection_the_driver_knows_dead_is_replaced(
    wire: tuple[FakeConnection, Any], state: str
) -> None:
    conn, _ = wire
    if state == "no socket":
        conn.sock.close()

        def fileno() -> int:
            raise OSError("the connection is closed")

        conn.fileno = fileno  # type: ignore[method-assign]
    else:
        setattr(conn, state, True)
    assert schema.server_hung_up(conn) is True


# -- create, truncate, drop --------------------------------------------------------------------
def _metadata(*names: str) -> MetaData:
    metadata = MetaData()
    for name in names:
        Table(name, metadata, Column("id", Integer, primary_key=True))
    return metadata


@pytest.fixture
def create_all(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record MetaData.create_all calls (their checkfirst) instead of running DDL."""
    calls: list[bool] = []

    def fake(self: MetaData, bind: Catalog, *, checkfirst: bool = True) -> None:
        calls.append(checkfirst)
        schema_tables = next(iter(s for s in bind.schemas.values()), None)
        assert schema_tables is not None
        for table in self.sorted_tables:
            schema_tables.setdefault(table.name, 0)

    monkeypatch.setattr(MetaData, "create_all", fake)
    return calls


def test_create_makes_the_schema_and_its_tables_in_one_go(create_all: list[bool]) -> None:
    catalog = Catalog()
    schema.create(_engine(catalog), "s", _metadata("a", "b"))
    assert catalog.schemas == {"s": {"a": 0, "b": 0}}
    assert create_all == [False]  # nothing existed: no per-table checks
    assert catalog.sql[:2] == ['CREATE SCHEMA IF NOT EXISTS "s"', 'SET LOCAL search_path TO "s"']


def test_create_leaves_a_complete_schema_alone(create_all: list[bool]) -> None:
    catalog = Catalog({"s": {"a": 3, "b": 0}})
    schema.create(_engine(catalog), "s", _metadata("a", "b"))
    assert create_all == []
    assert catalog.schemas == {"s": {"a": 3, "b": 0}}


def test_create_completes_a_partial_schema_with_checks(create_all: list[bool]) -> None:
    catalog = Catalog({"s": {"a": 3}})
    schema.create(_engine(catalog), "s", _metadata("a", "b"))
    assert create_all == [True]
    assert catalog.schemas == {"s": {"a": 3, "b": 0}}


def test_create_without_tables_makes_only_the_schema(create_all: list[bool]) -> None:
    for metadata in (None, MetaData()):
        catalog = Catalog()
        schema.create(_engine(catalog), "s", metadata)
        assert catalog.schemas == {"s": {}}
        assert catalog.sql == ['CREATE SCHEMA IF NOT EXISTS "s"']
    assert create_all == []


def test_tables_and_non_empty_tables() -> None:
    catalog = Catalog({"s": {"b": 0, "a": 2, "c": 1}, "other": {"x": 5}})
    assert schema.tables(catalog, "s") == ["a", "b", "c"]  # type: ignore[arg-type]
    assert schema.non_empty_tables(_engine(catalog), "s") == ["a", "c"]
    assert schema.non_empty_tables(_engine(catalog), "missing") == []


def test_truncate_empties_every_table_but_the_kept_in_one_statement() -> None:
    catalog = Catalog({"s": {"a": 2, "b": 1, "keep": 4}, "other": {"a": 5}})
    assert schema.truncate(_engine(catalog), "s", keep=["keep"]) == ["a", "b"]
    assert catalog.schemas == {"s": {"a": 0, "b": 0, "keep": 4}, "other": {"a": 5}}
    assert catalog.sql[-1] == 'TRUNCATE "s"."a", "s"."b" RESTART IDENTITY CASCADE'
    before = len(catalog.sql)
    assert schema.truncate(_engine(catalog), "s", keep=["a", "b", "keep"]) == []
    assert len(catalog.sql) == before + 1  # the listing only: no TRUNCATE of nothing


def test_drop_drops_the_schema_with_everything_in_it() -> None:
    catalog = Catalog({"s": {"a": 1}, "t": {}})
    schema.drop(_engine(catalog), "s")
    schema.drop(_engine(catalog), "missing")
    assert catalog.schemas == {"t": {}}


# -- the run lock, listing, reaping -------------------------------------------------------------
@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch) -> Catalog:
    """The catalog every psycopg.connect in schema.py reaches, with the arguments checked."""
    found = Catalog()

    def connect(url: str, **kwargs: Any) -> Catalog:
        assert url == URL
        assert kwargs == {"autocommit": True, "connect_timeout": schema.CONNECT_TIMEOUT_S}
        assert 0 < kwargs["connect_timeout"] <= 10  # bounded: libpq's 0 would wait forever
        return found

    monkeypatch.setattr(psycopg, "connect", connect)
    return found


def test_connect_refuses_a_foreign_database(catalog: Catalog) -> None:
    with pytest.raises(ForeignTarget):
        schema.RunLock("postgresql://dev@127.0.0.1:5432/dev", "1a2b3c4d")
    assert catalog.sql == []
    schema.RunLock(URL.replace("postgresql:", "postgresql+psycopg:"), "1a2b3c4d")


def test_run_lock_holds_the_run_key_until_released(catalog: Catalog) -> None:
    lock = schema.RunLock(URL, "1a2b3c4d")
    assert catalog.ours == {schema.run_lock_key("1a2b3c4d")}
    assert not catalog.closed
    lock.release()
    assert catalog.closed
    lock.release()  # twice is fine


def test_listed_keeps_worker_schemas_of_the_run(catalog: Catalog) -> None:
    catalog.schemas = {n: {} for n in ("e2e_1a2b3c4d_gw0", "e2e_1a2b3c4d_gw1", "e2e_ffffffff_m")}
    catalog.schemas.update({"e2e_notes": {}, "public": {}})
    assert schema.listed(catalog) == ["e2e_1a2b3c4d_gw0", "e2e_1a2b3c4d_gw1", "e2e_ffffffff_m"]  # type: ignore[arg-type]
    assert schema.listed(catalog, "1a2b3c4d") == ["e2e_1a2b3c4d_gw0", "e2e_1a2b3c4d_gw1"]  # type: ignore[arg-type]


def test_reap_drops_only_dead_runs_schemas(catalog: Catalog) -> None:
    alive, dead, current = "aaaaaaaa", "dddddddd", "cccccccc"
    names = [f"e2e_{run}_gw{i}" for run in (alive, dead, current) for i in (0, 1)]
    catalog.schemas = {name: {"t": 1} for name in [*names, "e2e_custom", "public"]}
    catalog.locked = {schema.run_lock_key(alive)}
    dropped = schema.reap(URL, current_run=current)
    assert dropped == [f"e2e_{dead}_gw0", f"e2e_{dead}_gw1"]
    assert sorted(catalog.schemas) == sorted(set(names) - set(dropped) | {"e2e_custom", "public"})
    assert catalog.ours == set()  # the dead run's lock was taken only while dropping
    assert "SET lock_timeout = '5s'" in catalog.sql
    assert catalog.closed


def test_reap_with_nothing_to_reap(catalog: Catalog) -> None:
    catalog.schemas = {"e2e_cccccccc_gw0": {}}
    assert schema.reap(URL, current_run="cccccccc") == []
    assert catalog.schemas == {"e2e_cccccccc_gw0": {}}


class BareConnection:
    """A driver connection with a socket and nothing else (psycopg2's has no `broken`)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return int(self.sock.fileno())


def test_a_connection_without_closed_or_broken_is_judged_by_its_socket(
    wire: tuple[FakeConnection, Any],
) -> None:
    conn, server = wire
    bare = BareConnection(conn.sock)
    assert schema.server_hung_up(bare) is False
    server.close()
    assert schema.server_hung_up(bare) is True


def test_without_poll_a_connection_is_taken_as_alive(
    wire: tuple[FakeConnection, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No poll() on the platform: make_engine keeps pool_pre_ping, which does the checking.
    conn, server = wire
    server.close()
    monkeypatch.setattr(schema, "_POLL", None)
    assert schema.server_hung_up(conn) is False
    made = schema.make_engine(URL, "s")
    assert made.pool._pre_ping is True
