"""Integration fixtures: native services on spare ports with their own state dir."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from testbed.config import Settings, default_state_root, load_settings
from testbed.services.native import NativeBackend
from testbed.services.portlock import lock_path

# A developer may have `make up` (5433/6380) and dev databases (5432/6379) running: never these.
RESERVED = {5432, 5433, 6379, 6380}


def free_port() -> int:
    """A port nothing listens on right now, never one of the reserved ones."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED:
            return port


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
