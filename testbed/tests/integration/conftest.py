"""Integration fixtures: native services on spare ports with their own state dir."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator

import pytest

from testbed.config import Settings, default_state_root, load_settings
from testbed.services.native import NativeBackend
from testbed.services.portlock import lock_path
from testbed.services.ports import is_free

# A developer may have `make up` (5433/6380) and dev databases (5432/6379) running: never these.
RESERVED = {5432, 5433, 6379, 6380}
# Below the ephemeral range: a client socket in TIME_WAIT there cannot hold a server's port.
LOW_PORTS = range(20000, 32000)


def worker_ports() -> range:
    """This xdist worker's slice of LOW_PORTS (all of it without xdist): `make integration`
    runs test files side by side, and a port one worker picks is never another's."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    span = len(LOW_PORTS) // count
    return range(LOW_PORTS.start + index * span, LOW_PORTS.start + (index + 1) * span)


def low_free_port(taken: set[int]) -> int:
    """A free port of this worker's slice, not in taken (to which it is added)."""
    ports = worker_ports()
    while True:
        port = random.choice(ports)
        if port not in RESERVED and port not in taken and is_free(port):
            taken.add(port)
            return port


def free_port() -> int:
    """A port nothing listens on right now, never one of the reserved ones."""
    return low_free_port(set())


@pytest.fixture
def settings() -> Settings:
    """Native-backend settings on spare ports, with a state dir of this test's own."""
    name = f"opsdesk-e2e-it-{uuid.uuid4().hex[:8]}"
    # Under /dev/shm (or /tmp), not tmp_path: the unprivileged server user must traverse it.
    return load_settings(
        {k: v for k, v in os.environ.items() if not k.startswith("E2E_")},
        backend="native",
        pg_port=free_port(),
        redis_port=free_port(),
        state_dir=default_state_root() / name,
        project=name,
        wait_timeout=20,
    )


@pytest.fixture
def native(settings: Settings) -> Iterator[NativeBackend]:
    """A native backend that is always taken down after the test."""
    backend = NativeBackend(settings, say=lambda message: None)
    yield backend
    backend.down()
    lock = settings.cache_dir / "locks" / f"{settings.project}.lock"
    lock.unlink(missing_ok=True)
    for port in (settings.pg_port, settings.redis_port):
        lock_path(port).unlink(missing_ok=True)  # random ports: nobody else waits on these


@pytest.fixture(autouse=True)
def default_command_words() -> Iterator[None]:
    """Messages name testbed's own CLI in these in-process tests, whatever e2e_command the outer
    run configured (this repository's suites say `make`), and go to stderr, where capsys reads
    them, not to the outer run's terminal."""
    from testbed import report

    previous = report.set_command(report.DEFAULT_COMMAND)
    sink = report.set_sink(None)
    yield
    report.set_sink(sink)
    report.set_command(previous)


# Side by side in groups (`make integration`: --dist loadgroup), longest first: the shard checks
# collect the E2E suite many times (CPU), the docker lifecycle waits on the engine. Every file
# that starts native services is one group, on one worker: `reap` also takes down what dead
# runs left in the user's base, and a test that leaves a killed run there for its own reap to
# find must not have it taken by another worker's.
GROUPS = {"test_shard.py": "shard", "test_docker_lifecycle.py": "docker"}
LONGEST_FIRST = ("shard", "docker", "native")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group each test (see GROUPS: native by default) and order the groups longest first."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(GROUPS.get(item.path.name, "native")))
    items.sort(key=lambda item: LONGEST_FIRST.index(GROUPS.get(item.path.name, "native")))
