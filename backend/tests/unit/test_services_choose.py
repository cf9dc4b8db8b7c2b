"""Backend selection (auto/explicit) and ensure_up's reuse-or-start contract."""

from __future__ import annotations

import pytest

from testbed.config import load_settings
from testbed.errors import ForeignTarget, UsageError
from testbed.services import Endpoints, ServiceStatus, choose, ensure_up
from testbed.services import docker as docker_mod

PG = "postgresql://opsdesk_e2e@127.0.0.1:15433/opsdesk_e2e"
REDIS = "redis://127.0.0.1:16380/0"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Controls whether a fake Docker engine answers."""
    answer = [False]
    monkeypatch.setattr(docker_mod, "engine_answers", lambda *a, **k: answer[0])
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


class FakeBackend:
    """Records calls; `healthy` decides what running() answers."""

    name = "native"

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.calls: list[str] = []

    def up(self) -> Endpoints:
        self.calls.append("up")
        return EPS

    def down(self) -> None:
        self.calls.append("down")

    def running(self) -> Endpoints | None:
        self.calls.append("running")
        return EPS if self.healthy else None

    def status(self) -> ServiceStatus:
        return ServiceStatus(self.name, EPS)

    def reap(self) -> list[str]:
        return []


@pytest.mark.parametrize(
    ("healthy", "started", "calls"),
    [
        (True, False, ["running"]),
        (False, True, ["running", "up"]),
    ],
)
def test_ensure_up_reuses_or_starts(
    monkeypatch: pytest.MonkeyPatch, healthy: bool, started: bool, calls: list[str]
) -> None:
    fake = FakeBackend(healthy)
    monkeypatch.setattr("testbed.services.choose", lambda settings: fake)
    assert ensure_up(load_settings({})) == (EPS, started)
    assert fake.calls == calls


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
