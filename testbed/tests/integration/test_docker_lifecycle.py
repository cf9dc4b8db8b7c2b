"""The docker backend against a real engine: up, reuse, down, a killed run's containers, port
conflicts, two checkouts, and `auto` when the engine cannot provide.

Needs a Docker engine >= 25 with Compose v2 and the images (official or `make images`). Outside
CI a missing engine skips these tests with the reason; under CI=true it fails them
(`make integration` then provides the engine: scripts/with-docker.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import low_free_port

from testbed.config import Settings, default_state_root, load_settings
from testbed.errors import PortConflict, ServicesUnavailable
from testbed.services.containers import engine_objects
from testbed.services.docker import DockerBackend, unavailable
from testbed.services.engine import engine_problem
from testbed.services.images import PG_VERSION, VALKEY_VERSION
from testbed.services.lifecycle import acquire, resolve_backend_name
from testbed.services.ownership import USER, new_lease
from testbed.services.ports import is_free

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHILD = """
import json, sys, time
from testbed.config import load_settings
from testbed.services.lifecycle import ensure_up
eps, started = ensure_up(load_settings({}, **json.loads(sys.argv[1])))
print("ready", started, flush=True)
time.sleep(300)
"""


def _require_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs a Docker engine for these tests: {problem}")
    pytest.skip(f"{problem} (make integration under CI=true provides one)")


def clean_env() -> dict[str, str]:
    """The environment without E2E_* settings (each test brings its own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings of this test's own: docker, low random ports, own compose project."""
    _require_engine()
    taken: set[int] = set()
    name = f"it-e2e-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "backend": "docker",
        "pg_port": low_free_port(taken),
        "redis_port": low_free_port(taken),
        "state_dir": str(default_state_root() / name),
        "project": name,
        "wait_timeout": 60,
    }
    why = unavailable(load_settings(clean_env(), **values), fetch=True)
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the docker backend cannot run here: {why}")
        pytest.skip(why)
    return values


@pytest.fixture
def docker(overrides: dict[str, Any]) -> Iterator[DockerBackend]:
    """A docker backend of this test's own, always taken down afterwards."""
    backend = DockerBackend(load_settings(clean_env(), **overrides), say=lambda message: None)
    yield backend
    backend.down()


def assert_nothing_left(settings: Settings) -> None:
    assert engine_objects(settings.project) == []
    assert is_free(settings.pg_port)
    assert is_free(settings.redis_port)


