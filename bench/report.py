"""Pure figure math and rendering: percentiles, ratios, targets, the stdout table and RESULTS.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Better = Literal["lower", "higher"]
Op = Literal["<=", ">="]
Metric = Literal["value", "ratio"]

# Keys of the floor figures that every time figure is expressed against (in loopback round trips).
TIMES = "\u00d7"  # the multiplication sign, escaped so no linter mistakes it for an x
RTT_KEYS: dict[str, str] = {"pg": "floor.select1", "redis": "floor.ping"}


def percentile(samples: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of a non-empty sample."""
    if not samples:
        raise ValueError("percentile of an empty sample: measure at least once")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is outside 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(samples: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(samples, 50)


def ratio(value: float, reference: float, better: Better) -> float | None:
    """How many times better than the reference (> 1 means better); None when undefined."""
    if better == "lower":
        if value <= 0 or reference <= 0:
            return None  # a zero or negative difference is below the noise: no honest ratio
        return reference / value
    if reference <= 0:
        return None
    return value / reference


@dataclass(frozen=True)
class Target:
    """A goal from the issue: `metric op threshold`, e.g. value <= 1.0 (ms) or ratio >= 100."""

    metric: Metric
    op: Op
    threshold: float
    text: str

    def holds(self, value: float | None, ratio_: float | None) -> bool | None:
        """True/False when the figure can be judged, None when it was not measured."""
        got = value if self.metric == "value" else ratio_
        if got is None or math.isnan(got):
            return None
        return got <= self.threshold if self.op == "<=" else got >= self.threshold


@dataclass
class Figure:
    """One measured quantity with its samples, its reference and the targets it is judged on."""

    key: str
    section: str
    label: str
    unit: str
    samples: list[float]
    better: Better = "lower"
    value: float | None = None  # the judged headline; median(samples) unless a module sets it
    reference: str | None = None  # key of the figure this one is compared with
    targets: list[Target] = field(default_factory=list)
    seconds: float | None = None  # duration of one operation, for the round-trip column
    rtt: Literal["pg", "redis"] = "pg"
    note: str = ""
    why: str = ""  # explanation + what would close the gap, shown when a target is missed
    skipped: str = ""  # non-empty: not measurable here, and why
    # True: each sample is one round's figure (e.g. a per-run median of hundreds of tests), so
    # the spread is min-max over rounds; else it is the interquartile range of the samples.
    rounds: bool = False

    @property
    def median(self) -> float | None:
        """Median of the samples, or None if not measured."""
        return median(self.samples) if self.samples else None

    @property
    def p95(self) -> float | None:
        """95th percentile of the samples, or None if not measured."""
        return percentile(self.samples, 95) if self.samples else None

    @property
    def spread(self) -> tuple[float, float] | None:
        """(low, high): min-max over rounds for per-round samples, else the IQR; None if none."""
        if not self.samples:
            return None
        if self.rounds:
            return min(self.samples), max(self.samples)
        return percentile(self.samples, 25), percentile(self.samples, 75)

    @property
    def headline(self) -> float | None:
        """The value targets are judged on."""
        return self.value if self.value is not None else self.median


@dataclass
class Judged:
    """A figure after the whole run: ratio, round trips and target verdicts resolved."""

    figure: Figure
    ratio: float | None
    rtts: float | None
    verdicts: list[tuple[Target, bool | None]]

    @property
    def passed(self) -> bool | None:
        """All targets hold (None if there are none or none could be judged)."""
        known = [ok for _, ok in self.verdicts if ok is not None]
        if not known:
            return None
        return all(known)


def judge(figures: Iterable[Figure]) -> list[Judged]:
    """Resolve ratios against references, round trips against the floor, and targets."""
    figs = list(figures)
    by_key = {f.key: f for f in figs}
    out: list[Judged] = []
    for fig in figs:
        value = fig.headline
        rat: float | None = None
        ref = by_key.get(fig.reference) if fig.reference else None
        if fig.reference == fig.key and value is not None:
            rat = 1.0
        elif ref is not None and value is not None and ref.headline is not None:
            # Compare like with like: a figure in ms against a reference in s.
            mine, theirs = (
                to_seconds(value, fig.unit),
                to_seconds(ref.headline, ref.unit),
            )
            if mine is None or theirs is None:
                mine, theirs = value, ref.headline
            rat = ratio(mine, theirs, fig.better)
        floor = by_key.get(RTT_KEYS[fig.rtt])
        seconds = fig.seconds
        if seconds is None and value is not None:
            seconds = to_seconds(fig.median if fig.median is not None else value, fig.unit)
        rtts = None
        if seconds is not None and floor is not None and floor.median:
            rtts = seconds / to_seconds(floor.median, floor.unit)  # type: ignore[operator]
        verdicts = [(t, t.holds(value, rat)) for t in fig.targets]
        out.append(Judged(fig, rat, rtts, verdicts))
    return out


def to_seconds(amount: float, unit: str) -> float | None:
    """Convert a time in `unit` to seconds; None for non-time units."""
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}.get(unit)
    return None if scale is None else amount * scale


