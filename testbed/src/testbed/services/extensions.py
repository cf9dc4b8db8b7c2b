"""Which bundled PostgreSQL extensions can load on this machine, and a clear refusal for the rest.

A pinned PostgreSQL build carries every contrib extension, but an extension's shared library may
need a system library this machine lacks (uuid-ossp needs libossp-uuid.so.16). PostgreSQL's own
error then names the missing .so, not what to install; testbed finds such extensions once per
state of the dynamic loader's cache, says so at start, and installs an event trigger that makes
`CREATE EXTENSION` of one of them fail with the package to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from testbed.services.procs import server_env

# Package names for libraries known to be missing on common systems.
PACKAGES: Mapping[str, str] = {"libossp-uuid.so.16": "libossp-uuid16"}
TRIGGER = "testbed_refuse_unloadable_extension"
SUPERUSER_TRIGGER = "testbed_refuse_superuser_extension"
SETTING = "e2e_pg_extensions (E2E_PG_EXTENSIONS)"
_CACHE_NAME = ".unloadable-extensions.json"
_LD_CACHE = Path("/etc/ld.so.cache")
_MODULE = re.compile(r"^\s*module_pathname\s*=\s*'\$libdir/(?P<lib>[^']+)'", re.MULTILINE)
_NOT_FOUND = re.compile(r"^\s*(?P<lib>\S+) => not found", re.MULTILINE)


def install_hint(library: str) -> str:
    """What to install for a missing shared library."""
    package = PACKAGES.get(library)
    if package is not None:
        return f"install {package} (Debian/Ubuntu: apt-get install {package})"
    return f"install the system package that provides {library}"


def extension_modules(share_dir: Path) -> dict[str, str]:
    """Extension name -> its shared library's base name, from the control files."""
    found = {}
    for control in sorted((share_dir / "extension").glob("*.control")):
        match = _MODULE.search(control.read_text(errors="replace"))
        if match is not None:
            found[control.stem] = match["lib"]
    return found


def _loader_state() -> str:
    """Changes whenever a library is installed (ldconfig rewrites the cache) or the path moves."""
    try:
        stat = _LD_CACHE.stat()
        cache = f"{stat.st_mtime_ns}:{stat.st_size}"
    except OSError:
        cache = "none"
    return f"{cache}|{os.environ.get('LD_LIBRARY_PATH', '')}"


