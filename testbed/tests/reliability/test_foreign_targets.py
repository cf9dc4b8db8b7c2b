"""Port conflicts and foreign targets are refused before any write, with a message."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rel_sandbox import PYTEST, Sandbox, payload_suite

from testbed import __main__ as cli
from testbed.errors import ForeignTarget
from testbed.isolation import schema
from testbed.isolation import sessions as isolation
from testbed.isolation.workers import Worker

E2E_OK_PG = "postgresql://opsdesk_e2e@127.0.0.1:{port}/opsdesk_e2e"


@pytest.fixture
def listener(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A foreign process's socket on one of the sandbox's ports (param: 'pg' or 'redis')."""
    port = sandbox.pg_port if request.param == "pg" else sandbox.redis_port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    yield sock
    sock.close()


@pytest.mark.parametrize(
    ("listener", "env"), [("pg", "E2E_PG_PORT"), ("redis", "E2E_REDIS_PORT")], indirect=["listener"]
)
def test_foreign_listener_is_refused_naming_the_port(
    sandbox: Sandbox, listener: socket.socket, env: str
) -> None:
    port = listener.getsockname()[1]
    code, out = sandbox.testbed("up")
    assert code == 1, out
    assert f"port {port}" in out, out
    assert env in out, out
    assert "not ours" in out, out
    assert "python" in out or "pid" in out, f"the holder is not named: {out}"
    # Refused before starting anything: no server of ours, the foreign socket still works.
    assert [x for x in sandbox.leftovers() if "listener" not in x] == []
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


@pytest.mark.soak
@pytest.mark.parametrize("listener", ["pg"], indirect=True)
def test_foreign_listener_fails_the_run_naming_the_port(
    sandbox: Sandbox, listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    suite = payload_suite(tmp_path)
    code, out = sandbox.run(
        [str(PYTEST), str(suite), "-q", "-p", "no:randomly"],
        env=sandbox.env(E2E_REQUIRE_SERVICES="1", REL_TESTS="2"),
        cwd=tmp_path,
    )
    assert code != 0, out
    assert f"port {port}" in out, out


FOREIGN = [
    pytest.param(
        "postgresql://postgres@127.0.0.1:5432/opsdesk_e2e", None, "port 5432", id="pg-dev-port"
    ),
    pytest.param(
        "postgresql://opsdesk_e2e@127.0.0.1/opsdesk_e2e", None, "port 5432", id="pg-default-port"
    ),
    pytest.param(
        "postgresql:///opsdesk_e2e?host=127.0.0.1&port=5432&user=opsdesk_e2e",
        None,
        "port 5432",
        id="pg-port-in-query",
    ),
    pytest.param(
        "postgresql://opsdesk_e2e@localhost:5432/opsdesk_e2e", None, "port 5432", id="pg-localhost"
    ),
    pytest.param(
        "postgresql://opsdesk_e2e@127.0.0.1:{port}/postgres",
        None,
        "database name 'postgres'",
        id="pg-db-not-e2e",
    ),
    pytest.param(
        "postgresql://postgres@127.0.0.1:{port}/opsdesk_e2e",
        None,
        "role name 'postgres'",
        id="pg-role-not-e2e",
    ),
    pytest.param(None, "redis://127.0.0.1:6379/0", "port 6379", id="redis-dev-port"),
    pytest.param(None, "redis://127.0.0.1/0", "port 6379", id="redis-default-port"),
    pytest.param(None, "redis://localhost:6379/5", "port 6379", id="redis-localhost"),
]


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail loudly if anything tries to connect: a refusal must come before any connection."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args[:1]))
        raise AssertionError(f"connected to a foreign target: {args[:1]}")

    import redis

    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr(redis.Redis, "from_url", refuse)
    monkeypatch.setattr(redis.Redis, "execute_command", refuse)
    return attempts


@pytest.mark.parametrize(("pg_url", "redis_url", "why"), FOREIGN)
@pytest.mark.parametrize("command", ["up", "status", "wait"])
def test_foreign_urls_are_refused_before_connecting(
    pg_url: str | None,
    redis_url: str | None,
    why: str,
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_connections: list[str],
) -> None:
    port = 47999  # syntactically an E2E port; nothing connects to it anyway
    for key in ("E2E_BACKEND", "E2E_DATABASE_URL", "E2E_REDIS_URL", "CI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("E2E_DATABASE_URL", (pg_url or E2E_OK_PG).format(port=port))
    monkeypatch.setenv("E2E_REDIS_URL", redis_url or f"redis://127.0.0.1:{port + 1}/0")
    assert cli.main([command]) == 1
    err = capsys.readouterr().err
    assert "refusing" in err, err
    assert why in err, err
    assert no_connections == []


DEV_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEV_REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url",
    [
        DEV_PG,
        "postgresql://opsdesk_e2e@127.0.0.1:5433/postgres",
        "postgresql://root@127.0.0.1:5433/opsdesk_e2e",
    ],
)
def test_harness_write_paths_refuse_foreign_postgres(url: str, no_connections: list[str]) -> None:
    worker = Worker(run_id="0e2e0e2e", worker_id="gw0", count=1)
    for attempt in (
        lambda: schema.RunLock(url, "0e2e0e2e"),
        lambda: schema.reap(url, current_run=""),
        lambda: isolation.WorkerDatabase(url, worker),
    ):
        with pytest.raises(ForeignTarget, match="refusing"):
            attempt()
    assert no_connections == []


def test_harness_write_paths_refuse_dev_redis(no_connections: list[str]) -> None:
    worker = Worker(run_id="0e2e0e2e", worker_id="gw0", count=1)
    with pytest.raises(ForeignTarget, match="port 6379"):
        isolation.worker_redis(DEV_REDIS, worker, 64)
    with pytest.raises(ForeignTarget, match="port 6379"):
        isolation.run_redis(DEV_REDIS)
    assert no_connections == []


def test_run_against_dev_postgres_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    suite = payload_suite(tmp_path)
    env = sandbox.env(
        E2E_BACKEND="auto",
        E2E_DATABASE_URL=DEV_PG.replace("/postgres", "/e2e"),
        E2E_REDIS_URL=f"redis://127.0.0.1:{sandbox.redis_port}/0",
        REL_TESTS="2",
    )
    code, out = sandbox.run(
        [str(PYTEST), str(suite), "-q", "-p", "no:randomly"], env=env, cwd=tmp_path
    )
    assert code != 0, out
    assert "refusing" in out, out
    assert "port 5432" in out, out


@pytest.mark.timeout(300)
def test_run_against_a_non_e2e_database_writes_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    foreign = sandbox.database_url("postgres")  # the E2E role's password, another database
    suite = payload_suite(tmp_path)
    env = sandbox.env(
        E2E_BACKEND="auto",
        E2E_DATABASE_URL=foreign,
        E2E_REDIS_URL=sandbox.urls()["E2E_REDIS_URL"],
        REL_TESTS="2",
    )
    code, out = sandbox.run(
        [str(PYTEST), str(suite), "-q", "-p", "no:randomly"], env=env, cwd=tmp_path
    )
    assert code != 0, out
    assert "refusing" in out, out
    assert "database name 'postgres'" in out, out
    with psycopg.connect(foreign, autocommit=True) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'e2e%'"
        ).fetchall()
        activity = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    assert schemas == []
    assert activity == (0,)
