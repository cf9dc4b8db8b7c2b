"""One frozen settings object for testbed, built from OPTIONS: each setting declared once.

A setting is an env var (E2E_*), an ini key (e2e_*) and a flag (--e2e-*); precedence:
flag > env var > ini > default. The app under test is described here too (its project name,
MetaData or schema setup, event channel naming), the way pytest-django takes
DJANGO_SETTINGS_MODULE: testbed itself knows nothing of any app.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from testbed.config.parse import (
    BACKENDS,
    parse_backend,
    parse_bool,
    parse_channel_format,
    parse_command,
    parse_dir_names,
    parse_dotted,
    parse_env_names,
    parse_extension_names,
    parse_marker_names,
    parse_optional_path,
    parse_optional_str,
    parse_paths,
    parse_port,
    parse_project_name,
    parse_seconds,
    parse_seed,
    parse_session_options,
)
from testbed.errors import UsageError

__all__ = ["BACKENDS", "OPTIONS", "Option", "Settings", "load_settings", "parse_port"]

COMPOSE_FILE = "docker-compose-e2e.yml"
# testbed's own name for what all projects share: the binary cache and the machine-wide locks.
TOOL = "testbed"
# Every state dir and compose project is `<project name>-e2e-<hash of checkout>`.
STATE_DIR_GLOB = "*-e2e-*"
PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # a project as records may name it


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_cache_dir() -> Path:
    """Where pinned binaries and template data dirs live (shared by every project)."""
    # As root the server runs as an unprivileged user, which cannot traverse /root (0700).
    if _is_root():
        return Path("/var/cache") / TOOL
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(TOOL))


# A state dir holds a copy of the 44 MB template that grows with the run's WAL and data (about
# 130 MB after a long run); the rest is headroom for a second project and the servers' files.
SHM_MIN_FREE = 256 << 20


def state_filesystem(shm: Path = Path("/dev/shm")) -> Path:  # noqa: S108 (checked below)
    """Where state dirs go: tmpfs (/dev/shm) for speed when it is big enough and allows exec,
    else the temp dir. A default container's /dev/shm (64 MB, noexec) is neither; a full one
    would fail the run halfway, and a noexec one breaks whatever runs from a dir beside state."""
    try:
        if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
            return Path(tempfile.gettempdir())
        fs = os.statvfs(shm)
    except OSError:
        return Path(tempfile.gettempdir())
    if fs.f_flag & os.ST_NOEXEC or fs.f_bavail * fs.f_frsize < SHM_MIN_FREE:
        return Path(tempfile.gettempdir())
    return shm


def default_state_root() -> Path:
    """Parent of per-project state dirs: the invoking user's private base on the state
    filesystem (/dev/shm/testbed-<uid>, see state_filesystem), made 0700 and verified on use
    (testbed.services.private). Fixed per user, so `up` in one shell and `pytest` in another
    meet in it; never from XDG_RUNTIME_DIR (a login has it, cron does not)."""
    return state_filesystem() / f"testbed-{os.geteuid()}"


def find_checkout(start: Path | None = None) -> Path:
    """The checkout holding docker-compose-e2e.yml: above this package, else above start (the
    pytest rootdir; default cwd), else start itself."""
    for base in (Path(__file__).resolve().parent, (start or Path.cwd()).resolve()):
        for candidate in (base, *base.parents):
            if (candidate / COMPOSE_FILE).is_file():
                return candidate
    return (start or Path.cwd()).resolve()


def project_name(checkout: Path, name: str = TOOL) -> str:
    """Name shared by the state dir and the compose project, unique per project and checkout."""
    digest = hashlib.sha1(str(checkout.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"{name}-e2e-{digest[:8]}"


Values = Mapping[str, Any]


def _project(given: object, checkout: Path, name: str) -> str:
    """The project: given (override, E2E_PROJECT: e.g. two runs of one checkout on one
    engine), else derived from the app's name and the checkout."""
    project = str(given or project_name(checkout, name))
    if not PROJECT_RE.fullmatch(project):
        raise UsageError(
            f"E2E_PROJECT={project!r}: a project is 1-63 lowercase letters, digits, '-' or "
            "'_', starting with a letter or digit (it names the compose project and state dir)"
        )
    return project


