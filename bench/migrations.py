"""Migrations once: a worker schema of a 300-migration Alembic app, migrated vs restored.

A synthetic app (100 tables grown over 300 Alembic migrations: tables, columns, indexes,
foreign keys, check constraints, one seed row per table) is set up the way testbed sets up a
worker: `WorkerDatabase.create()` on the bench's server. Contenders:

- full upgrade: the schema cache off, so the hook runs `alembic upgrade head` (what every
  worker of every run paid before);
- first worker: the cache empty, so the hook runs and the schema is dumped for the others;
- cached worker: the dump of the same inputs exists, so the worker restores it.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

from bench.context import Context, log
from bench.report import Figure, Target, median

NAME = "migrations"
MIGRATIONS = 300
PACKAGE = "bench_synth_app"

# The synthetic app migrates as the bookings example does (Alembic driven from code on the
# worker's connection): its hook module and Alembic environment, copied into the package.
BOOKINGS = Path(__file__).resolve().parents[1] / "examples" / "bookings" / "src" / "bookings"


def _migration(i: int) -> str:
    """Migration i: every third makes a table (with a seed row), the others grow the last one."""
    table = f"t{i // 3:03d}"
    if i % 3 == 0:
        body = (
            f"op.create_table('{table}', sa.Column('id', sa.Integer, primary_key=True), "
            "sa.Column('name', sa.Text, nullable=False), "
            "sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now()))\n"
            f"    op.execute(\"INSERT INTO {table} (name) VALUES ('seed')\")"
        )
    elif i % 3 == 1:
        body = (
            f"op.add_column('{table}', sa.Column('c{i}', sa.Integer, server_default='0'))\n"
            f"    op.create_index('ix_{table}_c{i}', '{table}', ['c{i}'])"
        )
    else:
        parent = f"t{max(i // 3 - 1, 0):03d}"
        body = (
            f"op.add_column('{table}', sa.Column('{parent}_id', sa.Integer, "
            f"sa.ForeignKey('{parent}.id')))\n"
            f"    op.create_check_constraint('ck_{table}_name', '{table}', \"name <> ''\")"
        )
    down = repr(f"{i - 1:04d}") if i else "None"
    return (
        f'"""step {i}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "{i:04d}"\ndown_revision = {down}\n\n\ndef upgrade():\n    {body}\n'
    )


def write_app(root: Path) -> str:
    """The app's package under root (put on sys.path); returns the hook's dotted name."""
    package = root / PACKAGE
    versions = package / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    shutil.copyfile(BOOKINGS / "migrate.py", package / "migrate.py")
    shutil.copyfile(BOOKINGS / "migrations" / "env.py", package / "migrations" / "env.py")
    for i in range(MIGRATIONS):
        (versions / f"{i:04d}_step.py").write_text(_migration(i))
    return f"{PACKAGE}.migrate:upgrade"


def run(ctx: Context) -> list[Figure]:
    """Time WorkerDatabase.create() of the synthetic app: cache off, first, cached."""
    from testbed.config import app
    from testbed.isolation import schema, templates
    from testbed.isolation.sessions import WorkerDatabase
    from testbed.isolation.workers import Worker

    root = ctx.workdir / "migrations_app"
    sys.path.insert(0, str(root))
    hook = app.schema_setup(write_app(root))
    assert hook is not None
    major = ctx.pg_version.split(".", 1)[0]
    pg_dump = templates.find_pg_dump(
        templates.pg_dump_candidates(ctx.settings.pg_bin, ctx.settings.cache_dir), major
    )
    if pg_dump is None:
        raise RuntimeError("no pg_dump of PostgreSQL >= 16 next to e2e_pg_bin, on PATH or pinned")
    digest = templates.inputs_digest(None, hook, [], major)
    assert digest is not None
    cache = templates.TemplateCache(ctx.workdir / "schema-cache")
    reps = 1 if ctx.quick else 3
    workers = 2 if ctx.quick else 4
    full: list[float] = []
    first: list[float] = []
    cached: list[float] = []
    tables = 0

    def create(use_cache: bool, worker: str) -> WorkerDatabase:
        cached_by = templates.SchemaTemplates(cache, pg_dump, digest) if use_cache else None
        who = Worker(run_id=secrets.token_hex(4), worker_id=worker, count=workers)
        database = WorkerDatabase(ctx.database_url, who, None, hook, cached_by)
        database.create()
        return database

    for rep in range(reps):
        db = create(False, "gw0")
        full.append(db.setup_seconds)
        db.drop()
        cache.path(digest).unlink(missing_ok=True)
        db = create(True, "gw0")
        assert db.setup_source == "built"
        first.append(db.setup_seconds)
        db.drop()
        for n in range(1, workers + 1):
            db = create(True, f"gw{n}")
            assert db.setup_source == "restored", db.setup_source
            cached.append(db.setup_seconds)
            if not tables:
                with db.engine.connect() as conn:
                    tables = len(schema.tables(conn, db.schema))
            db.drop()
        log(
            f"  run {rep + 1}: full upgrade {full[-1]:.2f} s, first worker {first[-1]:.2f} s, "
            f"cached workers {', '.join(f'{s:.3f}' for s in cached[-workers:])} s"
        )
    setup = f"{MIGRATIONS} Alembic migrations, {tables} tables with seed rows"
    figures = [
        Figure(
            "migrations.full",
            NAME,
            f"migrations: worker schema by `alembic upgrade head` ({MIGRATIONS} migrations)",
            "s",
            full,
            reference="migrations.full",
            seconds=median(full),
            note=f"{setup}; e2e_schema_cache = false: what every worker of every run paid.",
        ),
        Figure(
            "migrations.first",
            NAME,
            "migrations: first worker of new inputs (upgrade, pg_dump, one check restore)",
            "s",
            first,
            reference="migrations.full",
            seconds=median(first),
            note="The cache is empty: the worker migrates, dumps its schema, and restores the "
            "dump once into a scratch schema to check its catalog before keeping it.",
        ),
        Figure(
            "migrations.cached",
            NAME,
            "migrations: cached worker schema (restore)",
            "s",
            cached,
            reference="migrations.full",
            seconds=median(cached),
            targets=[Target("value", "<=", 0.5, "≤ 0.5 s per worker")],
            note="The same inputs were built before: the worker restores the checked dump "
            "(pg_dump --schema --inserts, about 1,000 statements) in one transaction.",
        ),
    ]
    return figures
