"""The async engine and rollback session without a server: what psycopg would be asked to connect
with (caught in SQLAlchemy's do_connect, before any socket), the pool, and the savepoint recipe
on a fake connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool, StaticPool

from testbed.isolation import aio

URL = "postgresql://shop_e2e:secret@127.0.0.1:25433/shop_e2e"


class Refused(Exception):
    """Raised in place of connecting."""


def connect_params(engine: AsyncEngine) -> dict[str, Any]:
    """The keyword arguments psycopg's connect() would get from engine (nothing connects)."""
    seen: list[dict[str, Any]] = []

    @event.listens_for(engine.sync_engine, "do_connect")
    def intercept(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.append(dict(cparams))
        raise Refused

    async def connect() -> None:
        async with engine.connect():
            pytest.fail("connected")

    with pytest.raises(Refused):
        asyncio.run(connect())
    return seen[0]


# -- make_async_engine --------------------------------------------------------------------------
def test_every_connection_selects_the_worker_schema() -> None:
    engine = aio.make_async_engine(URL, "shop_gw1")
    assert engine.url.drivername == "postgresql+psycopg"  # psycopg 3, async
    params = connect_params(engine)
    assert params["options"] == '-csearch_path="shop_gw1"'
    assert (params["dbname"], params["user"], params["port"]) == ("shop_e2e", "shop_e2e", 25433)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+asyncpg"])
def test_any_postgres_url_gets_psycopg(scheme: str) -> None:
    engine = aio.make_async_engine(URL.replace("postgresql", scheme, 1), "shop_gw1")
    assert engine.url.drivername == "postgresql+psycopg"


def test_the_callers_options_and_connect_args_are_kept_and_not_changed() -> None:
    given = {"options": "-cstatement_timeout=5s", "application_name": "suite"}
    engine = aio.make_async_engine(URL, "shop_gw0", connect_args=given)
    params = connect_params(engine)
    assert params["options"] == '-cstatement_timeout=5s -csearch_path="shop_gw0"'
    assert params["application_name"] == "suite"
    assert given == {"options": "-cstatement_timeout=5s", "application_name": "suite"}


def test_no_pool_unless_asked() -> None:
    """A pooled async connection would cross event loops between tests."""
    assert isinstance(aio.make_async_engine(URL, "s").sync_engine.pool, NullPool)
    chosen = aio.make_async_engine(URL, "s", poolclass=StaticPool, echo=True)
    assert isinstance(chosen.sync_engine.pool, StaticPool)
    assert chosen.sync_engine.echo is True


@pytest.mark.parametrize("schema", ["Shop", "shop; DROP SCHEMA public", "", "a" * 64])
def test_a_schema_name_that_needs_quoting_is_refused(schema: str) -> None:
    with pytest.raises(ValueError, match="must be lowercase letters"):
        aio.make_async_engine(URL, schema)


# -- rollback_async_session -----------------------------------------------------------------------
class Transaction:
    def __init__(self) -> None:
        self.is_active = True
        self.rolled_back = 0

    async def rollback(self) -> None:
        self.rolled_back += 1
        self.is_active = False


class Connection:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.trans = Transaction()

    async def begin(self) -> Transaction:
        self.log.append("begin")
        return self.trans

    async def __aenter__(self) -> Connection:
        self.log.append("connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.log.append("close connection")


class Engine:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.conn = Connection(self.log)

    def connect(self) -> Connection:
        return self.conn


class Session:
    """AsyncSession's constructor and close(), as the recipe uses them."""

    made: list[Session] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.log: list[str] = kwargs["bind"].log
        Session.made.append(self)

    async def close(self) -> None:
        self.log.append("close session")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setattr("sqlalchemy.ext.asyncio.AsyncSession", Session)
    monkeypatch.setattr(Session, "made", [])
    return Engine()


def use(engine: Engine, body: Any = None, **session_kwargs: Any) -> Session:
    async def run() -> Session:
        async with aio.rollback_async_session(engine, **session_kwargs) as session:  # type: ignore[arg-type]
            engine.log.append("test")
            if body is not None:
                await body(engine.conn)
            return session  # type: ignore[no-any-return]

    return asyncio.run(run())


def test_the_session_joins_an_outer_transaction_that_is_rolled_back(engine: Engine) -> None:
    session = use(engine, expire_on_commit=False)
    assert session.kwargs == {
        "bind": engine.conn,
        "join_transaction_mode": "create_savepoint",  # the app's commit() ends a savepoint
        "expire_on_commit": False,
    }
    assert engine.log == ["connect", "begin", "test", "close session", "close connection"]
    assert engine.conn.trans.rolled_back == 1


def test_rolled_back_when_the_test_fails(engine: Engine) -> None:
    async def fail(conn: Connection) -> None:
        raise KeyError("the test's own failure")

    with pytest.raises(KeyError):
        use(engine, fail)
    assert engine.conn.trans.rolled_back == 1
    assert engine.log[-2:] == ["close session", "close connection"]


def test_an_outer_transaction_that_already_ended_is_not_rolled_back_again(engine: Engine) -> None:
    async def end(conn: Connection) -> None:
        await conn.trans.rollback()  # e.g. the code under test broke the connection

    use(engine, end)
    assert engine.conn.trans.rolled_back == 1
    assert engine.log[-1] == "close connection"