@dataclass(frozen=True)
class Option:
    """One setting: its env var, ini key, flag, help, default and parser.

    `derive` computes the default from the settings resolved so far (and the environment)
    when a fixed `default` will not do; `default_text` describes it for --help and the docs.
    """

    name: str
    help: str
    parse: Callable[[str], object]
    default: object = None
    derive: Callable[[Values, Mapping[str, str]], object] | None = None
    default_text: str | None = None
    cli: bool = False  # also a flag of `python -m testbed`

    @property
    def env(self) -> str:
        """The environment variable, E2E_<NAME>."""
        return f"E2E_{self.name.upper()}"

    @property
    def ini(self) -> str:
        """The ini key, e2e_<name>."""
        return f"e2e_{self.name}"

    @property
    def flag(self) -> str:
        """The pytest flag, --e2e-<name>."""
        return f"--e2e-{self.name.replace('_', '-')}"

    def describe_default(self) -> str:
        """The default as the docs show it."""
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return "(none)" if self.default is None else str(self.default)


def _state_dir(values: Values, env: Mapping[str, str]) -> Path:
    return default_state_root() / str(values["project"])


def _cache_dir(values: Values, env: Mapping[str, str]) -> Path:
    return default_cache_dir()


def _ci(values: Values, env: Mapping[str, str]) -> bool:
    # CI must never turn missing services into green skips.
    return env.get("CI", "").strip().lower() == "true"


