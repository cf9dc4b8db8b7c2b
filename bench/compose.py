"""Services ready on the docker backend, next to native in the same run: `compose up --wait` to
healthy with the images present, and reuse of running containers.

testbed's own code path is timed (`DockerBackend.ensure()` / `ensure_up()`), so the figures
include the real SELECT 1 and PING health gates, as the native ones do.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from bench.context import log
from bench.report import Figure, Target
from bench.services import bench_settings

NAME = "ready"


def _settings(state_dir: Path) -> Any:
    # A compose project of the bench's own: never a checkout's `make up` containers.
    project = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    return bench_settings(state_dir=state_dir, backend="docker", project=project)


def measure(state_dir: Path, quick: bool) -> tuple[list[float], list[float], str]:
    """(up seconds, reuse milliseconds, skip reason): the reason is set when docker can't run."""
    from testbed.services.docker import DockerBackend, unavailable
    from testbed.services.lifecycle import ensure_up
    from testbed.services.ownership import USER, new_lease

    settings = _settings(state_dir)
    why = unavailable(settings, fetch=True)
    if why is not None:
        return [], [], why
    up_reps, reuse_reps = (1, 5) if quick else (5, 30)
    backend = DockerBackend(settings, say=log)
    up: list[float] = []
    reuse: list[float] = []
    try:
        for rep in range(up_reps):
            t0 = time.perf_counter()
            _eps, started = backend.ensure(new_lease(USER, None))
            up.append(time.perf_counter() - t0)
            assert started, "compose up reused containers it should have started"
            log(f"  docker compose up to healthy {rep + 1}: {up[-1]:.3f} s")
            if rep + 1 < up_reps:
                backend.down()
        for _ in range(reuse_reps):
            t0 = time.perf_counter()
            _eps, started = ensure_up(settings, owner="user")
            reuse.append((time.perf_counter() - t0) * 1e3)
            if started:
                raise RuntimeError("ensure_up started containers it should have reused")
        log(f"  docker reuse (ensure_up, healthy): median {sorted(reuse)[len(reuse) // 2]:.1f} ms")
    finally:
        backend.down()
    return up, reuse, ""


def figures(state_dir: Path, quick: bool) -> list[Figure]:
    """The two docker figures, referenced to the native ones of the same run."""
    up, reuse, why = measure(state_dir, quick)
    skipped = f"docker compose can't run here ({why})" if why else ""
    return [
        Figure(
            "ready.docker",
            NAME,
            "services ready: docker compose up --wait (images present)",
            "s",
            up,
            reference="ready.template",
            targets=[Target("value", "<=", 10.0, "≤ 10 s")],
            note="DockerBackend.ensure(): `docker compose up -d --wait` until both health "
            "checks pass, then testbed's SELECT 1 and PING; `down -v` between repetitions. "
            "The ratio is against the native start from the cached template, in this run.",
            why="the container start, PostgreSQL's initdb inside the entrypoint and the "
            "health-check interval (start_interval 250 ms) dominate.",
            skipped=skipped,
        ),
        Figure(
            "ready.docker_reuse",
            NAME,
            "services ready: docker reuse running (ensure_up)",
            "ms",
            reuse,
            reference="ready.reuse",
            targets=[Target("value", "<=", 500.0, "≤ 500 ms")],
            note="ensure_up(settings) when our containers are healthy: `docker ps` of the "
            "project, owner and port check, real SELECT 1 and PING. The ratio is against "
            "the native reuse, in this run.",
            why="each docker CLI call costs tens of ms; the engine API over the socket "
            "would be faster than the CLI.",
            skipped=skipped,
        ),
    ]
