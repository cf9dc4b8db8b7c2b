"""Migrations once: a worker schema restored from a dump of the same schema setup.

The first worker whose schema setup has a given set of inputs runs it (the MetaData's tables,
then the e2e_schema_setup hook), dumps its schema with pg_dump and keeps the script in testbed's
cache dir under a digest of those inputs. Every later worker, of this run or of later runs, on
any server of the same PostgreSQL major, restores the script instead of migrating.

The inputs: the MetaData's DDL, the hook's name, every file of the hook's top-level package
(where Alembic's scripts usually live) and of e2e_schema_inputs, the installed SQLAlchemy and
Alembic and the server's major version. A change to any of them gives another digest, so no
schema is ever restored from a stale dump. Before a dump is kept, it is restored once into a
scratch schema whose catalog fingerprint (tables, columns, defaults, constraints, indexes,
functions, types) must equal the built schema's; a setup that makes what pg_dump --schema
cannot carry (an extension's functions in the schema) is then run in every worker instead.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from testbed.isolation import schema
from testbed.services.portlock import wait_unless_frozen

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from testbed.config import Settings

# Bump when the dump's format or the fingerprint changes: older dumps are then never read.
FORMAT = "testbed-schema-template-4"
PLACEHOLDER = "__testbed_worker_schema__"
KEEP = 20  # dumps kept in the cache; the least recently used go first
DUMP_TIMEOUT_S = 120
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache"})

# One round trip: everything the catalog says the schema holds, in sorted lines (its own name is
# replaced by '@'). Rows are pg_dump's job (it dumps every row of every table in the schema); what
# it leaves out are objects, e.g. an extension's functions created in the worker schema.
FINGERPRINT_SQL = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s),
rels AS (
  SELECT c.oid, c.relname, c.relkind FROM pg_class c, ns WHERE c.relnamespace = ns.oid
), items AS (
  SELECT 'rel ' || relname || ' ' || relkind::text AS line FROM rels
  UNION ALL
  SELECT 'col ' || r.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || ' ' || a.attnotnull || ' ' || a.attidentity::text || a.attgenerated::text || ' '
         || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'con ' || r.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
    FROM rels r JOIN pg_constraint k ON k.conrelid = r.oid
  UNION ALL
  SELECT 'idx ' || pg_get_indexdef(i.indexrelid) FROM rels r JOIN pg_index i ON i.indrelid = r.oid
  UNION ALL
  SELECT 'trg ' || pg_get_triggerdef(t.oid)
    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'view ' || relname || ' ' || pg_get_viewdef(oid) FROM rels WHERE relkind IN ('v', 'm')
  UNION ALL
  SELECT 'fn ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
         || md5(coalesce(p.prosrc, ''))
    FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
  UNION ALL
  SELECT 'type ' || t.typname || ' ' || t.typtype::text || ' '
         || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = t.oid), '')
    FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typtype IN ('e', 'd', 'c')
)
SELECT line FROM items ORDER BY line
"""


def fingerprint(conn: psycopg.Connection[Any], name: str) -> str:
    """A digest of everything the catalog holds for the schema."""
    conn.execute(f"SET search_path TO {schema.quote(name)}")  # unqualified names in the defs
    rows = conn.execute(FINGERPRINT_SQL, {"schema": name})
    lines = "\n".join(str(row[0]).replace(name, "@") for row in rows)
    return hashlib.sha256(lines.encode()).hexdigest()


# The digest ----------------------------------------------------------------------------------
def metadata_ddl(metadata: MetaData | None) -> str:
    """The PostgreSQL DDL of the MetaData's tables and indexes, in dependency order."""
    if metadata is None:
        return ""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts: list[str] = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    return "\n".join(parts)


def hook_name(setup: Callable[..., object]) -> str | None:
    """`module:qualname` of the hook (through functools.partial and decorators), or None."""
    target: Any = inspect.unwrap(setup)
    while hasattr(target, "func") and not hasattr(target, "__qualname__"):
        target = target.func  # functools.partial
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else None


def hook_sources(setup: Callable[..., object]) -> list[Path]:
    """Where the hook's code and data live: its top-level package's directories (migration
    scripts included when they sit in the package), or its module's file."""
    name = hook_name(setup)
    module = sys.modules.get(name.partition(":")[0]) if name else None
    if module is None:
        return []
    top = sys.modules.get(module.__name__.split(".", 1)[0], module)
    paths = [Path(p) for p in getattr(top, "__path__", [])]
    if not paths and getattr(module, "__file__", None):
        paths = [Path(str(module.__file__))]
    return paths


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
                for name in sorted(names):
                    if not name.endswith((".pyc", ".pyo")):
                        yield Path(root) / name


