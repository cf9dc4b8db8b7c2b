"""scripts/deps.sh refuses a bad PYTHON or VENV with one clear line, before touching anything.

Each test runs the real script; none gets as far as creating a venv (see
tests/integration/test_deps_rebuild.py for the rebuilds).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_deps(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a deps.sh with PYTHON/VENV from env only."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "UV_PYTHON")}
    return subprocess.run(
        [str(script)], capture_output=True, text=True, env=base | env, timeout=60, check=False
    )


def checkout_with(tmp: Path, requires: str) -> Path:
    """A minimal checkout copy (scripts/deps.sh + pyproject.toml) with requires-python."""
    (tmp / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "deps.sh", tmp / "scripts" / "deps.sh")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11"' in text, "update this test's anchor"
    (tmp / "pyproject.toml").write_text(
        text.replace('requires-python = ">=3.11"', f'requires-python = "{requires}"')
    )
    return tmp / "scripts" / "deps.sh"


def test_an_unknown_python_is_named_with_what_to_set(tmp_path: Path) -> None:
    """PYTHON that is not on PATH: exit 2, naming it and the required versions."""
    venv = tmp_path / "venv"
    proc = run_deps(ROOT / "scripts" / "deps.sh", PYTHON="no-such-python3", VENV=str(venv))
    assert proc.returncode == 2
    assert "PYTHON=no-such-python3" in proc.stderr
    assert ">=3.11" in proc.stderr
    assert not venv.exists()


def test_a_python_outside_requires_python_is_refused(tmp_path: Path) -> None:
    """An interpreter that fails requires-python: exit 2 with its version, no venv made."""
    script = checkout_with(tmp_path, ">=3.11,<3.11")
    venv = tmp_path / "venv"
    proc = run_deps(script, PYTHON=sys.executable, VENV=str(venv))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"is Python {version}" in proc.stderr
    assert "requires Python >=3.11,<3.11" in proc.stderr
    assert not venv.exists()


def test_the_requires_python_check_accepts_this_interpreter(tmp_path: Path) -> None:
    """Control: the same copy with a spec this Python meets gets past the check."""
    script = checkout_with(tmp_path, f">=3.11,!=3.{sys.version_info[1] + 1}")
    venv = tmp_path / "venv"
    venv.mkdir()  # not a venv (it holds a file): the script must stop there, after the check
    (venv / "notes.txt").write_text("mine")
    proc = run_deps(script, PYTHON=sys.executable, VENV=str(venv))
    assert "requires Python" not in proc.stderr
    assert "is not a virtualenv" in proc.stderr


def test_a_directory_that_is_not_a_venv_is_never_removed(tmp_path: Path) -> None:
    """VENV pointing at a directory without pyvenv.cfg: refused, and its files stay."""
    venv = tmp_path / "mine"
    (venv / "bin").mkdir(parents=True)
    (venv / "notes.txt").write_text("keep me")
    proc = run_deps(ROOT / "scripts" / "deps.sh", PYTHON=sys.executable, VENV=str(venv))
    assert proc.returncode == 2
    assert "is not a virtualenv" in proc.stderr
    assert (venv / "notes.txt").read_text() == "keep me"


FAKE_UV = """#!/bin/sh
# A stand-in for the pinned uv: records what TLS settings it was given, fails like uv behind
# a TLS-intercepting proxy when told to.
case "$1" in
  --version) echo "uv 0.13.8"; exit 0 ;;
  sync)
    echo "SSL_CERT_FILE=${SSL_CERT_FILE:-} UV_NATIVE_TLS=${UV_NATIVE_TLS:-}" >> "$FAKE_UV_LOG"
    if [ -n "${FAKE_UV_UNTRUSTED:-}" ] && [ "${SSL_CERT_FILE:-}" != "$FAKE_UV_UNTRUSTED" ]; then
      echo "error: Request failed after 3 retries"
      echo "  Caused by: invalid peer certificate: UnknownIssuer" >&2
      exit 2
    fi ;;
esac
exit 0
"""
# pip config as pip prints it (`pip config get global.cert`), without needing pip installed.
FAKE_PIP = """import os, sys
if sys.argv[1:] == ["config", "get", "global.cert"] and os.environ.get("FAKE_PIP_CERT"):
    print(os.environ["FAKE_PIP_CERT"])
    sys.exit(0)
