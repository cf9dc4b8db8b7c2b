"""Backend selection (auto/explicit) and ensure_up's reuse-or-start contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.config import load_settings
from testbed.errors import ForeignTarget, InUse, UsageError
from testbed.services import docker as docker_mod
from testbed.services.backend import ServiceStatus
from testbed.services.endpoints import Endpoints
from testbed.services.lifecycle import acquire, choose
from testbed.services.ownership import (
    RUN,
    Lease,
    ProcessIdentity,
    Record,
    StateDir,
    Store,
    new_lease,
)

PG = "postgresql://opsdesk_e2e@127.0.0.1:15433/opsdesk_e2e"
REDIS = "redis://127.0.0.1:16380/0"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[bool]:
    """Controls whether a fake Docker engine answers; default settings get an empty state dir
    (this checkout's real one may hold a recorded instance, which selection honours)."""
    answer = [False]
    monkeypatch.setattr(docker_mod, "engine_answers", lambda *a, **k: answer[0])
    monkeypatch.setattr(docker_mod, "unavailable", lambda *a, **k: None)
    monkeypatch.setattr("testbed.config.default_state_root", lambda: tmp_path)
    return answer


def test_auto_is_native_without_engine_or_urls(engine: list[bool]) -> None:
    assert choose(load_settings({})).name == "native"


def test_auto_is_docker_when_an_engine_answers(engine: list[bool]) -> None:
    engine[0] = True
    assert choose(load_settings({})).name == "docker"


def test_auto_is_external_when_urls_are_set(engine: list[bool]) -> None:
    engine[0] = True
    env = {"E2E_DATABASE_URL": PG, "E2E_REDIS_URL": REDIS}
    assert choose(load_settings(env)).name == "external"


@pytest.mark.parametrize("name", ["native", "docker"])
def test_explicit_backend_wins(engine: list[bool], name: str) -> None:
    assert choose(load_settings({"E2E_BACKEND": name})).name == name


def test_external_needs_both_urls(engine: list[bool]) -> None:
    with pytest.raises(UsageError, match="E2E_REDIS_URL not set"):
        choose(load_settings({"E2E_DATABASE_URL": PG}))


def test_external_guards_before_connecting(engine: list[bool]) -> None:
    env = {"E2E_DATABASE_URL": "postgresql://dev:pw@127.0.0.1:5432/dev", "E2E_REDIS_URL": REDIS}
    with pytest.raises(ForeignTarget, match="5432"):
        choose(load_settings(env))
    env = {"E2E_DATABASE_URL": PG, "E2E_REDIS_URL": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ForeignTarget, match="6379"):
        choose(load_settings(env))


EPS = Endpoints("native", PG, REDIS, "16.15", "8.1.8", 64)


def test_the_recorded_instance_wins_over_its_own_urls(engine: list[bool], tmp_path: Path) -> None:
    # After `eval "$(make env)"` the environment holds this checkout's own URLs: down, status
    # and the next run must still find the native services, not an "external" backend.
    state = tmp_path / "state"
    StateDir(state).prepare(project="p")
    record = Record(backend="native", database_url=PG, redis_url=REDIS)
    Store(state).write(record)
    env = {"E2E_STATE_DIR": str(state), "E2E_DATABASE_URL": PG, "E2E_REDIS_URL": REDIS}
    assert choose(load_settings(env)).name == "native"
    assert choose(load_settings({**env, "DATABASE_URL": PG})).name == "native"
    # Other URLs, even another database on the same server, are the user's choice: external.
    other = {**env, "E2E_REDIS_URL": "redis://127.0.0.1:16999/0"}
    assert choose(load_settings(other)).name == "external"
    other_db = {**env, "E2E_DATABASE_URL": PG.rsplit("/", 1)[0] + "/other_e2e"}
    assert choose(load_settings(other_db)).name == "external"
    # `down` stops this checkout's services whatever the shell says.
    explicit = load_settings({**other, "E2E_BACKEND": "external"})
    assert choose(explicit).name == "external"
    assert choose(explicit, recorded_first=True).name == "native"


class FakeBackend:
    """Records the leases it is handed; `healthy` decides whether ensure() starts."""

    name = "native"

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.leases: list[Lease] = []

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        self.leases.append(lease)
        return EPS, not self.healthy


@pytest.mark.parametrize("healthy", [True, False])
def test_acquire_hands_the_backend_a_lease(monkeypatch: pytest.MonkeyPatch, healthy: bool) -> None:
    fake = FakeBackend(healthy)
    monkeypatch.setattr("testbed.services.lifecycle.choose", lambda settings, **kw: fake)
    hold = acquire(load_settings({}))
    assert (hold.endpoints, hold.started) == (EPS, not healthy)
    assert [lease.kind for lease in fake.leases] == ["run"]
    assert hold.lease.holder is not None
    assert hold.lease.holder.alive()
    acquire(load_settings({}), kind="user")
    assert fake.leases[-1].holder is None
    with pytest.raises(UsageError):
        acquire(load_settings({}), kind="user", holder_pid=1)


def test_status_render_redacts_and_reports_health() -> None:
    eps = Endpoints(
        "docker",
        "postgresql://opsdesk_e2e:opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e",
        REDIS,
        "16.4",
        "8.0.1",
        64,
    )
    text = ServiceStatus("docker", eps, processes=("container a",)).render()
    assert "opsdesk_e2e:***@" in text
    assert "PostgreSQL 16.4" in text
    assert "healthy" in text
    down = ServiceStatus("native", None, problems=("x",)).render()
    assert "not running" in down
    assert "problem:    x" in down


@pytest.mark.parametrize("backend", ["native", "docker"])
@pytest.mark.parametrize(("var", "port"), [("E2E_PG_PORT", "5432"), ("E2E_REDIS_PORT", "6379")])
def test_own_services_never_use_the_dev_ports(
    engine: list[bool], backend: str, var: str, port: str
) -> None:
    with pytest.raises(ForeignTarget, match=f"port {port}"):
        choose(load_settings({"E2E_BACKEND": backend, var: port}))


def test_services_in_use_on_one_backend_are_not_replaced_by_the_other(
    engine: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings({"E2E_BACKEND": "docker"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = ProcessIdentity.of(sleeper.pid)
        assert holder is not None
        StateDir(settings.state_dir).prepare(project=settings.project)
        record = Record(backend="native", project=settings.project)
        record.set_leases([new_lease(RUN, holder)])
        Store(settings.state_dir).write(record)
        monkeypatch.setattr(
            "testbed.services.docker.DockerBackend.ensure",
            lambda self, lease: pytest.fail("the docker backend must not start"),
        )
        with pytest.raises(InUse, match=r"native services are in use by run pid \d+"):
            acquire(settings)
    finally:
        sleeper.kill()
        sleeper.wait()
