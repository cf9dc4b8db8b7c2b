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
import time
import uuid
from pathlib import Path

import pytest
from rel_docker import require_docker
from rel_sandbox import REPO

from testbed.config import load_settings
from testbed.services.binaries import pinned_postgres_tree, pinned_valkey_tree, platform_key

# The base of the local service images (`make images`, which `make reliability` provides
# under CI=true): Debian bookworm with the libraries the pinned PostgreSQL binaries load.
IMAGE = "testbed/base:bookworm"
# test_harness_isolation and test_crm: the harness's own checks and a real suite's worth.
SLICE = "test_harness_isolation or test_crm"
VENV = Path(sys.executable).parent.parent

pytestmark = pytest.mark.timeout(600)


def _docker(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def _mounts() -> list[str]:
    """This checkout, its venv and the venv's interpreter, read-only at their own paths (the
    base image has no Python; the venv's scripts and editable installs name these paths)."""
    base = Path(sys.base_prefix).resolve()
    if base.parts[1:2] in (("usr",), ("bin",)):
        pytest.skip(f"the venv is on the system's Python ({base}), which {IMAGE} does not have")
    paths = {REPO, VENV.resolve(), base}
    if base.parts[1:3] == ("nix", "store"):  # a Nix Python's libraries are in the store
        paths.add(Path("/nix/store"))
    return [arg for path in sorted(paths) for arg in ("-v", f"{path}:{path}:ro")]


def test_the_e2e_suite_passes_in_a_default_container() -> None:
    require_docker()
    if _docker("image", "inspect", IMAGE).returncode != 0:
        why = f"{IMAGE} is missing: run `make images` (CI=true builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    settings = load_settings({})
    pg = pinned_postgres_tree(settings, platform_key(), say=lambda _: None)
    valkey = pinned_valkey_tree(settings, platform_key(), say=lambda _: None)
    name = f"testbed-default-box-{uuid.uuid4().hex[:8]}"
    run = ["run", "-d", "--name", name, "--label", "dev.testbed.test=default-container"]
    run += [*_mounts(), "-v", f"{pg}:/opt/pg:ro", "-v", f"{valkey}:/opt/valkey:ro"]
    assert _docker(*run, IMAGE, "tail", "-f", "/dev/null").returncode == 0
    try:
        # What makes it a default container, seen from inside.
        shm = _docker("exec", name, "sh", "-c", "grep ' /dev/shm ' /proc/mounts").stdout
        assert "noexec" in shm, shm
        assert "size=65536k" in shm, shm
        env = {
            "E2E_BACKEND": "native",
            "E2E_PG_BIN": "/opt/pg/bin",
            "E2E_VALKEY_BIN": "/opt/valkey/bin/valkey-server",
            "E2E_VENV": str(VENV),
            "E2E_REQUIRE_SERVICES": "1",
            "N": "2",
            "PYTEST_ARGS": f"-k '{SLICE}' -p no:cacheprovider",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        exec_env = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        started = time.monotonic()
        proc = _docker(
            "exec", *exec_env, "-w", str(REPO), name, "bash", "scripts/e2e.sh", timeout=540
        )
        out = proc.stdout + proc.stderr
        took = time.monotonic() - started
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