def install_dirs(bindir: Path) -> tuple[Path, Path]:
    """(pkglibdir, sharedir) of a PostgreSQL install: pg_config's answer, else bin/../lib|share."""
    pg_config = bindir / "pg_config"
    if pg_config.is_file():
        proc = subprocess.run(
            [str(pg_config), "--pkglibdir", "--sharedir"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        lines = proc.stdout.split()
        if proc.returncode == 0 and len(lines) == 2:
            return Path(lines[0]), Path(lines[1])
    return bindir.parent / "lib", bindir.parent / "share"


def _missing_by_module(
    lib_dir: Path, modules: set[str], library_dir: Path | None
) -> dict[str, list[str]]:
    """Shared library base name -> the libraries the dynamic loader cannot find for it."""
    ldd = shutil.which("ldd")
    paths = [lib_dir / f"{m}.so" for m in sorted(modules) if (lib_dir / f"{m}.so").is_file()]
    if ldd is None or not paths:
        return {}  # no ldd (macOS): PostgreSQL's own error is all there is
    # One ldd for every module: it prints "<path>:" and then that module's libraries.
    proc = subprocess.run(
        [ldd, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=server_env(library_dir),  # what the server's loader will see
    )
    missing: dict[str, list[str]] = {}
    current: str | None = None
    for line in proc.stdout.splitlines():
        if not line.startswith(("\t", " ")) and line.endswith(":"):
            current = Path(line[:-1]).stem
        elif current is not None and (match := _NOT_FOUND.match(line)) is not None:
            missing.setdefault(current, []).append(match["lib"])
    return missing


def unloadable(
    bindir: Path, cache_dir: Path, library_dir: Path | None = None
) -> dict[str, list[str]]:
    """Extension name -> missing system libraries, for the PostgreSQL install of bindir.

    ldd over every module costs about a second, so the answer is kept in the cache and
    recomputed only when the install or the dynamic loader's state changes.
    """
    cache = cache_dir / _CACHE_NAME
    key = f"{bindir.resolve()}|{library_dir}|{_loader_state()}"
    try:
        saved = json.loads(cache.read_text())
        if key in saved:
            return {str(k): list(v) for k, v in saved[key].items()}
    except (OSError, ValueError, AttributeError):
        saved = {}
    lib_dir, share_dir = install_dirs(bindir)
    modules = extension_modules(share_dir)
    by_module = _missing_by_module(lib_dir, set(modules.values()), library_dir)
    missing = {ext: by_module[mod] for ext, mod in modules.items() if mod in by_module}
    try:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({key: missing}))
        tmp.replace(cache)
    except OSError:
        pass  # an unwritable cache: compute again next time
    return missing


def describe(missing: Mapping[str, list[str]]) -> str:
    """One line for the start output: which extensions cannot load and what to install."""
    parts = [
        f"{ext} needs {', '.join(libs)}: {install_hint(libs[0])}"
        for ext, libs in sorted(missing.items())
    ]
    return "extensions that cannot load on this machine: " + "; ".join(parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def superuser_refusal_sql() -> list[str]:
    """Statements that make CREATE EXTENSION of an extension that needs a superuser, by the
    (non-superuser) E2E role, fail with the fix: the setting that has testbed's bootstrap role
    create it at start. Already installed ones pass (CREATE EXTENSION IF NOT EXISTS)."""
    pattern = r'create\s+extension\s+(?:if\s+not\s+exists\s+)?"?([a-z0-9_-]+)'
    message = "extension % needs a superuser to create, and the E2E role % is not one"
    hint = (
        f"list it in {SETTING}: testbed's bootstrap role creates it in the E2E database at "
        "start (or use a trusted extension)"
    )
    return [
        f"CREATE OR REPLACE FUNCTION public.{SUPERUSER_TRIGGER}() RETURNS event_trigger "
        "LANGUAGE plpgsql SET search_path = pg_catalog AS $testbed$\n"
        "DECLARE\n"
        f"  ext text := substring(lower(current_query()) from {_literal(pattern)});\n"
        "BEGIN\n"
        "  IF ext IS NULL OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)\n"
        "     OR EXISTS (SELECT 1 FROM pg_extension WHERE extname = ext) THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  IF EXISTS (SELECT 1 FROM pg_available_extension_versions v\n"
        "             WHERE v.name = ext AND v.superuser AND NOT v.trusted)\n"
        "     AND NOT EXISTS (SELECT 1 FROM pg_available_extension_versions v\n"
        "                     WHERE v.name = ext AND (v.trusted OR NOT v.superuser)) THEN\n"
        f"    RAISE EXCEPTION {_literal(message)}, ext, current_user\n"
        f"      USING HINT = {_literal(hint)};\n"
        "  END IF;\n"
        "END\n$testbed$",
        f"DROP EVENT TRIGGER IF EXISTS {SUPERUSER_TRIGGER}",
        f"CREATE EVENT TRIGGER {SUPERUSER_TRIGGER} ON ddl_command_start "
        f"WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION public.{SUPERUSER_TRIGGER}()",
    ]


def create_sql(names: tuple[str, ...]) -> list[str]:
    """CREATE EXTENSION IF NOT EXISTS for each name (the bootstrap role runs them)."""
    return [f'CREATE EXTENSION IF NOT EXISTS "{name}" CASCADE' for name in names]


def refusal_sql(missing: Mapping[str, list[str]]) -> list[str]:
    """Statements that make CREATE EXTENSION of an unloadable extension fail with the fix.

    An event trigger at ddl_command_start sees the statement text only; it matches the
    extension's name, quoted or not, after CREATE EXTENSION [IF NOT EXISTS].
    """
    if not missing:
        return []  # each start copies a template without the trigger: nothing to undo
    checks = []
    for ext, libs in sorted(missing.items()):
        name = re.escape(ext)
        pattern = rf'create\s+extension\s+(if\s+not\s+exists\s+)?"?{name}"?(\s|;|$)'
        message = (
            f"extension {ext} cannot load on this machine: its library needs "
            f"{', '.join(libs)}, which is not installed"
        )
        hint = _literal(install_hint(libs[0]))
        checks.append(
            f"  IF query ~ {_literal(pattern)} THEN\n"
            f"    RAISE EXCEPTION {_literal(message)} USING HINT = {hint};\n"
            "  END IF;"
        )
    body = "\n".join(checks)
    return [
        f"CREATE OR REPLACE FUNCTION public.{TRIGGER}() RETURNS event_trigger "
        "LANGUAGE plpgsql SET search_path = pg_catalog AS $testbed$\n"
        "DECLARE query text := lower(current_query());\nBEGIN\n"
        f"{body}\nEND\n$testbed$",
        f"DROP EVENT TRIGGER IF EXISTS {TRIGGER}",
        f"CREATE EVENT TRIGGER {TRIGGER} ON ddl_command_start "
        f"WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION public.{TRIGGER}()",
    ]


def install_refusals(
    database_urls: list[str],
    missing: Mapping[str, list[str]],
    *,
    create: tuple[str, ...] = (),
    superuser_refusal: bool = True,
) -> None:
    """As the bootstrap superuser: create the extensions asked for (in the first database, the
    E2E one) and put the refusal triggers in each database (template1 too, so new databases
    inherit them). superuser_refusal=False: the databases have that trigger already (the
    native backend's template carries it)."""
    import psycopg

    for index, url in enumerate(database_urls):
        statements = [
            *(superuser_refusal_sql() if superuser_refusal else []),
            *refusal_sql(missing),
        ]
        if not statements and not (create and index == 0):
            continue
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            for statement in (create_sql(create) if index == 0 else []) + statements:
                conn.execute(statement.encode())
