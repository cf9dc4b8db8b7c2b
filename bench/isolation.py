"""Per-test database isolation overhead: testbed vs drop_all/create_all vs pytest-postgresql.

Each contender is a real pytest run (subprocess) of the same generated suite; the only difference
is the `db` fixture. Every isolated test runs right after a baseline test (the same body on one
shared connection, no isolation) in the same process, and pytest's own phase durations give the
figure: the isolation costs what an isolated test's setup + teardown take beyond its baseline
neighbour's, median over the run's pairs. The test bodies' difference (a savepoint instead of a
commit, a fresh database's cold catalog) is reported next to it. Runs of the contenders are
interleaved round by round, and each figure is the median of its rounds with their min-max, so
a busy machine widens the spread instead of moving the figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass

from bench.context import Context, log
from bench.isolation_suite import PLUGINS, write_suite
from bench.report import Figure, Target, fmt, median

NAME = "isolation"
# Pairs per round: enough that a round's median holds still; the slow contenders cost 30+ ms each.
TESTS = {"default": 200, "committed": 100, "plugin": 200, "naive": 40, "pytest_postgresql": 40}
CONTENDERS = ("default", "committed", "plugin", "naive", "pytest_postgresql")
LABELS = {
    "default": "isolation: testbed default (savepoint rollback)",
    "committed": "isolation: testbed committed (TRUNCATE)",
    "plugin": "isolation: testbed plugin fixture e2e_postgres_db",
    "naive": "isolation: naive drop_all + create_all",
    "pytest_postgresql": "isolation: pytest-postgresql per-test database",
}
REF = "isolation.pytest_postgresql"


@dataclass(frozen=True)
class Round:
    """One pytest run of a contender: medians over its (baseline, isolated) pairs, in ms."""

    isolation: float  # isolated setup + teardown minus the baseline's
    body: float  # isolated test body minus the baseline body
    baseline: float  # the baseline test body


def round_of(times: dict[str, dict[str, float]], tests: int) -> Round:
    """Reduce one run's phase durations (seconds) to its per-pair medians (ms)."""
    # Pair 0000 pays the session fixtures (schemas, template database): not measured.
    names = [(f"test_{i:04d}_base", f"test_{i:04d}_iso") for i in range(1, tests + 1)]

    def around(name: str) -> float:
        return times[name]["setup"] + times[name]["teardown"]

    return Round(
        isolation=median([(around(iso) - around(base)) * 1e3 for base, iso in names]),
        body=median([(times[iso]["call"] - times[base]["call"]) * 1e3 for base, iso in names]),
        baseline=median([times[base]["call"] * 1e3 for base, _ in names]),
    )


def run_suite(ctx: Context, contender: str, rep: int) -> Round:
    """One pytest run of the contender's suite, reduced to its round figures."""
    tests = 20 if ctx.quick else TESTS[contender]
    root = write_suite(
        ctx.workdir / f"iso_{contender}",
        contender,
        tests,
        conftest_override=ctx.extra.get(f"conftest.{contender}"),
    )
    out = root / f"times_{rep}.json"
    env = {
        **os.environ,
        "BENCH_DB_URL": ctx.database_url,
        "BENCH_OUT": str(out),
        "BENCH_SCHEMA": f"bench_iso_{contender}",
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
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-2500:]
        raise RuntimeError(f"{contender} suite failed (exit {proc.returncode}):\n{tail}")
    got = round_of(json.loads(out.read_text())["times"], tests)
    log(
        f"  {contender:<18} round {rep + 1}: isolation {got.isolation:7.3f} ms/test, body "
        f"{got.body:+7.3f} ms vs baseline {got.baseline:6.3f} ms ({tests} pairs, process "
        f"{time.perf_counter() - t0:.1f} s)"
    )
    return got


def _spread(values: list[float], unit: str = "ms") -> str:
    return f"median {fmt(median(values), unit)}, {fmt(min(values))}\u2013{fmt(max(values), unit)}"


