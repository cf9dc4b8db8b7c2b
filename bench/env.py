"""What the run ran on: machine, cores, storage of the data dir, versions of everything compared."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "sqlalchemy",
    "psycopg",
    "redis",
    "pytest",
    "pytest-xdist",
    "pytest-postgresql",
    "factory-boy",
    "faker",
)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def storage_of(path: Path) -> str:
    """'tmpfs on /dev/shm (/dev/shm/x)': the filesystem type and mount point holding `path`."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    real = str(probe.resolve())
    best = ("?", "/")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, fstype, *_ = line.split()
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[1]):
                best = (fstype, mnt)
    except OSError:
        return f"unknown ({path})"
    return f"{best[0]} on {best[1]} ({path})"


def versions(pg_version: str, redis_version: str) -> dict[str, str]:
    """Versions of Python, the servers and every package the comparisons use."""
    out = {"python": platform.python_version(), "postgresql": pg_version, "valkey": redis_version}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_head(repo: Path) -> str:
    """Short commit of the checkout (with '+dirty' when there are local changes)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "backend"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_meta(repo: Path, data_dir: Path, pg_version: str, redis_version: str) -> dict[str, Any]:
    """Everything results.json records about the run's environment."""
    vers = versions(pg_version, redis_version)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {platform.system()} {platform.release()}",
        "cores": os.cpu_count(),
        "storage": storage_of(data_dir),
        "versions": vers,
        "versions_text": ", ".join(f"{k} {v}" for k, v in vers.items()),
        "commit": git_head(repo),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
