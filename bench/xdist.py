"""xdist scaling of the real E2E suite (-n 1, 2, 4) and the per-worker setup cost (schema + tables).

The suite runs as users run it (`pytest backend/tests/e2e -n N`), pointed at the bench's services
through testbed's external backend (E2E_DATABASE_URL / E2E_REDIS_URL), so no run starts or stops
servers of its own. Wall time is the whole pytest process: start-up, collection, workers, tests.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.context import Context, log
from bench.report import Figure, Target

NAME = "xdist"
WORKERS = (1, 2, 4)
_SUMMARY = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


def suite_env(ctx: Context) -> dict[str, str]:
    """Environment of an E2E run against the bench's services (none of the caller's E2E_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    env.update(
        E2E_BACKEND="external",
        E2E_DATABASE_URL=ctx.database_url,
        E2E_REDIS_URL=ctx.redis_url,
        E2E_REQUIRE_SERVICES="1",  # a skip would make every speed-up meaningless
        E2E_SEED="1",  # the same data in every run
    )
    return env


def test_seconds(junit: Path) -> float:
    """The sum of the tests' own times (setup + call + teardown) in a JUnit XML report."""
    report = ET.parse(junit)  # noqa: S314 - our own pytest's report, in a private temp dir
    return sum(float(case.get("time", 0)) for case in report.iter("testcase"))


def run_suite(ctx: Context, workers: int) -> tuple[float, str, float]:
    """One run of the real E2E suite at -n workers: (wall seconds, pytest's summary, the sum of
    its tests' own times from its JUnit report)."""
    junit = Path(tempfile.mkdtemp(prefix="bench-xdist-")) / "junit.xml"
    cmd = [
        ctx.suite_python,
        "-m",
        "pytest",
        "tests/e2e",
        "-q",
        "-p",
        "no:randomly",
        "-n",
        str(workers),
        "--dist",
        "loadgroup",  # as scripts/e2e.sh: the stdio tests share one server on one worker
        f"--junitxml={junit}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ctx.backend_dir, env=suite_env(ctx), capture_output=True, text=True, timeout=600
    )
    wall = time.perf_counter() - t0
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    # Exit 1 = some tests failed: the run still took that long; the note reports the failures.
    if proc.returncode not in (0, 1):
        raise RuntimeError(
            f"E2E suite at -n {workers} did not run (exit {proc.returncode}): "
            f"{tail}\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    if proc.returncode == 1:
        failed = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        ctx.extra.setdefault("xdist.failures", set()).update(failed)
        log(f"  -n {workers}: {tail}; failing: {'; '.join(failed)[:500]}")
    tests = test_seconds(junit)
    junit.unlink()
    junit.parent.rmdir()
    return wall, tail, tests


def worker_setup(ctx: Context, reps: int) -> list[float]:
    """opsdesk.db.create_schema on a fresh schema, timed (ms); the engine is connected before."""
    from opsdesk import db

    out = []
    for i in range(reps):
        schema = f"bench_setup_{os.getpid()}_{i}"
        engine = db.make_engine(ctx.database_url, schema=schema)
        try:
            with engine.connect():
                pass  # pool warm: connecting is not part of creating the schema
            t0 = time.perf_counter()
            db.create_schema(engine, schema)
            out.append((time.perf_counter() - t0) * 1e3)
            db.drop_schema(engine, schema)
        finally:
            engine.dispose()
    return out


def run(ctx: Context) -> list[Figure]:
    """Wall time of the E2E suite per worker count, speed-up vs -n 1, and per-worker setup."""
    reps = 1 if ctx.quick else 3
    walls: dict[int, list[float]] = {n: [] for n in WORKERS}
    tests_n1: list[float] = []  # the tests' own seconds in each -n 1 run
    summary = ""
    # Warm-up: a collection-only run compiles every module, so no measured run pays for it.
    subprocess.run(
        [ctx.suite_python, "-m", "pytest", "tests/e2e", "-q", "--collect-only"],
        cwd=ctx.backend_dir,
        env=suite_env(ctx),
        capture_output=True,
        timeout=300,
    )
    for rep in range(reps):
        for n in WORKERS:
            if n == 4 and rep > 0:
                continue  # -n 4 on 2 cores is for context; its runs are the slowest
            wall, summary, tests = run_suite(ctx, n)
            walls[n].append(wall)
            if n == 1:
                tests_n1.append(tests)
            log(f"  -n {n} run {rep + 1}: {wall:.2f} s ({summary})")
    counts = dict((kind, int(num)) for num, kind in _SUMMARY.findall(summary))
    setup = worker_setup(ctx, 5 if ctx.quick else 9)
    figures = []
    for n in WORKERS:
        fig = Figure(
            f"xdist.n{n}",
            NAME,
            f"E2E suite wall, -n {n}",
            "s",
            walls[n],
            reference="xdist.n1",
            note=f"pytest tests/e2e -n {n} ({summary}); whole process wall, median of {reps}.",
        )
        figures.append(fig)
    figures[1].targets = [Target("ratio", ">=", 1.6, "≥ 1.6\u00d7 vs -n 1")]
    # Amdahl on the -n 1 runs: what is not the tests' own time (interpreter, plugins, app
    # imports, collection, schema, exit) each -n 2 worker pays again, so it weighs on the ratio.
    wall1, tests1 = statistics.median(walls[1]), statistics.median(tests_n1)
    fixed = max(wall1 - tests1, 0.0)
    estimate = wall1 / (fixed + tests1 / 2)
    figures[0].note += (
        " Of its wall, the tests' own times (JUnit, setup + call + teardown) sum to "
        f"{tests1:.2f} s; the other {fixed:.2f} s is start-up, collection, schema and exit. "
        f"The same fixed part plus half the test time would be {fixed + tests1 / 2:.2f} s at "
        f"-n 2 ({estimate:.2f}\u00d7): an estimate, not a bound (at -n 2 some of the fixed part "
        "overlaps the other worker's tests)."
    )
    figures[1].why = (
        f"At -n 1, {fixed:.2f} s of the {wall1:.2f} s is not test time: the controller and the "
        "worker start Python, load the plugins, import the app (the MCP SDK alone ~1 s of CPU) "
        "and collect the suite, and each -n 2 worker pays that again, at the same time, on the "
        "same 2 cores as PostgreSQL and Valkey (see the -n 1 note for the estimate). A larger "
        "suite, or cheaper imports in every worker, raise the ratio; so does a quieter machine "
        "(see the load average)."
    )
    figures.append(
        Figure(
            "xdist.worker_setup",
            NAME,
            "per-worker setup: create_schema (schema + tables)",
            "ms",
            setup,
            reference="xdist.worker_setup",
            targets=[Target("value", "<=", 150.0, "≤ 150 ms")],
            note="opsdesk.db.create_schema on a fresh schema over a connected engine "
            f"({len(setup)} runs): CREATE SCHEMA + every table, index and trigger in one "
            "transaction.",
            why="DDL for every table and index in one transaction; cloning a prepared schema "
            "(CREATE TABLE ... LIKE, or a template database per run) would cut it.",
        )
    )
    failures = sorted(ctx.extra.get("xdist.failures", ()))
    if failures:
        figures[0].note += (
            f" Some runs had failing tests (timed anyway, not the bench's to fix): "
            f"{'; '.join(failures)[:600]}."
        )
    if counts.get("passed", 0) == 0:
        raise RuntimeError(f"the E2E suite ran no passing test ({summary})")
    return figures
