"""`python -m bench [--quick] [--only NAME ...]`: every comparison in one run, on one server."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.context import Context, log
from bench.env import machine_meta
from bench.report import Figure, judge, render_markdown, render_table, to_json
from bench.stages import STAGES

REPO = Path(__file__).resolve().parent.parent
# `ready` cycles services up and down itself, so it runs before the shared services start.
COMPARISONS = (
    "ready",
    "floor",
    "isolation",
    "factories",
    "xdist",
    "fastloop",
    "stages",
    "migrations",
)
NEEDS_SHARED_SERVICES = COMPARISONS[1:]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke test")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=None,
        help=f"run only these comparisons ({', '.join(COMPARISONS)}); "
        "floor always runs, every figure is expressed in its round trips",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        metavar="STAGE",
        choices=STAGES,
        default=None,
        help="the make stages the stages comparison runs, e.g. `--only stages --stages unit` "
        f"(default: all of make test's: {', '.join(STAGES)})",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "bench",
        help="where results.json and RESULTS.md go (default: bench/)",
    )
    args = p.parse_args(argv)
    names = [n for item in (args.only or COMPARISONS) for n in item.split(",") if n]
    unknown = sorted(set(names) - set(COMPARISONS))
    if unknown:
        p.error(f"unknown comparison(s) {', '.join(unknown)}; choose from {', '.join(COMPARISONS)}")
    args.names = [n for n in COMPARISONS if n in names or n == "floor"]
    return args


def run_one(name: str, ctx: Context) -> list[Figure]:
    """Run one comparison; a crash becomes a figure saying so, and the run goes on."""
    log(f"--- {name}")
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        figures: list[Figure] = module.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        figures = [
            Figure(
                f"{name}.error",
                name,
                f"{name}: failed",
                "",
                [],
                skipped=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
            )
        ]
    log(f"{name} took {time.perf_counter() - t0:.1f} s")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected comparisons, print the table, write results.json and RESULTS.md."""
    from bench import services

    args = parse_args(argv)
    started = time.perf_counter()
    figures: list[Figure] = []
    workdir = Path(tempfile.mkdtemp(prefix="opsdesk-bench-"))
    state_dir = services.state_root() / f"opsdesk-e2e-bench-{workdir.name[-8:]}"
    try:
        if "ready" in args.names:
            ctx = Context("", "", "", "", REPO, workdir, quick=args.quick)
            ctx.extra["state_dir"] = state_dir.with_name(state_dir.name + "-ready")
            figures += run_one("ready", ctx)
        with services.running_services(state_dir) as (endpoints, settings):
            ctx = Context(
                endpoints.database_url,
                endpoints.redis_url,
                endpoints.pg_version,
                endpoints.redis_version,
                REPO,
                workdir,
                quick=args.quick,
                settings=settings,
            )
            ctx.extra["stages"] = args.stages
            meta = machine_meta(REPO, state_dir, endpoints.pg_version, endpoints.redis_version)
            for name in args.names:
                if name in NEEDS_SHARED_SERVICES:
                    figures += run_one(name, ctx)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["mode"] = "quick" if args.quick else ("partial" if args.only else "full")
    meta["comparisons"] = args.names
    meta["profiles"] = {
        k.split(".", 1)[1]: v for k, v in ctx.extra.items() if k.startswith("profile.")
    }
    judged = judge(figures)
    print(render_table(judged))
    print(
        f"\nstorage: {meta['storage']}; {meta['cores']} cores; "
        f"make bench took {meta['wall_seconds']} s"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(to_json(judged, meta), indent=2) + "\n")
    (args.out_dir / "RESULTS.md").write_text(render_markdown(judged, meta))
    log(f"wrote {args.out_dir / 'results.json'} and {args.out_dir / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