def run(ctx: Context) -> list[Figure]:
    """Run every contender's suite, interleaved round by round, and derive the figures."""
    reps = 1 if ctx.quick else 4
    slow_reps = 1 if ctx.quick else 2  # naive and pytest-postgresql: 30+ ms/test, spread is small
    rounds: dict[str, list[Round]] = {c: [] for c in CONTENDERS}
    for rep in range(reps):
        for contender in CONTENDERS:
            if contender in ("naive", "pytest_postgresql") and rep >= slow_reps:
                continue
            rounds[contender].append(run_suite(ctx, contender, rep))
    figures = [
        Figure(
            "isolation.baseline",
            NAME,
            "isolation: baseline test body, no isolation (per test)",
            "ms",
            [r.baseline for c in CONTENDERS for r in rounds[c]],
            reference="isolation.baseline",
            rounds=True,
            note="The test body (a company and three deals written, committed, read back) on "
            "one shared connection with no isolation, median per round; every contender's run "
            "interleaves it with its isolated tests. It is the yardstick, not a figure to "
            "quote: it moves with the machine's load.",
        ),
    ]
    for contender in CONTENDERS:
        mine = rounds[contender]
        figures.append(
            Figure(
                f"isolation.{contender}",
                NAME,
                LABELS[contender],
                "ms",
                [r.isolation for r in mine],
                reference=REF,
                rounds=True,
                note=f"Body under this isolation vs the baseline body: "
                f"{_spread([r.body for r in mine])} over {len(mine)} rounds.",
            )
        )
    by = {f.key: f for f in figures}
    by["isolation.default"].targets = [
        Target("value", "<=", 1.0, "≤ 1 ms/test"),
        Target("ratio", ">=", 100, "≥ 100\u00d7 less than pytest-postgresql"),
    ]
    by["isolation.committed"].targets = [Target("value", "<=", 20.0, "≤ 20 ms/test")]
    notes = {
        "default": "testbed.isolation.sessions.rollback_session: SQLAlchemy's join-a-Session-"
        "into-an-external-transaction recipe (join_transaction_mode='create_savepoint') on a "
        "worker schema made by testbed.isolation.schema.",
        "committed": "testbed.isolation.sessions.committed_session: real commits, then one "
        "TRUNCATE ... RESTART IDENTITY CASCADE of every table of the worker schema.",
        "plugin": "The real `e2e_postgres_db` fixture with the whole testbed plugin loaded (its "
        "hooks, per-test seeding and checks): what a test of the E2E suite pays; for context.",
        "naive": "Base.metadata.create_all before and drop_all after every test.",
        "pytest_postgresql": "pytest-postgresql 7.0.2's own `postgresql` fixture over "
        "`postgresql_noproc` against the same server, in a real pytest run: CREATE DATABASE ... "
        "TEMPLATE (tables loaded into the template once) and DROP DATABASE per test.",
    }
    how = (
        "Figure: per round, the median over its pairs of (isolated setup + teardown) minus "
        "(baseline setup + teardown), as pytest times them; median of the rounds, spread "
        "min\u2013max over rounds."
    )
    for contender in CONTENDERS:
        fig = by[f"isolation.{contender}"]
        fig.note = f"{notes[contender]} {how} {fig.note}"
    by["isolation.default"].why = (
        "The recipe's setup and teardown cost a pool checkout (a socket poll, no round trip) and "
        "one ROLLBACK; more round trips than that (a ping at checkout, SET search_path, a Redis "
        "FLUSHDB in the fixture) are what to look for and drop. The ratio also moves with "
        "pytest-postgresql's CREATE/DROP DATABASE, which the storage and the load decide."
    )
    by["isolation.committed"].why = (
        "TRUNCATE of every table costs a catalog lock and a relfilenode swap per table; truncate "
        "only the tables the test wrote (track via after_flush) to close the gap."
    )
    return figures
