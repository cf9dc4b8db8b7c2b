"""One frozen settings object for testbed: each setting declared once (env var, ini key, flag)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from testbed.errors import UsageError

BACKENDS = ("auto", "native", "docker", "external")
COMPOSE_FILE = "docker-compose-e2e.yml"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_backend(value: str) -> str:
    """Return a valid backend name or raise UsageError listing the valid ones."""
    name = value.strip().lower()
    if name not in BACKENDS:
        raise UsageError(
            f"unknown E2E backend {value!r}; valid backends: {', '.join(BACKENDS)} "
            "(set E2E_BACKEND or --e2e-backend to one of them)"
        )
    return name


def parse_port(value: str) -> int:
    """Return a TCP port number (1-65535) or raise UsageError."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise UsageError(f"invalid port {value!r}: expected a number from 1 to 65535")
    return port


def parse_bool(value: str) -> bool:
    """Return a boolean from 1/0, true/false, yes/no, on/off (case-insensitive)."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"invalid boolean {value!r}: use one of 1/0, true/false, yes/no, on/off")


def parse_seconds(value: str) -> float:
    """Return a positive number of seconds or raise UsageError."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"invalid timeout {value!r}: expected a positive number of seconds")
    return seconds


def parse_seed(value: str) -> int | None:
    """Return an integer seed, or None for an empty value (a fresh seed per run)."""
    if not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"invalid seed {value!r}: expected an integer") from None


def parse_optional_str(value: str) -> str | None:
    """Return the value, or None when it is empty."""
    return value.strip() or None


def parse_optional_path(value: str) -> Path | None:
    """Return an absolute path with ~ expanded, or None when empty."""
    text = value.strip()
    return Path(text).expanduser().absolute() if text else None


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_cache_dir() -> Path:
    """Where pinned binaries and the template data dir live."""
    # As root the server runs as an unprivileged user, which cannot traverse /root (0700).
    if _is_root():
        return Path("/var/cache/opsdesk-e2e")
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("opsdesk-e2e"))


def default_state_root() -> Path:
    """Parent of per-project state dirs: tmpfs (/dev/shm) when present, for speed."""
    shm = Path("/dev/shm")  # noqa: S108 (a per-project subdir, created 0755 by us)
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def find_checkout(start: Path | None = None) -> Path:
    """The checkout holding docker-compose-e2e.yml: above this package, else above cwd."""
    for base in (Path(__file__).resolve().parent, start or Path.cwd()):
        for candidate in (base, *base.parents):
            if (candidate / COMPOSE_FILE).is_file():
                return candidate
    return (start or Path.cwd()).resolve()


