"""`make test` by stage: each stage timed as `make test` runs it, so the slowest is visible.

The stages run one after another, each as its own `make <stage>`, in `make test`'s order. The
E2E stage gets ports and a state dir of the bench's own (bench.fastloop.make_e2e_env), so a
developer's `make up` is neither reused nor stopped. A failing stage is timed and reported,
not retried.
"""

from __future__ import annotations

import resource

from bench.context import Context, log
from bench.fastloop import make_e2e_env, run_make
from bench.report import Figure, Target

NAME = "stages"
# `make test`'s steps in order (its test-steps target; nix-tools does nothing outside CI=true).
STAGES = (
    "lint",
    "unit",
    "tooling",
    "integration",
    "e2e-native",
    "e2e-docker",
    "example",
    "adoption",
    "reliability",
)
TOTAL_TARGET_S = 480.0  # make test in 8 minutes on this 2-core machine (CI=true, fresh clone too)
UNIT_TARGET_S = 15.0


def run_stage(ctx: Context, stage: str, env: dict[str, str]) -> tuple[float, float, int, str]:
    """`make <stage>`: (wall seconds, CPU seconds, exit code, last output line). The CPU is
    user + system of every process make waited for: on a shared machine the wall grows with
    the load, the CPU much less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, code, out = run_make(ctx, stage, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return wall, cpu, code, lines[-1] if lines else ""


def run(ctx: Context) -> list[Figure]:
    """Time every stage once (a full `make test` takes minutes), or the stages `--stages`
    chose (ctx.extra["stages"]); figures per stage, and the total when all of them ran."""
    if ctx.quick:
        return [
            Figure(
                "stages.total",
                NAME,
                "make test, total",
                "s",
                [],
                skipped="a quick run does not run make test; a full `make bench` does",
            )
        ]
    env = make_e2e_env(ctx)
    chosen = tuple(ctx.extra.get("stages") or STAGES)
    results: dict[str, tuple[float, float, int, str]] = {}
    for stage in chosen:
        results[stage] = run_stage(ctx, stage, env)
        wall, cpu, code, tail = results[stage]
        log(f"  make {stage}: {wall:.1f} s, CPU {cpu:.1f} s (exit {code}) {tail[:120]}")
    total = sum(wall for wall, _, _, _ in results.values())
    slowest = max(results, key=lambda s: results[s][0])
    figures = []
    for stage, (wall, cpu, code, tail) in results.items():
        status = "passed" if code == 0 else f"FAILED (exit {code})"
        fig = Figure(
            f"stages.{stage}",
            NAME,
            f"make test stage: {stage}" + (" (slowest)" if stage == slowest else ""),
            "s",
            [wall],
            note=f"`make {stage}`, {status}; {wall / total:.0%} of the stages run; CPU (user "
            f"+ system of the processes make waited for) {cpu:.1f} s. Last line: {tail[:200]}",
        )
        if stage == "unit":
            fig.targets = [Target("value", "<=", UNIT_TARGET_S, "≤ 15 s")]
            fig.why = (
                "pytest's start-up and the imports of the code under test (MCP, pydantic, "
                "SQLAlchemy, Faker, psycopg: about 3 s of CPU) come before the first unit test, "
                "then the tests' own CPU; a wall well above the CPU in the note means other "
                "processes shared the cores. `make unit PYTEST_ARGS=--durations=20` names the "
                "slowest tests."
            )
        figures.append(fig)
    if chosen != STAGES:
        return figures
    figures.append(
        Figure(
            "stages.total",
            NAME,
            "make test, total of the stages",
            "s",
            [total],
            targets=[Target("value", "<=", TOTAL_TARGET_S, "≤ 480 s")],
            note=f"Sum of the stages above, run one after another; slowest: {slowest} "
            f"({results[slowest][0]:.0f} s).",
            why=f"{slowest} dominates; see its note.",
        )
    )
    return figures
