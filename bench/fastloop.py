"""The edit-test loop: a warm `make e2e`, and time to first test of our plugin vs bare pytest.

- `make e2e` warm: dependencies installed, binaries and template cached, services down; the
  whole command as a user types it (services up, suite at -n auto, teardown), on the bench's own
  ports and state dir so a developer's `make up` is never touched.
- time to first test: from process launch until the first test body runs, for bare pytest
  (plugin autoload off), pytest with every installed plugin, and the real E2E suite through
  testbed at -n 0 and -n 2 (full collection, the bench's services through the external backend).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.context import Context, log
from bench.report import Figure, Target
from bench.services import state_root

NAME = "fastloop"
# `make e2e` prints these (testbed's header and summary, pytest's last line); for the note only.
_PHASES = {
    "services": re.compile(r"services ready in ([\d.]+) ?s"),
    "pytest": re.compile(r"\d+ passed[^\n]* in ([\d.]+) ?s"),
    "teardown": re.compile(r"services: stopped in ([\d.]+) ?s"),
}
TRIVIAL_TEST = "def test_first():\n    pass\n"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make_e2e_env(ctx: Context) -> dict[str, str]:
    """`make e2e` on ports and a state dir of the bench's own; no caller E2E_* leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "PYTEST_"))}
    env.pop("MAKEFLAGS", None)
    state = state_root() / f"opsdesk-e2e-bench-loop-{ctx.workdir.name[-8:]}"
    env.update(
        E2E_BACKEND="native",
        E2E_PG_PORT=str(free_port()),
        E2E_REDIS_PORT=str(free_port()),
        E2E_STATE_DIR=str(state),
        E2E_SEED="1",
        E2E_REQUIRE_SERVICES="1",
    )
    for key in ("E2E_PG_BIN", "E2E_VALKEY_BIN", "E2E_CACHE_DIR"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def run_make(ctx: Context, target: str, env: dict[str, str]) -> tuple[float, int, str]:
    """`make <target>` in the checkout: (wall seconds, exit code, its output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["make", "-s", "--no-print-directory", target],
        cwd=ctx.repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return time.perf_counter() - t0, proc.returncode, proc.stdout + proc.stderr


def run_make_e2e(ctx: Context, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """One `make e2e`; returns (wall seconds, the phases it printed)."""
    wall, code, out = run_make(ctx, "e2e", env)
    if code != 0:
        raise RuntimeError(f"make e2e exited {code}:\n{out[-3000:]}")
    phases = {k: float(m.group(1)) for k, rx in _PHASES.items() if (m := rx.search(out))}
    return wall, phases


def first_test_seconds(
    ctx: Context, argv: list[str], cwd: Path, env: dict[str, str], label: str
) -> float:
    """Seconds from launching `python -m pytest argv` until its first test body starts."""
    fd, name = tempfile.mkstemp(prefix="bench-first-", dir=ctx.workdir)
    os.close(fd)
    marker = Path(name)
    env = env | {
        "BENCH_FIRST_TEST_FILE": str(marker),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ctx.repo), env.get("PYTHONPATH")])),
    }
    t0 = time.time()
    proc = subprocess.run(
        [ctx.suite_python, "-m", "pytest", "-q", "-p", "bench.first_test", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    stamps = [float(line.split()[0]) for line in marker.read_text().splitlines() if line]
    marker.unlink()
    if proc.returncode not in (0, 1) or not stamps:
        raise RuntimeError(
            f"{label}: no test ran (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return min(stamps) - t0


def run(ctx: Context) -> list[Figure]:
    """Warm `make e2e` wall time and time to first test, contenders interleaved per round."""
    reps = 1 if ctx.quick else 3
    trivial = ctx.workdir / "trivial"
    trivial.mkdir(exist_ok=True)
    (trivial / "test_first.py").write_text(TRIVIAL_TEST)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "PYTEST_"))}
    external = base | {
        "E2E_BACKEND": "external",
        "E2E_DATABASE_URL": ctx.database_url,
        "E2E_REDIS_URL": ctx.redis_url,
        "E2E_REQUIRE_SERVICES": "1",
        "E2E_SEED": "1",
    }
    # The suite's first test in file order is in test_canvas.py; -k keeps the run short while
    # collection still covers the whole suite, as in `make e2e`.
    e2e = ["tests/e2e", "-p", "no:randomly", "-k", "test_canvas"]
    contenders: dict[str, tuple[list[str], Path, dict[str, str]]] = {
        "bare": (
            [str(trivial), "-p", "no:cacheprovider"],
            ctx.workdir,
            base | {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        ),
        "plugins": ([str(trivial), "-p", "no:cacheprovider"], ctx.workdir, base),
        "e2e_n0": ([*e2e, "-n", "0"], ctx.backend_dir, external),
        "e2e_n2": ([*e2e, "-n", "2"], ctx.backend_dir, external),
    }
    first: dict[str, list[float]] = {k: [] for k in contenders}
    make_env = make_e2e_env(ctx)
    walls: list[float] = []
    phases: list[dict[str, float]] = []
    if not ctx.quick:
        log("  make e2e warm-up run (not timed)")
        run_make_e2e(ctx, make_env)
    for rep in range(reps):
        for name, (argv, cwd, env) in contenders.items():
            first[name].append(first_test_seconds(ctx, argv, cwd, env, name))
        wall, got = run_make_e2e(ctx, make_env)
        walls.append(wall)
        phases.append(got)
        log(
            f"  round {rep + 1}: make e2e {wall:.2f} s; first test "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in first.items())
        )
    phase_note = ""
    if phases and all(phases):
        keys = [k for k in _PHASES if all(k in p for p in phases)]
        phase_note = (
            " Phases as `make e2e` printed them (median): "
            + ", ".join(f"{k} {sorted(p[k] for p in phases)[len(phases) // 2]:.2f} s" for k in keys)
            + "."
        )
    return [
        Figure(
            "fastloop.make_e2e",
            NAME,
            "make e2e, warm (services down), wall",
            "s",
            walls,
            targets=[Target("value", "<=", 8.0, "≤ 8 s")],
            note="`make e2e` end to end with dependencies installed, binaries and template "
            f"cached, services down; own ports and state dir; median of {reps}.{phase_note}",
            why="Two parts: the suite's own test time (its tests' durations summed, halved "
            "at best by two workers, and a few tests start Python processes of their own: the "
            "stdio MCP server, a nested pytest run), and the fixed cost around it: services "
            "up and down, the controller, then each worker starting Python, loading the plugins "
            "and collecting the suite before its first test (compare the time-to-first-test "
            "figures at -n 0 and -n 2). Cheaper subprocess tests, lighter app imports at "
            "collection and starting the services while pytest starts would cut it; see "
            "docs/benchmarks.md for the profile.",
        ),
        Figure(
            "fastloop.first_bare",
            NAME,
            "time to first test: bare pytest (no plugins), trivial test",
            "s",
            first["bare"],
            reference="fastloop.first_bare",
            note="python -m pytest on one empty test, PYTEST_DISABLE_PLUGIN_AUTOLOAD=1: "
            "the floor of any pytest run. From process launch until the test body starts.",
        ),
        Figure(
            "fastloop.first_plugins",
            NAME,
            "time to first test: installed plugins, trivial test",
            "s",
            first["plugins"],
            reference="fastloop.first_bare",
            note="The same empty test with every installed pytest plugin loaded (xdist, "
            "randomly, hypothesis, anyio, faker, timeout, split, testbed, ...), as any "
            "pytest run in this venv pays.",
        ),
        Figure(
            "fastloop.first_e2e_n0",
            NAME,
            "time to first test: E2E suite via testbed, -n 0",
            "s",
            first["e2e_n0"],
            reference="fastloop.first_bare",
            note="pytest tests/e2e -n 0 against running services (external backend): plugins, "
            "collection of the whole suite, health gates, the worker's schema and tables, "
            "then the first test.",
        ),
        Figure(
            "fastloop.first_e2e_n2",
            NAME,
            "time to first test: E2E suite via testbed, -n 2",
            "s",
            first["e2e_n2"],
            reference="fastloop.first_bare",
            note="As above with two xdist workers: the controller starts, then each worker "
            "starts Python, loads the plugins and collects; the earliest worker's first test.",
        ),
    ]