def fmt(amount: float | None, unit: str = "") -> str:
    """Three significant figures, thousands separated; '-' for missing."""
    if amount is None or (isinstance(amount, float) and math.isnan(amount)):
        return "-"
    if math.isinf(amount):
        return "inf"
    mag = abs(amount)
    if mag >= 1000:
        text = f"{amount:,.0f}"
    elif mag >= 100:
        text = f"{amount:.0f}"
    elif mag >= 10:
        text = f"{amount:.1f}"
    elif mag >= 1:
        text = f"{amount:.2f}"
    elif mag == 0:
        text = "0"
    else:
        text = f"{amount:.3g}"
    return f"{text} {unit}".rstrip() if unit else text


def fmt_ratio(rat: float | None) -> str:
    """Ratio with a multiplication sign, e.g. 12.3 times."""
    return "-" if rat is None else fmt(rat) + TIMES


def fmt_spread(fig: Figure) -> str:
    """The figure's spread, e.g. '0.12-0.15 ms (4 rounds)' or '2.1-2.9 ms (IQR)'."""
    spread = fig.spread
    if spread is None:
        return "-"
    low, high = spread
    count = len(fig.samples)
    how = (f"{count} rounds" if count > 1 else "1 round") if fig.rounds else "IQR"
    return f"{fmt(low)}\u2013{fmt(high, fig.unit)} ({how})"


def verdict_text(j: Judged) -> str:
    """PASS / MISS / n/a / '' (no target)."""
    if j.figure.skipped:
        return "n/a"
    if not j.verdicts:
        return ""
    return {True: "PASS", False: "MISS", None: "n/a"}[j.passed]


def rows(judged: Sequence[Judged]) -> list[list[str]]:
    """Table rows shared by the terminal table and the markdown table."""
    out = []
    for j in judged:
        f = j.figure
        targets = "; ".join(t.text for t in f.targets)
        if f.skipped:
            out.append([f.label, "-", "-", "-", "-", "-", "-", targets, "n/a: " + f.skipped])
            continue
        value = fmt(f.headline, f.unit) if f.value is not None else ""
        out.append(
            [
                f.label,
                fmt(f.median, f.unit),
                fmt_spread(f),
                fmt(f.p95, f.unit),
                value,
                fmt_ratio(j.ratio)
                + (
                    f" vs {f.reference.split('.')[-1]}"
                    if f.reference and f.reference != f.key
                    else ""
                ),
                fmt(j.rtts) if j.rtts is not None else "-",
                targets,
                verdict_text(j),
            ]
        )
    return out


HEADERS = [
    "figure",
    "median",
    "spread",
    "p95",
    "judged",
    f"ratio ({TIMES} better)",
    "RTTs",
    "target",
    "result",
]


