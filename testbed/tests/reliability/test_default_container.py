"""testbed at home in a default container: `docker run` with no extra options, as GitLab's
docker executor and GitHub `container:` jobs run a job. There /dev/shm is 64 MB and noexec,
PID 1 (`tail -f /dev/null`) reaps no orphans, and root lacks CAP_SYS_PTRACE. A slice of the
real E2E suite runs in one on the provisioned engine with the native backend; before testbed
chose the state filesystem, PostgreSQL filled /dev/shm halfway through ("No space left on
device") and the run failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_docker import require_docker
from rel_sandbox import REPO

from testbed.config import load_settings
from testbed.services.binaries import pinned_postgres_tree, pinned_valkey_tree, platform_key

# The base of the local service images (`make images`, which `make reliability` provides
# under CI=true): Debian bookworm with the libraries the pinned PostgreSQL binaries load.
IMAGE = "testbed/base:bookworm"
# A real suite's worth of opsdesk's, the suite scripts/e2e.sh runs.
SLICE = "test_crm"
VENV = Path(sys.executable).parent.parent

pytestmark = pytest.mark.timeout(600)


def _docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def _payload(pg: Path, valkey: Path) -> list[Path]:
    """What the container needs, copied in at the same paths: this checkout with its venv, the
    venv's interpreter (the base image has no Python; the venv's scripts and editable installs
    name these paths) and the pinned binaries."""
    base = Path(sys.base_prefix).resolve()
    if base.parts[1:2] in (("usr",), ("bin",)):
        pytest.skip(f"the venv is on the system's Python ({base}), which {IMAGE} does not have")
    paths = {REPO, VENV.resolve(), base, pg, valkey}
    if base.parts[1:3] == ("nix", "store"):  # a Nix Python loads its libraries from the store
        closure = subprocess.run(
            ["nix-store", "--query", "--requisites", str(base)],
            capture_output=True,
            text=True,
            check=True,
        )
        paths |= {Path(line) for line in closure.stdout.split()}
    # Nested paths (the venv in the checkout) travel with their parent.
    return sorted(p for p in paths if not any(q in p.parents for q in paths))


def _skip_member(base: Path) -> Callable[[tarfile.TarInfo], tarfile.TarInfo | None]:
    """Leave out what the run never reads: VCS and tool caches, act's logs, and the base
    Python's own site-packages and test suite (the venv does not see them; 800 MB on pyenv)."""
    stdlib = base.relative_to("/") / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    unread = {str(stdlib / "site-packages"), str(stdlib / "test")}
    caches = {".git", ".workflow", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".venv-bench"}

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if member.name in unread or Path(member.name).name in caches:
            return None
        return member

    return keep


def _copy_in(name: str, paths: list[Path]) -> None:
    """One tar stream through the client into the created container. Bind mounts would name
    paths on the engine's host, which are not this process's when it runs in a container of
    its own that talks to the engine through its socket (a CI job container, act's)."""
    keep = _skip_member(Path(sys.base_prefix).resolve())
    copy = subprocess.Popen(
        ["docker", "cp", "-", f"{name}:/"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert copy.stdin is not None
    try:
        with tarfile.open(fileobj=copy.stdin, mode="w|") as stream:
            for path in paths:
                stream.add(path, arcname=str(path.relative_to("/")), filter=keep)
    except BrokenPipeError:
        pass  # docker cp gave up early: its own message follows
    _, err = copy.communicate(timeout=300)  # closes its stdin: the end of the stream
    assert copy.returncode == 0, f"docker cp into {name}: {err.decode(errors='replace')}"


def test_the_e2e_suite_passes_in_a_default_container() -> None:
    require_docker()
    if _docker("image", "inspect", IMAGE).returncode != 0:
        why = f"{IMAGE} is missing: run `make images` (CI=true builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    settings = load_settings({})
    pg = pinned_postgres_tree(settings, platform_key(), say=lambda _: None).resolve()
    valkey = pinned_valkey_tree(settings, platform_key(), say=lambda _: None).resolve()
    name = f"testbed-default-box-{uuid.uuid4().hex[:8]}"
    payload = _payload(pg, valkey)
    create = ["create", "--name", name, "--label", "dev.testbed.test=default-container"]
    created = _docker(*create, IMAGE, "tail", "-f", "/dev/null")
    assert created.returncode == 0, created.stderr
    try:
        _copy_in(name, payload)
        started = _docker("start", name)
        assert started.returncode == 0, started.stderr
        # What makes it a default container, seen from inside.
        shm = _docker("exec", name, "sh", "-c", "grep ' /dev/shm ' /proc/mounts").stdout
        assert "noexec" in shm, shm
        assert "size=65536k" in shm, shm
        env = {
            "E2E_BACKEND": "native",
            "E2E_PG_BIN": str(pg / "bin"),
            "E2E_VALKEY_BIN": str(valkey / "bin" / "valkey-server"),
            "E2E_VENV": str(VENV),
            "E2E_REQUIRE_SERVICES": "1",
            "N": "2",
            "PYTEST_ARGS": f"-k '{SLICE}' -p no:cacheprovider",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        exec_env = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        t0 = time.monotonic()
        proc = _docker(
            "exec", *exec_env, "-w", str(REPO), name, "bash", "scripts/e2e.sh", timeout=540
        )
        out = proc.stdout + proc.stderr
        took = time.monotonic() - t0
        assert proc.returncode == 0, f"after {took:.0f} s:\n{out[-6000:]}"
        assert " passed" in out, out[-2000:]
        assert "error" not in out.splitlines()[-1], out[-2000:]
        # The state went to a filesystem that fits it, not the 64 MB noexec /dev/shm.
        where = _docker(
            "exec",
            "-w",
            str(REPO),
            name,
            f"{VENV}/bin/python",
            "-c",
            "from testbed.config import default_state_root; print(default_state_root())",
        ).stdout.strip()
        # (the user's private base, /tmp/testbed-<uid>, on that filesystem)
        assert where.startswith("/tmp/testbed-"), where
    finally:
        _docker("rm", "-f", name)
