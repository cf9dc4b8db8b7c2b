"""A normal (non-root) user runs the E2E suite from a fresh clone, as most adopters do: a
throwaway account is created, the checkout cloned into its home, `make e2e` run as that user
on the system's python3. The pinned binaries go to its ~/.cache/testbed, and nothing of the
run is left behind: no process of that user, no state dir, nothing of its in /tmp or /dev/shm.

Needs root (to create the account): outside CI it skips without; under CI=true it fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from rel_sandbox import REPO, free_port, wait_for

# A slice of opsdesk's suite, the one make e2e runs (make test runs it all): what this test
# adds is the rest, a fresh venv, the pinned binaries fetched into the user's cache, a template.
SLICE = "test_crm"
PYTHON = Path("/usr/bin/python3")  # the system's, which a normal user has
# What reaches the network and the package index as the machine has it configured.
PASS_ENV = ("PIP_", "UV_INDEX", "UV_DEFAULT_INDEX", "SSL_CERT_", "REQUESTS_CA_BUNDLE")
PASS_ENV_NAMES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

pytestmark = pytest.mark.timeout(900)


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a throwaway user (useradd)"
    if shutil.which("useradd") is None or shutil.which("git") is None:
        return "needs useradd and git"
    if not PYTHON.is_file():
        return f"needs the system's {PYTHON}"
    probe = subprocess.run(
        [str(PYTHON), "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"{PYTHON} has no ensurepip: install python3-venv (Debian, Ubuntu)"
    return None


def _files_of(uid: int, *roots: Path) -> list[str]:
    """Files, sockets and non-empty dirs of uid under roots (an empty per-user base dir that
    testbed keeps, like a runtime dir, is no leftover of a run)."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in filenames:
                if entry.startswith("uv-") and entry.endswith(".lock"):
                    continue  # uv's own lock files (make deps runs uv), never removed by uv
                path = Path(dirpath, entry)
                try:
                    if path.lstat().st_uid == uid:
                        found.append(str(path))
                except OSError:
                    continue
            dirnames[:] = [d for d in dirnames if not Path(dirpath, d).is_symlink()]
    return found


def _pids_of(uid: int) -> dict[int, str]:
    """Live processes of uid; a zombie is dead (where PID 1 reaps no orphans it stays one)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if entry.stat().st_uid == uid and state not in ("Z", "X"):
                    found[int(entry.name)] = (entry / "cmdline").read_bytes()[:120].decode()
            except (OSError, UnicodeDecodeError, IndexError):
                continue
    return found


def test_make_e2e_passes_for_a_normal_user_from_a_fresh_clone() -> None:
    why = _cannot_run()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true must run this test: {why}")
        pytest.skip(why)
    name = f"tbuser{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    uid = pwd.getpwnam(name).pw_uid
    home = Path(pwd.getpwnam(name).pw_dir)
    try:
        clone = home / "opsdesk"
        # Cloned by root, then handed over: git refuses to read a repository another user owns.
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True
        )
        subprocess.run(["chown", "-R", f"{name}:{name}", str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k.startswith(PASS_ENV) or k in PASS_ENV_NAMES}
        env |= {
            "HOME": str(home),
            "USER": name,
            "LOGNAME": name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "E2E_PG_PORT": str(free_port()),
            "E2E_REDIS_PORT": str(free_port()),
            "E2E_BACKEND": "native",
            "PYTEST_ARGS": f"-k '{SLICE}'",
        }
        started = time.monotonic()
        proc = subprocess.run(
            ["make", "e2e", f"PYTHON={PYTHON}", "N=2"],
            cwd=clone,
            env=env,
            user=uid,
            group=pwd.getpwnam(name).pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"after {time.monotonic() - started:.0f} s:\n{out[-6000:]}"
        assert " passed" in out.splitlines()[-1] or " passed" in out, out[-2000:]
        # The pinned binaries in the user's own cache, not root's /var/cache/testbed.
        cache = home / ".cache" / "testbed"
        assert sorted(cache.glob("postgresql-16*")), sorted(cache.iterdir())
        # The servers' last exits: polled, they take a moment after the run's end.
        assert wait_for(lambda: _pids_of(uid) == {}, 10), _pids_of(uid)
        assert _files_of(uid, Path("/tmp"), Path("/dev/shm"), Path("/var/tmp")) == []
    finally:
        for pid in _pids_of(uid):  # only the throwaway account's, which this test made
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
