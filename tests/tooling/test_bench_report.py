"""Pure parts of bench/: percentile and ratio math, target verdicts, table and markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench.report import (
    Figure,
    Target,
    fmt,
    fmt_spread,
    judge,
    median,
    misses,
    percentile,
    ratio,
    render_markdown,
    render_table,
    to_json,
)


def test_percentile_interpolates_like_numpy() -> None:
    """p50/p95 use linear interpolation between closest ranks."""
    data = [float(x) for x in range(1, 101)]
    assert median(data) == pytest.approx(50.5)
    assert percentile(data, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    assert percentile([4.0, 1.0, 2.0], 0) == 1.0
    assert percentile([4.0, 1.0, 2.0], 100) == 4.0


def test_percentile_rejects_empty_and_out_of_range() -> None:
    """Nonsense input is an error, not a silent zero."""
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_ratio_is_times_better_in_both_directions() -> None:
    """Lower-is-better: reference / value; higher-is-better: value / reference."""
    assert ratio(0.5, 50.0, "lower") == pytest.approx(100.0)
    assert ratio(200_000.0, 10_000.0, "higher") == pytest.approx(20.0)
    assert ratio(0.0, 1.0, "lower") is None  # below the noise: no ratio
    assert ratio(-0.2, 1.0, "lower") is None
    assert ratio(1.0, 0.0, "higher") is None


def test_target_verdicts() -> None:
    """A target holds, fails, or cannot be judged (None) when the metric is missing."""
    le = Target("value", "<=", 1.0, "≤ 1 ms")
    ge = Target("ratio", ">=", 100.0, "≥ 100\u00d7")
    assert le.holds(1.0, None) is True
    assert le.holds(1.01, None) is False
    assert ge.holds(None, 150.0) is True
    assert ge.holds(None, 99.9) is False
    assert ge.holds(5.0, None) is None
    assert le.holds(float("nan"), None) is None


def _figures() -> list[Figure]:
    floor = Figure(
        "floor.select1", "floor", "SELECT 1", "µs", [40.0, 50.0, 60.0], reference="floor.select1"
    )
    ref = Figure(
        "iso.peer", "isolation", "peer", "ms", [30.0, 30.0], value=30.0, reference="iso.peer"
    )
    ours = Figure(
        "iso.ours",
        "isolation",
        "ours",
        "ms",
        [0.4, 0.6],
        value=0.5,
        reference="iso.peer",
        targets=[
            Target("value", "<=", 1.0, "≤ 1 ms"),
            Target("ratio", ">=", 100.0, "≥ 100\u00d7 peer"),
        ],
        why="one extra round trip per test",
    )
    rate = Figure(
        "fac.ours",
        "factories",
        "rows/s",
        "rows/s",
        [40_000.0],
        better="higher",
        reference="fac.boy",
        seconds=0.25,
        targets=[Target("ratio", ">=", 10, "≥ 10\u00d7")],
    )
    boy = Figure(
        "fac.boy",
        "factories",
        "factory_boy",
        "rows/s",
        [2_000.0],
        better="higher",
        reference="fac.boy",
    )
    skipped = Figure("ready.docker", "ready", "docker compose", "s", [], skipped="no Docker engine")
    return [floor, ref, ours, rate, boy, skipped]


def test_judge_resolves_ratios_round_trips_and_targets() -> None:
    """Ratios against the reference, RTTs against the floor median, pass/miss per target."""
    judged = {j.figure.key: j for j in judge(_figures())}
    assert judged["floor.select1"].ratio == 1.0
    assert judged["floor.select1"].rtts == pytest.approx(1.0)
    ours = judged["iso.ours"]
    assert ours.ratio == pytest.approx(60.0)
    assert ours.rtts == pytest.approx(0.5e-3 / 50e-6)  # median 0.5 ms over a 50 µs floor
    assert [ok for _, ok in ours.verdicts] == [True, False]
    assert ours.passed is False
    assert judged["fac.ours"].ratio == pytest.approx(20.0)
    assert judged["fac.ours"].rtts == pytest.approx(0.25 / 50e-6)
    assert judged["fac.ours"].passed is True
    assert judged["ready.docker"].passed is None


def test_ratio_converts_time_units() -> None:
    """A figure in ms compared with a reference in s is converted before dividing."""
    cold = Figure("r.cold", "ready", "cold", "s", [0.5], reference="r.cold")
    reuse = Figure("r.reuse", "ready", "reuse", "ms", [5.0], reference="r.cold")
    judged = {j.figure.key: j for j in judge([cold, reuse])}
    assert judged["r.reuse"].ratio == pytest.approx(100.0)


def test_misses_say_what_why_and_target() -> None:
    """Every missed target gets a line with the measured value, the target and the reason."""
    lines = misses(judge(_figures()))
    assert lines == ["ours: 60.0\u00d7, target ≥ 100\u00d7 peer. one extra round trip per test"]


def test_table_and_markdown_render_every_figure() -> None:
    """Both renderings list every figure with its ratio and verdict; markdown has the header."""
    judged = judge(_figures())
    table = render_table(judged)
    assert "[isolation]" in table
    assert "60.0\u00d7 vs peer" in table
    assert "MISS" in table
    assert "n/a: no Docker engine" in table
    meta = {
        "date": "2026-01-01 00:00 UTC",
        "machine": "test box",
        "cores": 2,
        "storage": "tmpfs on /dev/shm",
        "versions_text": "python 3.11",
        "wall_seconds": 12.0,
    }
    md = render_markdown(judged, meta)
    assert md.startswith("# Benchmark results\n")
    assert "2026-01-01" in md
    assert "tmpfs on /dev/shm" in md
    assert (
        "| ours | 0.5 ms | 0.45\u20130.55 ms (IQR) | 0.59 ms | 0.5 ms | 60.0\u00d7 vs peer |" in md
    )
    assert "## Missed targets" in md
    assert "one extra round trip per test" in md


def test_json_has_every_figure_with_verdicts() -> None:
    """results.json carries median, p95, ratio and per-target pass flags, and is serialisable."""
    doc = to_json(judge(_figures()), {"cores": 2})
    json.dumps(doc)
    ours = next(f for f in doc["figures"] if f["key"] == "iso.ours")
    assert ours["median"] == pytest.approx(0.5)
    assert ours["ratio"] == pytest.approx(60.0)
    assert [t["pass"] for t in ours["targets"]] == [True, False]
    assert doc["cores"] == 2


def test_fmt_uses_three_significant_figures() -> None:
    """Numbers read easily at every magnitude."""
    assert fmt(0.001234, "s") == "0.00123 s"
    assert fmt(12.345) == "12.3"
    assert fmt(25_000.0, "rows/s") == "25,000 rows/s"
    assert fmt(None) == "-"


def test_spread_is_min_max_over_rounds_or_the_iqr() -> None:
    """Per-round figures spread over their rounds; plain samples over their middle half."""
    per_round = Figure("i.r", "isolation", "r", "ms", [0.2, 0.1, 0.4, 0.3], rounds=True)
    assert per_round.spread == (0.1, 0.4)
    assert fmt_spread(per_round) == "0.1\u20130.4 ms (4 rounds)"
    plain = Figure("i.p", "isolation", "p", "ms", [float(x) for x in range(1, 102)])
    assert plain.spread == (26.0, 76.0)
    assert Figure("i.n", "isolation", "n", "ms", []).spread is None
    doc = to_json(judge([per_round]), {})
    assert doc["figures"][0]["spread"] == (0.1, 0.4)


def test_isolation_round_reads_setup_and_teardown_next_to_the_baseline() -> None:
    """The isolation is what setup + teardown cost beyond the baseline neighbour's, median over
    pairs: a stalled pair (a busy machine) does not move it, and pair 0000 is not counted."""
    from bench.isolation import round_of

    def phases(setup: float, call: float, teardown: float) -> dict[str, float]:
        return {"setup": setup / 1e3, "call": call / 1e3, "teardown": teardown / 1e3}

    times = {"test_0000_base": phases(50, 50, 50), "test_0000_iso": phases(90, 50, 90)}
    for i in range(1, 6):
        times[f"test_{i:04d}_base"] = phases(0.05, 3.0, 0.05)
        times[f"test_{i:04d}_iso"] = phases(0.15, 2.9, 0.10)
    times["test_0003_iso"] = phases(40.0, 80.0, 0.1)  # preempted
    got = round_of(times, 5)
    assert got.isolation == pytest.approx(0.15)
    assert got.body == pytest.approx(-0.1)
    assert got.baseline == pytest.approx(3.0)


def test_the_stages_report_wall_and_cpu_and_judge_unit_on_15_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench/stages.py times each `make` stage (no make runs here: a stand-in takes 0.2 s of
    CPU in a child for unit); `make unit` is judged on ≤ 15 s of wall, `make tooling` on none."""
    import subprocess
    from types import SimpleNamespace

    from bench import stages

    def fake_make(ctx: object, stage: str, env: dict[str, str]) -> tuple[float, int, str]:
        if stage == "unit":
            burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
            subprocess.run([sys.executable, "-c", burn], check=True)
        return {"unit": 16.0}.get(stage, 2.0), 0, f"{stage}: 3 passed\n"

    monkeypatch.setattr(stages, "run_make", fake_make)
    monkeypatch.setattr(stages, "make_e2e_env", lambda ctx: {})
    ctx = SimpleNamespace(quick=False, extra={"stages": None})
    figures = {f.key: f for f in stages.run(ctx)}  # type: ignore[arg-type]
    assert list(figures) == [*(f"stages.{s}" for s in stages.STAGES), "stages.total"]
    unit = figures["stages.unit"]
    assert [t.text for t in unit.targets] == ["≤ 15 s"]
    assert unit.targets[0].holds(unit.samples[0], None) is False
    cpu = float(unit.note.split("make waited for) ", 1)[1].split(" s.", 1)[0])
    assert cpu >= 0.2
    assert figures["stages.tooling"].targets == []
    assert "Last line: tooling: 3 passed" in figures["stages.tooling"].note


def test_the_stages_can_time_make_unit_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m bench --only stages --stages unit` runs `make unit` alone: its figure and
    target, and no total of make test."""
    from types import SimpleNamespace

    from bench import __main__ as bench_main
    from bench import stages

    ran: list[str] = []

    def fake_make(ctx: object, stage: str, env: dict[str, str]) -> tuple[float, int, str]:
        ran.append(stage)
        return 9.0, 0, "9 passed"

    monkeypatch.setattr(stages, "run_make", fake_make)
    monkeypatch.setattr(stages, "make_e2e_env", lambda ctx: {})
    args = bench_main.parse_args(["--only", "stages", "--stages", "unit"])
    assert args.stages == ["unit"]
    ctx = SimpleNamespace(quick=False, extra={"stages": args.stages})
    [unit] = stages.run(ctx)  # type: ignore[arg-type]
    assert ran == ["unit"]
    assert unit.key == "stages.unit"
    assert unit.targets[0].holds(unit.samples[0], None) is True
    with pytest.raises(SystemExit):
        bench_main.parse_args(["--stages", "units"])