sys.exit(1)
"""


def fake_venv_with_uv(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A venv on this interpreter whose uv is FAKE_UV, and the env that runs deps.sh on it."""
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    # The base interpreter's own home: /usr/bin worked only where /usr/lib held the same
    # version (make workflow's 3.12 job has Debian's 3.11 there, and it did not start).
    (venv / "pyvenv.cfg").write_text(f"home = {Path(sys.base_prefix) / 'bin'}\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    uv = venv / "bin" / "uv"
    uv.write_text(FAKE_UV)
    uv.chmod(0o755)
    (tmp / "fakepip" / "pip").mkdir(parents=True)
    (tmp / "fakepip" / "pip" / "__init__.py").write_text("")
    (tmp / "fakepip" / "pip" / "__main__.py").write_text(FAKE_PIP)
    env = {
        "PYTHON": sys.executable,
        "VENV": str(venv),
        "FAKE_UV_LOG": str(tmp / "uv.log"),
        "PYTHONPATH": str(tmp / "fakepip"),
    }
    for name in ("SSL_CERT_FILE", "UV_NATIVE_TLS", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        env[name] = ""  # unset for the script (empty counts as unset there)
    return venv, env


def test_uv_is_given_the_ca_bundle_pip_is_configured_with(tmp_path: Path) -> None:
    """pip's global.cert (a proxy's CA) reaches uv as SSL_CERT_FILE; without it uv's sync
    fails with UnknownIssuer, as it did behind a TLS-intercepting proxy."""
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    _, env = fake_venv_with_uv(tmp_path)
    proc = run_deps(
        ROOT / "scripts" / "deps.sh",
        **env,
        FAKE_PIP_CERT=str(bundle),
        FAKE_UV_UNTRUSTED=str(bundle),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SSL_CERT_FILE={bundle} " in (tmp_path / "uv.log").read_text()
    assert f"uv uses the CA bundle pip is configured with ({bundle})" in proc.stdout


def test_pip_cert_in_the_environment_wins_and_ssl_cert_file_is_left_alone(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "pip-cert.pem", tmp_path / "config-cert.pem"
    ours.write_text("x")
    theirs.write_text("x")
    _, env = fake_venv_with_uv(tmp_path)
    run_deps(
        ROOT / "scripts" / "deps.sh", **env | {"PIP_CERT": str(ours)}, FAKE_PIP_CERT=str(theirs)
    )
    run_deps(
        ROOT / "scripts" / "deps.sh", **env | {"SSL_CERT_FILE": "/own.pem", "PIP_CERT": str(ours)}
    )
    lines = (tmp_path / "uv.log").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        f"SSL_CERT_FILE={ours}",
        "SSL_CERT_FILE=/own.pem",
    ]


def test_an_untrusted_certificate_says_in_one_line_what_to_set(tmp_path: Path) -> None:
    """No bundle configured anywhere: uv's error is shown, then one line naming the two fixes."""
    _, env = fake_venv_with_uv(tmp_path)
    proc = run_deps(ROOT / "scripts" / "deps.sh", **env, FAKE_UV_UNTRUSTED="/nowhere.pem")
    assert proc.returncode == 2
    assert "invalid peer certificate: UnknownIssuer" in proc.stderr
    hint = [line for line in proc.stderr.splitlines() if line.startswith("deps: ")]
    assert len(hint) == 1, hint
    assert "SSL_CERT_FILE=" in hint[0]
    assert "UV_NATIVE_TLS=1" in hint[0]


def test_a_python_without_ensurepip_says_which_package_to_install(tmp_path: Path) -> None:
    """Debian's python3 without python3-venv: one line naming python3.X-venv, no venv made
    (venv would stop halfway and leave a venv without pip)."""
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "ensurepip.py").write_text("raise ImportError('split off by Debian')\n")
    venv = tmp_path / "venv"
    proc = run_deps(
        ROOT / "scripts" / "deps.sh",
        PYTHON=sys.executable,
        VENV=str(venv),
        PYTHONPATH=str(tmp_path / "split"),
        CI="",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    package = f"python{sys.version_info[0]}.{sys.version_info[1]}-venv"
    (line,) = proc.stderr.strip().splitlines()
    assert f"has no ensurepip, which venv needs; install {package}" in line
    assert not venv.exists()


def test_a_venv_dir_of_only_bytecode_cache_is_replaced_by_a_venv(tmp_path: Path) -> None:
    """Only dirs and the Makefile's bytecode cache (act's copy of a tree without its venv) is
    no one's data and no venv: deps removes them and creates the venv instead of refusing."""
    venv = tmp_path / "venv"
    (venv / "pycache" / "usr").mkdir(parents=True)
    (venv / "pycache" / "usr" / "site.cpython-311.pyc").write_bytes(b"bytecode")
    # venv creation itself is stubbed: this test is about what happens before it.
    (tmp_path / "stub" / "venv").mkdir(parents=True)
    (tmp_path / "stub" / "venv" / "__init__.py").write_text("")
    (tmp_path / "stub" / "venv" / "__main__.py").write_text("raise SystemExit(7)\n")
    proc = run_deps(
        ROOT / "scripts" / "deps.sh",
        PYTHON=sys.executable,
        VENV=str(venv),
        PYTHONPATH=str(tmp_path / "stub"),
    )
    assert "is not a virtualenv" not in proc.stderr, proc.stderr
    assert f"deps: creating {venv}" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 7
    assert not (venv / "pycache").exists()


def test_a_venv_dir_with_a_file_is_still_refused(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "pycache").mkdir(parents=True)
    (venv / "pycache" / "notes.txt").write_text("keep me")
    proc = run_deps(ROOT / "scripts" / "deps.sh", PYTHON=sys.executable, VENV=str(venv))
    assert proc.returncode == 2
    assert "is not a virtualenv" in proc.stderr
    assert (venv / "pycache" / "notes.txt").read_text() == "keep me"