def render_table(judged: Sequence[Judged]) -> str:
    """A fixed-width table for stdout, one block per section."""
    body = rows(judged)
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(HEADERS)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    parts = [line, "-" * len(line)]
    section = None
    for j, r in zip(judged, body, strict=True):
        if j.figure.section != section:
            section = j.figure.section
            parts.append(f"[{section}]")
        parts.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(parts)


def misses(judged: Sequence[Judged]) -> list[str]:
    """One line per missed target: what was measured, what was wanted, why, what would close it."""
    lines = []
    for j in judged:
        for target, ok in j.verdicts:
            if ok is False:
                got = (
                    fmt(j.figure.headline, j.figure.unit)
                    if target.metric == "value"
                    else fmt_ratio(j.ratio)
                )
                why = j.figure.why or "no explanation recorded"
                lines.append(f"{j.figure.label}: {got}, target {target.text}. {why}")
    return lines


def render_markdown(judged: Sequence[Judged], meta: Mapping[str, Any]) -> str:
    """RESULTS.md: header with the machine, the table, notes, then the missed targets."""
    md = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` on {meta.get('date', '?')}"
        + (f" ({meta['mode']} run)" if meta.get("mode", "full") != "full" else "")
        + f" in {fmt(meta.get('wall_seconds'), 's')}.",
        "",
        f"- machine: {meta.get('machine', '?')}, {meta.get('cores', '?')} cores",
        f"- storage: {meta.get('storage', '?')}",
        f"- versions: {meta.get('versions_text', '?')}",
        f"- load average (1/5/15 min): {meta.get('load_average_at_start', '?')} at start, "
        f"{meta.get('load_average_at_end', '?')} at end (other processes share these cores)",
        "",
        'Ratios are "times better than the reference" (> 1 is better; for times: '
        "reference / figure, for throughputs: figure / reference). RTTs is a figure's median "
        "in loopback round trips (PostgreSQL `SELECT 1` for database figures, Valkey `PING` for "
        'Redis figures). "judged" is the value a target is checked against when it is not '
        'the median. "spread" is min\u2013max over rounds where a figure is measured per round '
        "(each round a whole run of many tests), else the interquartile range of the samples; "
        "a rerun that lands inside it reproduces the figure.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    for r in rows(judged):
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    notes = [f"- **{j.figure.label}**: {j.figure.note}" for j in judged if j.figure.note]
    if notes:
        md += ["", "## Notes", "", *notes]
    for name, prof in (meta.get("profiles") or {}).items():
        md += [
            "",
            f"## Profile: factories, {name} (cProfile, top cost centres by own time)",
            "",
        ]
        for side in ("ours", "factory_boy"):
            share = prof.get(f"faker_share_{side}", 0.0)
            md += [
                f"{side} (Faker: {share:.0%} of the time):",
                "",
                "```",
                prof[side],
                "```",
                "",
            ]
    missed = misses(judged)
    md += ["", "## Missed targets", ""]
    md += [f"- {m}" for m in missed] if missed else ["None: every measured target holds."]
    return "\n".join(md) + "\n"


def to_json(judged: Sequence[Judged], meta: Mapping[str, Any]) -> dict[str, Any]:
    """results.json: the run's metadata and every figure with median/p95/ratio/target/pass."""
    figures = []
    for j in judged:
        f = j.figure
        d = asdict(f)
        d.pop("targets")
        d.update(
            median=f.median,
            spread=f.spread,
            p95=f.p95,
            judged=f.headline,
            ratio=j.ratio,
            round_trips=j.rtts,
            targets=[
                {
                    "text": t.text,
                    "metric": t.metric,
                    "op": t.op,
                    "threshold": t.threshold,
                    "pass": ok,
                }
                for t, ok in j.verdicts
            ],
            passed=j.passed,
        )
        figures.append(d)
    return {**meta, "figures": figures}
