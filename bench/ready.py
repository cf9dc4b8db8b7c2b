"""Services ready: native cold (initdb), native from the cached template, reuse of running services,
and the docker backend next to them (bench/compose.py).

Every figure is testbed's own code path (`ensure_up(settings, owner="user")` /
`ensure_up(settings)`) timed until it returns, which is after the real `SELECT 1` and `PING`
health gates. Binaries come from testbed's cache in every case (downloading them is a
once-per-machine cost, not a start cost).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.context import Context, log
from bench.report import Figure, Target
from bench.services import bench_settings

NAME = "ready"


def _binaries(state_dir: Path) -> tuple[Path, Path, str]:
    """Resolve (and if needed fetch) the binaries once, outside any timing."""
    from testbed.services.binaries import find_postgres, find_valkey

    settings = bench_settings(state_dir=state_dir)
    pg = find_postgres(settings, log)
    vk = find_valkey(settings, log)
    return pg.bindir, vk.path, f"{pg.source}; {vk.source}"


def _fresh_cache(parent: Path) -> Path:
    """An empty cache dir on the same storage as testbed's default cache (no template yet)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent, prefix="opsdesk-e2e-bench-cold-"))
    path.chmod(0o755)  # the unprivileged server account must traverse it
    return path


def _timed_up(settings: Any) -> float:
    from testbed.services.lifecycle import ensure_up

    t0 = time.perf_counter()
    ensure_up(settings, owner="user")  # as `make up`: kept until _down()
    return time.perf_counter() - t0


def _down(settings: Any) -> None:
    from testbed.services.lifecycle import choose

    choose(settings).down()


def run(ctx: Context) -> list[Figure]:
    """Time cold starts, template starts and reuse; then the same on docker compose."""
    from testbed.services.lifecycle import ensure_up

    state_dir: Path = ctx.extra["state_dir"]
    cold_reps, tmpl_reps, reuse_reps = (1, 2, 5) if ctx.quick else (3, 5, 30)
    pg_bin, vk_bin, source = _binaries(state_dir)
    default_cache = bench_settings(state_dir=state_dir).cache_dir
    cold: list[float] = []
    template: list[float] = []
    reuse: list[float] = []
    caches: list[Path] = []
    settings: Any = None
    try:
        for rep in range(cold_reps):
            cache = _fresh_cache(default_cache.parent)
            caches.append(cache)
            settings = bench_settings(
                state_dir=state_dir, cache_dir=cache, pg_bin=pg_bin, valkey_bin=vk_bin
            )
            cold.append(_timed_up(settings))
            _down(settings)
            log(f"  cold start {rep + 1}: {cold[-1]:.3f} s")
        # The last cold run left its template in its cache: the "make up" path from now on.
        for rep in range(tmpl_reps):
            template.append(_timed_up(settings))
            _down(settings)
            log(f"  template start {rep + 1}: {template[-1]:.3f} s")
        _timed_up(settings)
        for _ in range(reuse_reps):
            t0 = time.perf_counter()
            _eps, started = ensure_up(settings)
            reuse.append((time.perf_counter() - t0) * 1e3)
            if started:
                raise RuntimeError("ensure_up started services it should have reused")
        log(f"  reuse (ensure_up, healthy): median {sorted(reuse)[len(reuse) // 2]:.2f} ms")
    finally:
        if settings is not None:
            _down(settings)
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    storage_note = (
        f"State dir on {state_dir.parent}, template cache in {default_cache.parent} "
        f"(same storage as testbed's defaults); binaries: {source}."
    )
    from bench import compose  # the docker figures, after native's, in the same run

    return [
        Figure(
            "ready.cold",
            NAME,
            "services ready: native cold (initdb)",
            "s",
            cold,
            reference="ready.cold",
            targets=[Target("value", "<=", 2.0, "≤ 2 s")],
            note=f"ensure_up() (as make up) with an empty cache: initdb + CREATE DATABASE into "
            f"the template, copy, start both servers, health gates. {storage_note}",
            why="initdb dominates; it runs once per PostgreSQL version and machine, so only "
            "the first ever `make up` pays it.",
        ),
        Figure(
            "ready.template",
            NAME,
            "services ready: native from cached template",
            "s",
            template,
            reference="ready.cold",
            targets=[Target("value", "<=", 0.5, "≤ 0.5 s")],
            note="ensure_up() (as make up) with the template cached: cp -a of the template data "
            "dir, start both servers, health gates (the normal `make up`/`make e2e`).",
            why="start-up is copy + postmaster start + first TCP SELECT 1; a smaller template "
            "(fewer databases) or starting Valkey and PostgreSQL concurrently would cut it.",
        ),
        Figure(
            "ready.reuse",
            NAME,
            "services ready: reuse running (ensure_up)",
            "ms",
            reuse,
            reference="ready.cold",
            targets=[Target("value", "<=", 50.0, "≤ 50 ms")],
            note="ensure_up(settings) when our services are healthy: state file + pid checks "
            "+ real SELECT 1 and PING.",
            why="reuse opens a fresh connection per health gate; caching a pid/port check "
            "before the health query would remove most of it.",
        ),
        *compose.figures(state_dir.with_name(state_dir.name + "-docker"), ctx.quick),
    ]