def test_up_reuse_release(docker: DockerBackend) -> None:
    s = docker.settings
    first = acquire(s)
    eps, started = first.endpoints, first.started
    assert started is True
    # Docker and native run the same server versions.
    assert (eps.backend, eps.pg_version, eps.redis_version) == (
        "docker",
        PG_VERSION,
        VALKEY_VERSION,
    )
    rows = docker.containers()
    assert {r.service for r in rows} == {"postgres-e2e", "redis-e2e"}
    # The labels name the checkout and the state dir whose record says who uses them.
    assert all((r.checkout, r.state_dir) == (str(s.checkout), str(s.state_dir)) for r in rows)
    # And the filesystem view that path is in: a host's reap leaves a CI job's containers alone.
    assert {r.mount_ns for r in rows} == {os.readlink("/proc/self/ns/mnt")}
    record = docker.store.read()
    assert [x.holder.pid for x in record.leases() if x.holder] == [os.getpid()]
    fmt = '{{index .Labels "dev.testbed.state-dir"}}'
    net = subprocess.run(
        ["docker", "network", "inspect", "--format", fmt, f"{s.project}_default"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert net.stdout.strip() == str(s.state_dir)  # reap finds a network left bare
    assert docker.status().healthy
    second = acquire(s)  # another run: reuses them
    assert (second.endpoints, second.started) == (eps, False)
    # In use: not reaped (reap may remove other checkouts' leftovers on a shared machine).
    reaped = docker.reap()
    assert not [item for item in reaped if s.project in item or str(s.state_dir) in item], reaped
    assert first.release() is False  # the other run still uses them
    assert docker.running() is not None
    assert second.release() is True  # the last lease takes them down
    assert_nothing_left(s)
    assert not s.state_dir.exists()
    assert docker.down() == "no services of this checkout"  # idempotent


def run_and_kill(overrides: dict[str, Any], docker: DockerBackend) -> list[str]:
    """Start the services from a child run and SIGKILL it; return the container ids."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(overrides)],
        stdout=subprocess.PIPE,
        env=clean_env(),
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready True"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    rows = docker.containers()
    assert [r.state for r in rows] == ["running", "running"], "containers outlive a killed run"
    assert [x.holder.pid for x in docker.store.read().leases() if x.holder] == [child.pid]
    return [r.id for r in rows]


def test_reap_removes_a_killed_runs_containers_and_network(
    overrides: dict[str, Any], docker: DockerBackend
) -> None:
    run_and_kill(overrides, docker)
    assert docker.status().orphaned
    removed = docker.reap()
    assert any("is dead" in item for item in removed), removed
    assert_nothing_left(docker.settings)


def test_next_run_takes_over_a_killed_runs_containers(
    overrides: dict[str, Any], docker: DockerBackend
) -> None:
    old = run_and_kill(overrides, docker)
    hold = acquire(docker.settings)
    assert hold.started is False  # healthy: reused, not restarted
    assert {r.id for r in docker.containers()} == set(old)
    assert [x.id for x in docker.store.read().leases()] == [hold.lease.id]  # the dead one went
    assert hold.release() is True  # and this run's end takes them down
    assert_nothing_left(docker.settings)


def test_port_conflict_names_the_holder_and_leaves_nothing(docker: DockerBackend) -> None:
    s = docker.settings
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", s.redis_port))
        holder.listen()
        with pytest.raises(PortConflict) as caught:
            docker.up()
    text = str(caught.value)
    assert f"port {s.redis_port} for Valkey is held by pid {os.getpid()}" in text, text
    assert "E2E_REDIS_PORT" in text
    assert_nothing_left(s)


def test_two_checkouts_same_ports_refused_own_ports_side_by_side(
    overrides: dict[str, Any], docker: DockerBackend, tmp_path: Path
) -> None:
    first = docker
    first.up()
    other_name = f"it-e2e-{uuid.uuid4().hex[:8]}"
    shutil.copy(first.settings.compose_file, tmp_path / first.settings.compose_file.name)
    # Another checkout has a state dir of its own (its passwords live there).
    other_state = str(default_state_root() / other_name)
    same_ports = {**overrides, "project": other_name, "checkout": str(tmp_path)}
    same_ports["state_dir"] = other_state
    second = DockerBackend(load_settings(clean_env(), **same_ports), say=lambda m: None)
    with pytest.raises(PortConflict) as caught:
        second.up()
    text = str(caught.value)
    assert f"port {overrides['pg_port']} for PostgreSQL is held by the testbed containers" in text
    assert f"compose project {first.settings.project}" in text
    assert f"run `python -m testbed down` in {first.settings.checkout}" in text
    assert engine_objects(other_name) == []
    # On ports of its own, the other checkout runs next to the first one.
    taken = {overrides["pg_port"], overrides["redis_port"]}
    own = {**same_ports, "pg_port": low_free_port(taken), "redis_port": low_free_port(taken)}
    second = DockerBackend(load_settings(clean_env(), **own), say=lambda m: None)
    try:
        assert second.ensure(new_lease(USER, None))[1] is True
        assert first.running() is not None
        assert second.running() is not None
    finally:
        second.down()
    assert engine_objects(other_name) == []


def test_auto_falls_back_when_the_engine_cannot_provide(
    overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "registry.invalid/opsdesk/postgres:16.15"  # .invalid never resolves
    env = {**clean_env(), "E2E_PG_IMAGE": missing}
    auto = load_settings(env, **{**overrides, "backend": "auto"})
    assert resolve_backend_name(auto, starting=True) == "native"
    line = capsys.readouterr().err
    assert line.startswith(f"auto: using the native backend: image {missing} is missing and ")
    assert line.count("\n") == 1
    explicit = load_settings(env, **overrides)
    with pytest.raises(ServicesUnavailable, match=f"image {missing} is missing"):
        DockerBackend(explicit, say=lambda m: None).up()
    assert engine_objects(explicit.project) == []


def test_a_state_dir_with_a_newline_and_a_tab_in_its_name(overrides: dict[str, Any]) -> None:
    """`docker ps` lists a container per line, its columns split by tabs: a label holding such a
    path (the state dir's, the checkout's) came out split, and status called healthy services
    down. Each path is one column, as it was labelled."""
    overrides["state_dir"] = f"{overrides['state_dir']} new\nline\tand tab"
    docker = DockerBackend(load_settings(clean_env(), **overrides), say=lambda message: None)
    try:
        hold = acquire(docker.settings)
        rows = docker.containers()
        assert sorted(r.service for r in rows) == ["postgres-e2e", "redis-e2e"]
        assert {r.state_dir for r in rows} == {overrides["state_dir"]}
        assert docker.status().healthy
        assert hold.release() is True
    finally:
        docker.down()
    assert_nothing_left(docker.settings)