def project_name(checkout: Path) -> str:
    """Name shared by state dirs and the compose project, unique per checkout path."""
    digest = hashlib.sha1(str(checkout.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"opsdesk-e2e-{digest[:8]}"


@dataclass(frozen=True)
class Option:
    """One setting: its env var, ini key, command-line flag, help, default and parser."""

    name: str
    env: str
    ini: str
    flag: str
    help: str
    default: object
    parse: Callable[[str], object]


def _opt(name: str, default: object, parse: Callable[[str], object], help: str) -> Option:
    return Option(
        name=name,
        env=f"E2E_{name.upper()}",
        ini=f"e2e_{name}",
        flag=f"--e2e-{name.replace('_', '-')}",
        help=help,
        default=default,
        parse=parse,
    )


OPTIONS: tuple[Option, ...] = (
    _opt(
        "backend",
        "auto",
        parse_backend,
        "where the services come from: auto (external if URLs are set, docker if an engine "
        "answers, else native), native, docker or external",
    ),
    _opt("pg_port", 5433, parse_port, "PostgreSQL 16 port on 127.0.0.1 (native and docker)"),
    _opt("redis_port", 6380, parse_port, "Valkey 8 port on 127.0.0.1 (native and docker)"),
    _opt(
        "database_url",
        None,
        parse_optional_str,
        "use this PostgreSQL (external backend); must be an E2E database, never port 5432",
    ),
    _opt(
        "redis_url",
        None,
        parse_optional_str,
        "use this Redis/Valkey (external backend); never port 6379",
    ),
    _opt(
        "pg_bin",
        None,
        parse_optional_path,
        "directory with PostgreSQL 16 binaries (postgres, initdb); else PATH, else pinned",
    ),
    _opt(
        "valkey_bin",
        None,
        parse_optional_path,
        "valkey-server 8 binary (or its directory); else PATH, else pinned",
    ),
    _opt(
        "cache_dir",
        None,
        parse_optional_path,
        "cache for pinned binaries and the template data dir",
    ),
    _opt(
        "state_dir",
        None,
        parse_optional_path,
        "pid files, logs and data dirs of the native services (default: on /dev/shm)",
    ),
    _opt("wait_timeout", 30.0, parse_seconds, "seconds to wait for the services to answer"),
    _opt("seed", None, parse_seed, "seed for the test data (printed by every run; replays it)"),
    _opt("keep", False, parse_bool, "leave services the run started running afterwards"),
    _opt(
        "require_services",
        False,
        parse_bool,
        "fail instead of skipping when the services are unavailable (default: true when CI=true)",
    ),
)
OPTIONS_BY_NAME: Mapping[str, Option] = {opt.name: opt for opt in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Every testbed setting, resolved; one field per Option plus the derived project."""

    backend: str = "auto"
    pg_port: int = 5433
    redis_port: int = 6380
    database_url: str | None = None
    redis_url: str | None = None
    pg_bin: Path | None = None
    valkey_bin: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    state_dir: Path = field(default_factory=lambda: default_state_root() / "opsdesk-e2e")
    wait_timeout: float = 30.0
    seed: int | None = None
    keep: bool = False
    require_services: bool = False
    checkout: Path = field(default_factory=find_checkout)
    project: str = "opsdesk-e2e"

    @property
    def compose_file(self) -> Path:
        """The compose file of this checkout."""
        return self.checkout / COMPOSE_FILE


_DERIVED = ("checkout", "project")


def _coerce(opt: Option, value: object) -> object:
    # CLI flags and ini keys arrive as strings; Python callers may pass typed values.
    if isinstance(value, str):
        return opt.parse(value)
    if opt.name in ("pg_bin", "valkey_bin", "cache_dir", "state_dir") and isinstance(value, Path):
        return value.expanduser().absolute()
    if opt.name in ("pg_port", "redis_port") and isinstance(value, int):
        return parse_port(str(value))
    if opt.name == "wait_timeout" and isinstance(value, int | float):
        return parse_seconds(str(value))
    return value


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    ini: Mapping[str, object] | None = None,
    **overrides: object,
) -> Settings:
    """Resolve settings: overrides (CLI flags) > env vars > ini values > defaults.

    An override or ini value of None means "not given". `ini` is keyed by option name.
    """
    environ = os.environ if env is None else env
    unknown = sorted(set(overrides) - set(OPTIONS_BY_NAME) - set(_DERIVED))
    unknown += sorted(set(ini or {}) - set(OPTIONS_BY_NAME))
    if unknown:
        raise UsageError(
            f"unknown testbed setting(s): {', '.join(unknown)}; valid: {', '.join(OPTIONS_BY_NAME)}"
        )
    values: dict[str, object] = {}
    for opt in OPTIONS:
        if overrides.get(opt.name) is not None:
            values[opt.name] = _coerce(opt, overrides[opt.name])
        elif environ.get(opt.env) is not None:
            try:
                values[opt.name] = opt.parse(environ[opt.env])
            except UsageError as exc:
                raise UsageError(f"{opt.env}: {exc}") from None
        elif ini and ini.get(opt.name) is not None:
            values[opt.name] = _coerce(opt, ini[opt.name])
        elif opt.name == "require_services":
            # CI must never turn missing services into green skips.
            values[opt.name] = environ.get("CI", "").strip().lower() == "true"
        else:
            values[opt.name] = opt.default
    checkout_value = overrides.get("checkout")
    checkout = Path(str(checkout_value)).resolve() if checkout_value else find_checkout()
    project = str(overrides.get("project") or project_name(checkout))
    if values["cache_dir"] is None:
        values["cache_dir"] = default_cache_dir()
    if values["state_dir"] is None:
        values["state_dir"] = default_state_root() / project
    known = {f.name for f in fields(Settings)}
    return Settings(
        **{k: v for k, v in values.items() if k in known},  # type: ignore[arg-type]
        checkout=checkout,
        project=project,
    )
