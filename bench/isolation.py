"""Per-test database isolation overhead: testbed vs drop_all/create_all vs pytest-postgresql.

Each contender is a real pytest run (subprocess) of the same generated suite; the only difference
is the `db` fixture. Overhead = (wall(suite) - wall(baseline suite)) / tests, where the baseline
runs the same bodies on one shared connection with no isolation at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from bench.context import Context, log
from bench.isolation_suite import PLUGINS, write_suite
from bench.report import Figure, Target, median

NAME = "isolation"
TESTS = 200
ORDER = ("baseline", "default", "committed", "plugin", "naive", "pytest_postgresql")
LABELS = {
    "default": "isolation: testbed default (savepoint rollback)",
    "committed": "isolation: testbed committed (TRUNCATE)",
    "plugin": "isolation: testbed plugin fixture e2e_postgres_db",
    "naive": "isolation: naive drop_all + create_all",
    "pytest_postgresql": "isolation: pytest-postgresql per-test database",
}
REF = "isolation.pytest_postgresql"
SLOW = ("naive", "pytest_postgresql")


def run_suite(ctx: Context, contender: str, rep: int) -> list[float]:
    """One pytest run of the contender's suite; returns per-test wall times (s), warm-up dropped."""
    root = write_suite(
        ctx.workdir / f"iso_{contender}",
        contender,
        TESTS,
        conftest_override=ctx.extra.get(f"conftest.{contender}"),
    )
    out = root / f"times_{rep}.json"
    env = {
        **os.environ,
        "BENCH_DB_URL": ctx.database_url,
        "BENCH_OUT": str(out),
        "BENCH_SCHEMA": f"bench_iso_{contender}",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Only the plugin contender loads testbed: point it at the bench's services.
        "E2E_BACKEND": "external",
        "E2E_DATABASE_URL": ctx.database_url,
        "E2E_REDIS_URL": ctx.redis_url,
        "E2E_REQUIRE_SERVICES": "1",
        "E2E_SEED": "1",
    }
    cmd = [
        ctx.python,
        "-m",
        "pytest",
        "-q",
        "-x",
        *PLUGINS[contender],
        "-c",
        str(root / "pytest.ini"),
        "--rootdir",
        str(root),
        str(root),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-2500:]
        raise RuntimeError(f"{contender} suite failed (exit {proc.returncode}):\n{tail}")
    data = json.loads(out.read_text())
    marker = out.with_name(out.name + ".harness")
    if marker.exists():
        ctx.extra[f"harness.{contender}"] = marker.read_text().strip()
    times = data["times"][1:]  # test_0000 paid the session fixtures
    if len(times) != TESTS:
        raise RuntimeError(f"{contender}: expected {TESTS} measured tests, got {len(times)}")
    suite = times[-1][2] - times[0][1]
    log(
        f"  {contender:<18} run {rep + 1}: suite {suite * 1e3:8.1f} ms "
        f"({suite / TESTS * 1e3:.3f} ms/test; process {time.perf_counter() - t0:.1f} s)"
    )
    return [end - start for _name, start, end in times]


def run(ctx: Context) -> list[Figure]:
    """Run every contender's suite (interleaved, reps times) and derive the overhead figures."""
    reps = 1 if ctx.quick else 5
    slow_reps = 1 if ctx.quick else 3  # naive and pytest-postgresql: 30+ ms/test, noise is small
    per_test: dict[str, list[list[float]]] = {c: [] for c in ORDER}
    for rep in range(reps):
        for contender in ORDER:
            if contender in SLOW and rep >= slow_reps:
                continue
            per_test[contender].append(run_suite(ctx, contender, rep))
    # Runs are interleaved and paired with the baseline run of the same round, so load from
    # other processes on this shared machine drifts out of the difference.
    base = per_test["baseline"]
    figures = [
        Figure(
            "isolation.baseline",
            NAME,
            "isolation: baseline test body, no isolation (per test)",
            "ms",
            [t * 1e3 for run in base for t in run],
            reference="isolation.baseline",
            note=f"The same {TESTS} test bodies on one shared connection with no isolation; "
            f"subtracted from every contender, round by round ({reps} pytest runs).",
        ),
    ]
    for contender in ORDER[1:]:
        runs = per_test[contender]
        samples = [(t - median(base[r])) * 1e3 for r, run in enumerate(runs) for t in run]
        overheads = [(sum(run) - sum(base[r])) / TESTS for r, run in enumerate(runs)]
        overhead_ms = median(overheads) * 1e3
        figures.append(
            Figure(
                f"isolation.{contender}",
                NAME,
                LABELS[contender],
                "ms",
                samples,
                value=overhead_ms,
                reference=REF,
                seconds=overhead_ms / 1e3,
            )
        )
    by = {f.key: f for f in figures}
    by["isolation.default"].targets = [
        Target("value", "<=", 1.0, "≤ 1 ms/test"),
        Target("ratio", ">=", 100, "≥ 100\u00d7 less than pytest-postgresql"),
    ]
    by["isolation.committed"].targets = [Target("value", "<=", 20.0, "≤ 20 ms/test")]
    source = {
        "testbed.isolation": "testbed's own code (testbed.isolation)",
        "replica": "an exact replica of testbed.isolation (it was not importable)",
    }
    by["isolation.default"].note = (
        "rollback_session: SQLAlchemy's join-a-Session-into-an-external-transaction recipe "
        "(join_transaction_mode='create_savepoint') on a WorkerDatabase schema; ran "
        + source.get(ctx.extra.get("harness.default", ""), "?")
        + "."
    )
    by["isolation.committed"].note = (
        "committed_session: real commits, then one TRUNCATE ... RESTART IDENTITY CASCADE of every "
        "opsdesk table of the worker schema; ran "
        + source.get(ctx.extra.get("harness.committed", ""), "?")
        + "."
    )
    by["isolation.plugin"].note = (
        "The real `e2e_postgres_db` fixture with the whole testbed plugin loaded (its hooks, "
        "per-test seeding and checks): what a test of the E2E suite pays; for context."
    )
    by["isolation.naive"].note = "Base.metadata.create_all before and drop_all after every test."
    by["isolation.pytest_postgresql"].note = (
        "pytest-postgresql 7.0.2's own `postgresql` fixture over `postgresql_noproc` against the "
        "same server, in a real pytest run: CREATE DATABASE ... TEMPLATE (tables loaded into the "
        "template once) and DROP DATABASE per test."
    )
    by["isolation.default"].why = (
        "Above 1 ms means more than BEGIN + SAVEPOINT + ROLLBACK per test; look for extra round "
        "trips in the fixture (pool pre-ping, SET search_path, Redis FLUSHDB) and drop them."
    )
    by["isolation.committed"].why = (
        "TRUNCATE of every table costs a catalog lock and a relfilenode swap per table; truncate "
        "only the tables the test wrote (track via after_flush) to close the gap."
    )
    note = (
        "judged = median over rounds of (suite wall - same round's baseline suite wall) / tests; "
        "median/p95 are per-test wall minus the same round's median baseline per-test wall."
    )
    for contender in ORDER[1:]:
        by[f"isolation.{contender}"].note += " " + note
    return figures
