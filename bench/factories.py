"""Factories: create_batch(10_000) end to end (generate + INSERT) vs factory_boy 3.3.3.

Ours: the harness's factories (backend/tests/e2e/fixtures/test_data_factory.py) over a
DataContext, as a test gets them. factory_boy: SQLAlchemyModelFactory over the same columns with
Faker providers, persistence "flush" (the fair one: like ours, every object comes back with its
primary key and the transaction stays open; "commit" would add COMMIT and the ledger's deferred
balance trigger, which ours does not pay). Both run inside testbed's rollback_session on the same
worker schema, so every repetition starts on empty tables.
"""

from __future__ import annotations

import cProfile
import importlib.util
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.context import Context, log
from bench.fb_factories import fb_contact_factory, fb_ledger_transaction_factory
from bench.report import Figure, Target

Maker = Callable[..., Any]  # a create_batch-like callable of one contender

NAME = "factories"
ROWS = 10_000
# factory_boy is profiled on fewer rows: its cost is per row, and cProfile slows it ~2x.
PROFILE_FB_ROWS = 2_000
FACTORY_FILE = Path("backend/tests/e2e/fixtures/test_data_factory.py")


def load_ours(repo: Path) -> ModuleType:
    """Import the harness's test_data_factory.py (BENCH_FACTORY_FILE overrides its path)."""
    path = Path(os.environ.get("BENCH_FACTORY_FILE", repo / FACTORY_FILE))
    if not path.exists():
        raise FileNotFoundError(f"{path} has not landed yet: the factories cannot be measured")
    spec = importlib.util.spec_from_file_location("bench_test_data_factory", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def faker_share(profile: cProfile.Profile) -> tuple[float, str]:
    """(share of time inside faker/, top cost centres by own time) of a profile."""
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    fake = sum(v[2] for k, v in stats.stats.items() if "/faker/" in k[0])  # type: ignore[attr-defined]
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(8)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return (fake / total if total else 0.0), "\n".join(lines[start:])


def _timed(
    make: Callable[[Any], Any],
    engine: Any,
    rollback_session: Any,
    profile: cProfile.Profile | None = None,
) -> float:
    """Seconds of one create_batch(ROWS) inside a rolled-back session."""
    with rollback_session(engine) as session:
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        objs = make(session)
        if profile is not None:
            profile.disable()
        elapsed = time.perf_counter() - t0
        if (
            len(objs) not in (ROWS, ROWS // 2, PROFILE_FB_ROWS, PROFILE_FB_ROWS // 2)
            or getattr(objs[-1], "id", None) is None
        ):
            raise RuntimeError(f"expected {ROWS} persisted rows with ids, got {len(objs)}")
    return elapsed


def run(ctx: Context) -> list[Figure]:
    """Throughput of ours vs factory_boy for CRM contacts and finance ledger lines, profiled."""
    from testbed.data.context import DataContext
    from testbed.isolation.sessions import WorkerDatabase, rollback_session
    from testbed.isolation.workers import Worker, new_run_id

    ours = load_ours(ctx.repo)
    reps_ours, reps_fb = (1, 1) if ctx.quick else (5, 2)
    from opsdesk import db

    db.table_names()  # imports every model, so Base.metadata knows every table
    worker = Worker(run_id=new_run_id(), worker_id="bench", count=1)
    wdb = WorkerDatabase(ctx.database_url, worker, metadata=db.Base.metadata)
    wdb.create()
    figures: list[Figure] = []
    try:
        cases = [
            ("contacts", "CRM contacts", contact_makers),
            ("ledger", "finance ledger lines", ledger_makers),
        ]
        for key, label, makers in cases:
            try:
                make_ours, make_fb, fields = makers(ours, DataContext)
                figures += measure(
                    ctx,
                    wdb.engine,
                    rollback_session,
                    key,
                    label,
                    make_ours,
                    make_fb,
                    fields,
                    reps_ours,
                    reps_fb,
                )
            except Exception as exc:  # one case failing must not hide the other
                log(f"  {label} failed: {type(exc).__name__}: {exc}")
                figures.append(
                    Figure(
                        f"factories.{key}",
                        NAME,
                        f"factories: {label}",
                        "rows/s",
                        [],
                        skipped=f"{type(exc).__name__}: {exc}".splitlines()[0][:200],
                    )
                )
    finally:
        wdb.drop()
    return figures


def contact_makers(ours: ModuleType, data_cls: Any) -> tuple[Maker, Maker, str]:
    """create_batch callables for contacts: ours, factory_boy, and the fields both fill."""
    from testbed.data.factory import Related

    factory_cls = ours.CRMContactFactory
    # An optional parent (Related(required=False)) stays NULL in ours: factory_boy skips it too.
    fields = sorted(
        k for k, d in factory_cls._fields.items() if not (isinstance(d, Related) and not d.required)
    )
    counter = iter(range(1_000_000))

    def make_ours(session: Any) -> Any:
        return factory_cls(session, data_cls(1, f"bench::contacts[{next(counter)}]")).create_batch(
            ROWS
        )

    def make_fb(session: Any, n: int = ROWS) -> Any:
        return fb_contact_factory(session, fields).create_batch(n)

    return make_ours, make_fb, ", ".join(fields)


def ledger_makers(ours: ModuleType, data_cls: Any) -> tuple[Maker, Maker, str]:
    """Ledger lines come in balanced pairs: ROWS lines = ROWS / 2 journal entries, both sides."""
    factory_cls = ours.LedgerTransactionFactory
    counter = iter(range(1_000_000))

    def make_ours(session: Any) -> Any:
        data = data_cls(1, f"bench::ledger[{next(counter)}]")
        return factory_cls(session, data).create_batch(ROWS // 2)

    def make_fb(session: Any, n: int = ROWS) -> Any:
        return fb_ledger_transaction_factory(session).create_batch(n // 2)

    return (
        make_ours,
        make_fb,
        (
            "LedgerTransactionFactory.create_batch(5,000): memo, reference + 2 lines each "
            "(transaction_id, account_id, amount), one account pair per batch"
        ),
    )


def measure(
    ctx: Context,
    engine: Any,
    rollback_session: Any,
    key: str,
    label: str,
    make_ours: Maker,
    make_fb: Maker,
    fields: str,
    reps_ours: int,
    reps_fb: int,
) -> list[Figure]:
    """Time both sides, profile one run of each, and build the two figures."""
    _timed(make_ours, engine, rollback_session)  # warm-up: pools, statement caches
    ours_s = [_timed(make_ours, engine, rollback_session) for _ in range(reps_ours)]
    fb_s = [_timed(make_fb, engine, rollback_session) for _ in range(reps_fb)]
    prof_ours, prof_fb = cProfile.Profile(), cProfile.Profile()
    _timed(make_ours, engine, rollback_session, prof_ours)
    _timed(lambda session: make_fb(session, PROFILE_FB_ROWS), engine, rollback_session, prof_fb)
    share_ours, top_ours = faker_share(prof_ours)
    share_fb, top_fb = faker_share(prof_fb)
    log(
        f"  {label}: ours {ROWS / min(ours_s):,.0f} rows/s best, factory_boy "
        f"{ROWS / min(fb_s):,.0f} rows/s best; Faker share ours {share_ours:.0%}, "
        f"factory_boy {share_fb:.0%}"
    )
    log(f"  top cost centres, ours ({label}):\n{top_ours}")
    log(f"  top cost centres, factory_boy ({label}):\n{top_fb}")
    ctx.extra[f"profile.{key}"] = {
        "ours": top_ours,
        "factory_boy": top_fb,
        "faker_share_ours": share_ours,
        "faker_share_factory_boy": share_fb,
    }
    ours_fig = Figure(
        f"factories.{key}",
        NAME,
        f"factories: ours, {label}",
        "rows/s",
        [ROWS / s for s in ours_s],
        better="higher",
        reference=f"factories.{key}_fb",
        seconds=sorted(ours_s)[len(ours_s) // 2],
        targets=[
            Target("value", ">=", 20_000, "≥ 20,000 rows/s"),
            Target("ratio", ">=", 10, "≥ 10\u00d7 factory_boy"),
        ],
        note=f"create_batch({ROWS:,}) end to end (generation + one bulk INSERT ... RETURNING), "
        f"fields: {fields}; median of {len(ours_s)}. Faker share of the profile: "
        f"{share_ours:.0%} (factory_boy: {share_fb:.0%}).",
        why=f"profile (cProfile) shows {share_ours:.0%} of the time in Faker; the top cost "
        "centres are printed on stderr and in RESULTS.md and results.json (profiles).",
    )
    fb_fig = Figure(
        f"factories.{key}_fb",
        NAME,
        f"factories: factory_boy, {label}",
        "rows/s",
        [ROWS / s for s in fb_s],
        better="higher",
        reference=f"factories.{key}_fb",
        seconds=sorted(fb_s)[len(fb_s) // 2],
        note=f"factory_boy 3.3.3 SQLAlchemyModelFactory.create_batch({ROWS:,}) over the same "
        "fields with Faker providers, sqlalchemy_session_persistence='flush' (one INSERT "
        f"per object, ids available, like ours); median of {len(fb_s)}.",
    )
    return [ours_fig, fb_fig]
