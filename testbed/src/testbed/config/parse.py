"""Parsers for setting values: each turns the text of an env var, ini key or flag into a value.

Every parser raises UsageError with a message saying what a valid value looks like.
"""

from __future__ import annotations

import re
from pathlib import Path

from testbed.errors import UsageError

BACKENDS = ("auto", "native", "docker", "external")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# Becomes a role and database name (`<name>_e2e`), a compose project and a directory name.
_PROJECT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# `package.module:attribute.path` (pytest-postgresql's `load` style) or `package.module.attr`.
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SESSION_OPTIONS = ("expire_on_commit", "autoflush", "autobegin")


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


MAX_SECONDS = 3600.0  # every wait is bounded: an hour is more than any start needs


def parse_seconds(value: str) -> float:
    """Return a finite number of seconds in (0, MAX_SECONDS] or raise UsageError."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    # `not 0 < x <= max` also refuses nan and inf: a wait must end.
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(
            f"invalid timeout {value!r}: expected a number of seconds above 0 and at most "
            f"{MAX_SECONDS:g}"
        )
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


def parse_project_name(value: str) -> str:
    """Return a project name usable in role, database, container and directory names."""
    name = value.strip()
    if not _PROJECT_NAME.fullmatch(name):
        raise UsageError(
            f"invalid project name {value!r}: use 1-40 lowercase letters, digits, '_' or '-', "
            "starting with a letter (e.g. shop)"
        )
    return name


def parse_dotted(value: str) -> str | None:
    """Return a dotted reference such as `myapp.models:Base.metadata`, or None when empty."""
    text = value.strip()
    if not text:
        return None
    if not _DOTTED.fullmatch(text) or ("." not in text and ":" not in text):
        raise UsageError(
            f"invalid reference {value!r}: write module:attribute (e.g. myapp.models:Base.metadata)"
        )
    return text


def parse_channel_format(value: str) -> str:
    """Return a channel name template using {prefix} and {name}, e.g. `{prefix}shop.{name}`."""
    text = value.strip()
    try:
        sample = text.format(prefix="P:", name="N")
    except (KeyError, IndexError, ValueError, AttributeError):
        sample = ""
    if "P:" not in sample or "N" not in sample.replace("P:", "", 1):
        raise UsageError(
            f"invalid channel format {value!r}: use {{prefix}} and {{name}} and no other "
            "fields, e.g. {prefix}{name} or {prefix}shop.{name}"
        )
    return text


def parse_env_names(value: str) -> tuple[str, ...]:
    """Return environment variable names from a comma- or space-separated list."""
    names = tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)
    for name in names:
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(
                f"invalid environment variable name {name!r}: use letters, digits and '_'"
            )
    return names


_EXTENSION = re.compile(r"^[a-z0-9_][a-z0-9_-]*$")


def parse_extension_names(value: str) -> tuple[str, ...]:
    """Return PostgreSQL extension names from a comma- or space-separated list."""
    names = tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)
    for name in names:
        if not _EXTENSION.fullmatch(name) or len(name) > 63:
            raise UsageError(
                f"invalid extension name {name!r}: use the name CREATE EXTENSION takes, "
                "e.g. dblink or pg_stat_statements"
            )
    return names


def parse_dir_names(value: str) -> tuple[str, ...]:
    """Return directory names (not paths) from a comma- or space-separated list; at least one."""
    names = tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)
    if not names or any("/" in name or name in (".", "..") for name in names):
        raise UsageError(
            f"invalid directory names {value!r}: give one or more names such as e2e, "
            "comma-separated, without slashes"
        )
    return names


def parse_marker_names(value: str) -> tuple[str, ...]:
    """Return pytest marker names from a comma- or space-separated list."""
    names = tuple(part for part in re.split(r"[\s,]+", value.strip()) if part)
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise UsageError(
            f"invalid marker names {', '.join(bad)}: give names such as transactional, "
            "comma-separated"
        )
    return names


def parse_command(value: str) -> str:
    """Return the command prefix messages name (e.g. "make"), stripped; never empty."""
    command = " ".join(value.split())
    if not command:
        raise UsageError("empty command: give e.g. `python -m testbed` or `make`")
    return command


def parse_paths(value: str) -> tuple[str, ...]:
    """Return paths from a comma- or newline-separated list (spaces inside a path are kept)."""
    return tuple(part.strip() for part in re.split(r"[,\n]+", value) if part.strip())


def parse_session_options(value: str) -> dict[str, bool]:
    """Return Session keyword arguments from `expire_on_commit=true, autoflush=false`."""
    options: dict[str, bool] = {}
    for part in re.split(r"[\s,]+", value.strip()):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        if not sep or key not in SESSION_OPTIONS:
            raise UsageError(
                f"invalid session option {part!r}: write name=true|false with a name from "
                f"{', '.join(SESSION_OPTIONS)}"
            )
        options[key] = parse_bool(raw)
    return options