def _version(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "-"


def inputs_digest(
    metadata: MetaData | None,
    setup: Callable[..., object] | None,
    inputs: Sequence[Path],
    server_major: str,
) -> str | None:
    """The digest of everything the worker schema is made from; None when the hook cannot be
    named (a lambda in a conftest is still named; an object without a module is not)."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("format", FORMAT.encode())
    add("server", server_major.encode())
    add("versions", f"sqlalchemy {_version('sqlalchemy')} alembic {_version('alembic')}".encode())
    add("metadata", metadata_ddl(metadata).encode())
    sources: list[Path] = []
    if setup is not None:
        name = hook_name(setup)
        if name is None:
            return None
        add("hook", name.encode())
        sources = hook_sources(setup)
    for path in _files([*sources, *inputs]):
        add(f"file {path}", path.read_bytes())
    missing = [str(p) for p in inputs if not p.exists()]
    add("missing", "\n".join(missing).encode())
    return digest.hexdigest()[:32]


# Dump and restore ----------------------------------------------------------------------------
def _major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match[0]) if match else 0


def find_pg_dump(candidates: Iterable[Path], server_major: str) -> Path | None:
    """The first pg_dump among candidates whose major is at least the server's (pg_dump
    refuses servers newer than itself)."""
    for path in candidates:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run(
                [str(path), "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.search(r"\)\s+(\d+)", out)
        if match and int(match[1]) >= _major(server_major):
            return path
    return None


def _libpq_env(database_url: str) -> dict[str, str]:
    # The password goes in the environment, never on a command line other users can read.
    params = conninfo_to_dict(schema.libpq_url(database_url))
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
        "sslmode": "PGSSLMODE",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({names[k]: str(v) for k, v in params.items() if k in names and v is not None})
    return env


def dump(pg_dump: Path, database_url: str, name: str) -> str:
    """The schema as a script that recreates it under PLACEHOLDER (psql meta-commands dropped:
    the script is run by the server, not by psql)."""
    proc = subprocess.run(
        [str(pg_dump), f"--schema={name}", "--no-owner", "--inserts", "--rows-per-insert=1000"],
        env=_libpq_env(database_url),
        capture_output=True,
        text=True,
        timeout=DUMP_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = (line for line in proc.stdout.splitlines() if not line.startswith("\\"))
    return re.sub(rf"\b{re.escape(name)}\b", PLACEHOLDER, "\n".join(lines))


def restore(database_url: str, script: str, name: str) -> None:
    """Run the script into schema `name` in one transaction."""
    with (
        psycopg.connect(
            schema.libpq_url(database_url),
            autocommit=True,
            connect_timeout=schema.CONNECT_TIMEOUT_S,
        ) as conn,
        conn.transaction(),
    ):
        conn.execute(script.replace(PLACEHOLDER, schema.check_identifier(name)).encode())


# The cache -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """A cached dump: the script and the fingerprint the schema it came from had."""

    fingerprint: str
    seeded: frozenset[str]  # tables the setup left rows in (kept by committed-mode truncation)
    script: str  # empty: a restore would not give the built catalog, so the setup always runs


class UntrustedCache(RuntimeError):
    """The cache dir or a file in it could be written by another user."""


def _check_private(path: Path) -> None:
    info = path.lstat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022 or path.is_symlink():
        raise UntrustedCache(
            f"{path} is not private to this user (owner uid {info.st_uid}, mode "
            f"{info.st_mode & 0o777:o}); remove it or set e2e_cache_dir to a directory of yours"
        )


class TemplateCache:
    """Dumps of worker schemas by digest, in a 0700 directory of the user's cache dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _dir(self) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(self.directory)
        return self.directory

    def path(self, digest: str) -> Path:
        """The file of one digest."""
        return self.directory / f"{digest}.sql"

    def load(self, digest: str) -> Template | None:
        """The template of the digest, if one was stored (and is ours)."""
        path = self._dir() / f"{digest}.sql"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, encoding="utf-8") as handle:
            _check_private(path)
            header, _, script = handle.read().partition("\n")
        os.utime(path)  # recently used: kept when old ones are pruned
        try:
            meta = json.loads(header.removeprefix("-- "))
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        return Template(str(meta["fingerprint"]), frozenset(meta["seeded"]), script)

    def store(self, digest: str, template: Template) -> None:
        """Write the template atomically, then prune the least recently used beyond KEEP."""
        directory = self._dir()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".sql")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            meta = {
                "format": FORMAT,
                "fingerprint": template.fingerprint,
                "seeded": sorted(template.seeded),
            }
            handle.write(f"-- {json.dumps(meta)}\n{template.script}")
        os.replace(tmp, directory / f"{digest}.sql")
        dumps = sorted(directory.glob("*.sql"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in dumps[KEEP:]:
            old.unlink(missing_ok=True)
            (directory / f"{old.stem}.lock").unlink(missing_ok=True)

    @contextmanager
    def building(self, digest: str) -> Iterator[None]:
        """Hold the digest's build lock: one process builds, the others wait, then restore."""
        path = self._dir() / f"{digest}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            wait_unless_frozen(fd, path, f"the schema template's build lock {path}")
            yield
        finally:
            os.close(fd)


@dataclass
class SchemaTemplates:
    """How a worker schema is made when its inputs have been seen before."""

    cache: TemplateCache
    pg_dump: Path
    digest: str

    def create(
        self,
        database_url: str,
        name: str,
        build: Callable[[], frozenset[str]],
    ) -> tuple[str, frozenset[str]]:
        """Make schema `name`: restored from the template, else built by `build` (the setup,
        returning the tables it left rows in) and dumped for the next worker.
        Returns ("restored" | "built", the seeded tables)."""
        template = self.cache.load(self.digest)
        if template is None:
            with self.cache.building(self.digest):
                template = self.cache.load(self.digest)
                if template is None:
                    return "built", self._build_and_store(database_url, name, build)
        if not template.script:
            return "built", build()  # this setup makes what a dump cannot carry
        restore(database_url, template.script, name)
        return "restored", template.seeded

    def _build_and_store(
        self, database_url: str, name: str, build: Callable[[], frozenset[str]]
    ) -> frozenset[str]:
        """Build, dump, and keep the dump only if restoring it gives the same catalog: what
        pg_dump --schema leaves out (an extension's functions in the schema) is caught here,
        once per set of inputs, instead of in every worker."""
        seeded = build()
        script = dump(self.pg_dump, database_url, name)
        check = schema.check_identifier(f"{name}check")  # a name of this run: reaped with it
        with psycopg.connect(
            schema.libpq_url(database_url),
            autocommit=True,
            connect_timeout=schema.CONNECT_TIMEOUT_S,
        ) as conn:
            built = fingerprint(conn, name)
            try:
                restore(database_url, script, check)
                same = fingerprint(conn, check) == built
            finally:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema.quote(check)} CASCADE")
        self.cache.store(self.digest, Template(built, seeded, script if same else ""))
        return seeded


def pg_dump_candidates(pg_bin: Path | None, cache_dir: Path) -> list[Path]:
    """pg_dump next to E2E_PG_BIN's server, on PATH, then in the pinned PostgreSQL already
    unpacked (never downloaded for this: without one, the setup runs in every worker)."""
    found: list[Path] = []
    if pg_bin is not None:
        found.append((pg_bin.parent if pg_bin.is_file() else pg_bin) / "pg_dump")
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path))
    found += [
        tree / "bin" / "pg_dump"
        for tree in sorted(cache_dir.glob("postgresql-*"), reverse=True)
        if (tree / ".complete").exists()
    ]
    return found


def for_worker(
    settings: Settings,
    server_version: str,
    metadata: MetaData | None,
    setup: Callable[..., object] | None,
    rootdir: Path,
) -> SchemaTemplates | None:
    """The worker's SchemaTemplates, or None: caching is off, there is no setup hook to save
    (create_all alone is as fast as a restore), or no pg_dump can dump this server."""
    if not settings.schema_cache or setup is None:
        return None
    major = str(_major(server_version))
    pg_dump = find_pg_dump(pg_dump_candidates(settings.pg_bin, settings.cache_dir), major)
    if pg_dump is None:
        return None
    inputs = [rootdir / p for p in settings.schema_inputs]
    digest = inputs_digest(metadata, setup, inputs, major)
    if digest is None:
        return None
    return SchemaTemplates(TemplateCache(settings.cache_dir / "schemas"), pg_dump, digest)