OPTIONS: tuple[Option, ...] = (
    # The app under test ---------------------------------------------------------------------
    Option(
        "project_name",
        "the app's name: the E2E role and database are <name>_e2e, the state dir and compose "
        "project <name>-e2e-<hash of checkout>",
        parse_project_name,
        default="testbed",
        cli=True,
    ),
    Option(
        "metadata",
        "the app's SQLAlchemy MetaData (or declarative Base) as module:attribute; every "
        "worker schema gets its tables (create_all)",
        parse_dotted,
    ),
    Option(
        "schema_setup",
        "a callable module:function(engine) run on a worker schema after the tables are "
        "created, e.g. Alembic migrations or seed data; its engine selects the worker schema "
        "(with e2e_schema_cache, later schemas of the same inputs are restored instead)",
        parse_dotted,
    ),
    Option(
        "schema_cache",
        "restore worker schemas from a dump of the first one made from the same inputs (the "
        "MetaData's DDL, the setup hook and its package's files, e2e_schema_inputs) instead "
        "of running the setup again; any change to them builds a new one",
        parse_bool,
        default=True,
    ),
    Option(
        "schema_inputs",
        "files or directories the schema setup reads besides its own package (e.g. an "
        "alembic/ directory at the project root), relative to pytest's rootdir; a change to "
        "any of them rebuilds the cached schema",
        parse_paths,
        default=(),
        default_text="(none)",
    ),
    Option(
        "channel_format",
        "how the app names an event channel: {prefix} is the worker's prefix, {name} the "
        "name given to e2e_events.subscribe()",
        parse_channel_format,
        default="{prefix}{name}",
    ),
    Option(
        "database_url_env",
        "environment variables testbed sets to the worker's database URL (its schema selected "
        "with options=-csearch_path), for apps that build their own engine, e.g. DATABASE_URL",
        parse_env_names,
        default=(),
        default_text="(none)",
    ),
    Option(
        "redis_url_env",
        "environment variables testbed sets to the worker's Redis URL (its own logical "
        "database), e.g. REDIS_URL",
        parse_env_names,
        default=(),
        default_text="(none)",
    ),
    Option(
        "session_options",
        "Session options of the test Session, e.g. expire_on_commit=true,autoflush=false",
        parse_session_options,
        default={"expire_on_commit": False},
        default_text="expire_on_commit=false",
    ),
    Option(
        "dirs",
        "names of the test directories that need the services: a run whose paths are, "
        "contain or lie inside one starts them (so unit-test runs start nothing)",
        parse_dir_names,
        default=("e2e",),
        default_text="e2e",
    ),
    Option(
        "committed_dirs",
        "names of test directories whose tests run committed, as if each were marked "
        "@pytest.mark.committed (real commits, then TRUNCATE), e.g. concurrency",
        parse_dir_names,
        default=(),
        default_text="(none)",
    ),
    Option(
        "committed_markers",
        "markers that make a test run committed, as @pytest.mark.committed does, e.g. "
        "transactional",
        parse_marker_names,
        default=(),
        default_text="(none)",
    ),
    Option(
        "command",
        "how messages name testbed's commands (up, down, status, env, reap): python -m testbed, "
        "or the command the repository wraps them in, e.g. make",
        parse_command,
        default="python -m testbed",
    ),
    # The services -----------------------------------------------------------------------
    Option(
        "backend",
        "where the services come from: auto (external if URLs are set, docker if an engine "
        "answers, else native), native, docker or external",
        parse_backend,
        default="auto",
        cli=True,
    ),
    Option(
        "pg_port",
        "PostgreSQL 16 port on 127.0.0.1 (native and docker)",
        parse_port,
        default=5433,
        cli=True,
    ),
    Option(
        "redis_port",
        "Valkey 8 port on 127.0.0.1 (native and docker)",
        parse_port,
        default=6380,
        cli=True,
    ),
    Option(
        "pg_extensions",
        "extensions that need a superuser (e.g. dblink, pg_stat_statements): the E2E role is "
        "not one, so testbed's bootstrap role creates these in the E2E database at start "
        "(native and docker); trusted ones (pg_trgm, citext, uuid-ossp...) need no entry",
        parse_extension_names,
        default=(),
        default_text="(none)",
    ),
    Option(
        "database_url",
        "use this PostgreSQL (external backend); must be an E2E database, never port 5432",
        parse_optional_str,
        cli=True,
    ),
    Option(
        "redis_url",
        "use this Redis/Valkey (external backend); never port 6379",
        parse_optional_str,
        cli=True,
    ),
    Option(
        "pg_bin",
        "directory with PostgreSQL 16 binaries (postgres, initdb); else PATH, else pinned",
        parse_optional_path,
        cli=True,
    ),
    Option(
        "valkey_bin",
        "valkey-server 8 binary (or its directory); else PATH, else pinned",
        parse_optional_path,
        cli=True,
    ),
    Option(
        "cache_dir",
        "cache for pinned binaries, the template data dir, schema dumps and test data pools",
        parse_optional_path,
        derive=_cache_dir,
        default_text="the user cache dir's testbed/ (/var/cache/testbed as root)",
        cli=True,
    ),
    Option(
        "state_dir",
        "pid files, logs and data dirs of the native services",
        parse_optional_path,
        derive=_state_dir,
        default_text="<project> in testbed-<uid> (0700) under /dev/shm (256 MB free, exec "
        "allowed), else the temp dir",
        cli=True,
    ),
    Option(
        "pg_image",
        "PostgreSQL image of the docker backend (default: postgres:16.15-alpine, else a local "
        "build tagged testbed/postgres:16.15)",
        parse_optional_str,
        default_text="postgres:16.15-alpine, else the local build",
        cli=True,
    ),
    Option(
        "redis_image",
        "Valkey image of the docker backend (default: valkey/valkey:8.1.8-alpine, else a local "
        "build tagged testbed/valkey:8.1.8)",
        parse_optional_str,
        default_text="valkey/valkey:8.1.8-alpine, else the local build",
        cli=True,
    ),
    Option(
        "wait_timeout",
        "seconds to wait for the services to answer",
        parse_seconds,
        default=30.0,
        cli=True,
    ),
    # The run ----------------------------------------------------------------------------
    Option("seed", "seed for the test data (printed by every run; replays it)", parse_seed),
    Option("keep", "leave services the run started running afterwards", parse_bool, default=False),
    Option(
        "require_services",
        "fail instead of skipping when the services are unavailable",
        parse_bool,
        derive=_ci,
        default_text="true when CI=true, else false",
    ),
)
OPTIONS_BY_NAME: Mapping[str, Option] = {opt.name: opt for opt in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Every testbed setting, resolved (one field per Option), plus checkout and project.

    No defaults here: they live in OPTIONS; build Settings with load_settings().
    """

    project_name: str
    metadata: str | None
    schema_setup: str | None
    schema_cache: bool
    schema_inputs: tuple[str, ...]
    channel_format: str
    database_url_env: tuple[str, ...]
    redis_url_env: tuple[str, ...]
    session_options: Mapping[str, bool]
    dirs: tuple[str, ...]
    committed_dirs: tuple[str, ...]
    committed_markers: tuple[str, ...]
    command: str
    backend: str
    pg_port: int
    redis_port: int
    pg_extensions: tuple[str, ...]
    database_url: str | None
    redis_url: str | None
    pg_bin: Path | None
    valkey_bin: Path | None
    cache_dir: Path
    state_dir: Path
    pg_image: str | None
    redis_image: str | None
    wait_timeout: float
    seed: int | None
    keep: bool
    require_services: bool
    checkout: Path
    project: str  # <project_name>-e2e-<hash>: state dir name and compose project

    @property
    def compose_file(self) -> Path:
        """The compose file of this checkout."""
        return self.checkout / COMPOSE_FILE

    @property
    def pg_role(self) -> str:
        """The E2E role (and database) name, <project name>_e2e: the guard wants 'e2e' in it."""
        return self.project_name.replace("-", "_") + "_e2e"

    @property
    def pg_database(self) -> str:
        """The E2E database, named like the role."""
        return self.pg_role

    @property
    def docker_label(self) -> str:
        """The value of the project label on this project's containers."""
        return self.project


_DERIVED = ("checkout", "project")


def _coerce(opt: Option, value: object) -> object:
    # Flags and ini keys arrive as strings; Python callers may pass typed values, checked alike.
    if isinstance(value, dict | tuple | list):
        return tuple(value) if isinstance(value, list) else value
    return opt.parse(value if isinstance(value, str) else str(value))


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    ini: Mapping[str, object] | None = None,
    **overrides: object,
) -> Settings:
    """Resolve settings: overrides (flags) > env vars > ini values > defaults.

    An override or ini value of None means "not given". `ini` is keyed by option name.
    """
    environ = os.environ if env is None else env
    unknown = sorted(set(overrides) - set(OPTIONS_BY_NAME) - set(_DERIVED))
    unknown += sorted(set(ini or {}) - set(OPTIONS_BY_NAME))
    if unknown:
        raise UsageError(
            f"unknown testbed setting(s): {', '.join(unknown)}; valid: {', '.join(OPTIONS_BY_NAME)}"
        )
    values: dict[str, Any] = {}
    checkout_value = overrides.get("checkout")
    values["checkout"] = Path(str(checkout_value)).resolve() if checkout_value else find_checkout()
    for opt in OPTIONS:
        if overrides.get(opt.name) is not None:
            values[opt.name] = _coerce(opt, overrides[opt.name])
        elif environ.get(opt.env) is not None:
            try:
                values[opt.name] = opt.parse(environ[opt.env])
            except UsageError as exc:
                raise UsageError(f"{opt.env}: {exc}") from None
        elif ini and ini.get(opt.name) is not None:
            try:
                values[opt.name] = _coerce(opt, ini[opt.name])
            except UsageError as exc:
                raise UsageError(f"ini {opt.ini}: {exc}") from None
        else:
            values[opt.name] = opt.default
        if opt.name == "project_name":
            values["project"] = _project(
                overrides.get("project") or environ.get("E2E_PROJECT"),
                values["checkout"],
                values[opt.name],
            )
        if values[opt.name] is None and opt.derive is not None:
            values[opt.name] = opt.derive(values, environ)
    if values["pg_port"] == values["redis_port"]:
        raise UsageError(
            f"PostgreSQL and Valkey cannot share port {values['pg_port']}: set E2E_PG_PORT and "
            "E2E_REDIS_PORT to two different ports"
        )
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})
