"""scripts/deps.sh rebuilds a venv deliberately, and pins uv to the venv's own interpreter.

A stand-in `uv` (reporting the pinned version) records how it is called, so each test costs
one `python -m venv` and no downloads.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV_VERSION = "0.13.8"
FAKE_UV = """#!/bin/sh
if [ "$1" = --version ]; then echo "uv {version}"; exit 0; fi
echo "$* UV_PYTHON_DOWNLOADS=$UV_PYTHON_DOWNLOADS" >> "{log}"
# Like uv: FORCE_COLOR colours `pip list` names unless the call says --color never.
case " $* " in *" --color never "*) color="" ;; *) color="${{FORCE_COLOR:+1}}" ;; esac
paint() {{
  if [ -n "$color" ]; then sed 's/^\\([A-Za-z0-9_.-]*\\)/\\x1b[1m\\1\\x1b[0m/'; else cat; fi
}}
case "$1 $2" in
  "export "*) cat "{log}.export" 2>/dev/null ;;
  "pip list") cat "{log}.installed" 2>/dev/null | paint ;;
esac
"""


@pytest.fixture
def uv_log(tmp_path: Path) -> Path:
    """PATH gets a recording uv; returns the file its calls go to."""
    bin_dir = tmp_path / "uvbin"
    bin_dir.mkdir()
    log = tmp_path / "uv.log"
    (bin_dir / "uv").write_text(FAKE_UV.format(version=UV_VERSION, log=log))
    (bin_dir / "uv").chmod(0o755)
    return log


def run_deps(uv_log: Path, venv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/deps.sh with the recording uv first on PATH."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "UV_PYTHON")}
    base["PATH"] = f"{uv_log.parent / 'uvbin'}:{base['PATH']}"
    return subprocess.run(
        [str(ROOT / "scripts" / "deps.sh")],
        capture_output=True,
        text=True,
        env=base | {"VENV": str(venv)} | env,
        timeout=300,
        check=False,
    )


def base_python() -> str:
    """This interpreter outside any venv (what `python -m venv` was run with)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def other_python() -> str | None:
    """An interpreter of another version that meets requires-python, if this machine has one."""
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for minor in ("3.11", "3.12", "3.13", "3.14"):
        if minor == mine:
            continue
        candidates = [
            shutil.which(f"python{minor}"),
            *glob.glob(f"/*/.pyenv/versions/{minor}.*/bin/python3"),
        ]
        for found in filter(None, candidates):
            # A pyenv shim exists for versions it will refuse to run: try it.
            if (
                subprocess.run([found, "-c", "pass"], capture_output=True, check=False).returncode
                == 0
            ):
                return found
    return None


def test_uv_is_pinned_to_the_venv_interpreter_and_never_downloads(
    tmp_path: Path, uv_log: Path
) -> None:
    """Whatever UV_PYTHON says (Nix sets it), uv sync gets --python <venv>/bin/python."""
    venv = tmp_path / "venv"
    proc = run_deps(uv_log, venv, PYTHON=base_python(), UV_PYTHON="/nonexistent/python3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [call] = [line for line in uv_log.read_text().splitlines() if line.startswith("sync ")]
    assert f"--python {venv}/bin/python" in call
    assert "--frozen" in call
    assert call.endswith("UV_PYTHON_DOWNLOADS=never")
    assert (venv / ".deps-python").read_text().strip() == base_python()


def test_a_venv_whose_interpreter_is_gone_is_rebuilt_saying_why(
    tmp_path: Path, uv_log: Path
) -> None:
    """A dangling bin/python (a garbage-collected Nix store path): rebuilt, with a message."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nix/store/gone/bin\n")
    (venv / "bin" / "python").symlink_to("/nix/store/gone/bin/python3")
    proc = run_deps(uv_log, venv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rebuilding {venv}" in proc.stdout
    assert "does not run" in proc.stdout
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], check=False).returncode == 0


def test_an_unset_python_keeps_a_working_venv(tmp_path: Path, uv_log: Path) -> None:
    """No PYTHON: an existing working venv is synced in place, not rebuilt."""
    venv = tmp_path / "venv"
    assert run_deps(uv_log, venv, PYTHON=base_python()).returncode == 0
    marker = venv / "kept"
    marker.touch()
    proc = run_deps(uv_log, venv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rebuilding" not in proc.stdout
    assert marker.exists()


def test_another_python_rebuilds_the_venv_on_it(tmp_path: Path, uv_log: Path) -> None:
    """PYTHON of another version than the venv's: rebuilt on PYTHON, saying both versions."""
    other = other_python()
    if other is None:
        pytest.skip("needs a second Python 3.11-3.14 on PATH (CI installs one)")
    venv = tmp_path / "venv"
    assert run_deps(uv_log, venv, PYTHON=base_python()).returncode == 0
    proc = run_deps(uv_log, venv, PYTHON=other)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rebuilding {venv}" in proc.stdout
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.strip() != str(sys.version_info[:2])


def test_what_the_lock_does_not_list_is_removed_but_the_bootstrap_stays(
    tmp_path: Path, uv_log: Path
) -> None:
    """A package left from another group (a pytest plugin would still load) is uninstalled."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(base_python()).parent}\n")
    (venv / "bin" / "python").symlink_to(base_python())
    uv_log.with_name("uv.log.export").write_text("-e .\npytest==8.4.2\nfaker==37.12.0 ; x\n")
    uv_log.with_name("uv.log.installed").write_text(
        "pytest==8.4.2\nFaker==37.12.0\npytest-postgresql==7.0.2\npip==25.0\nuv==0.13.8\n"
        "opsdesk-e2e==0.1.0\nfactory_boy==3.3.3\n"
    )
    proc = run_deps(uv_log, venv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [removal] = [
        line for line in uv_log.read_text().splitlines() if line.startswith("pip uninstall")
    ]
    assert removal.split()[-3:-1] == ["pytest-postgresql", "factory-boy"]
    assert "removing" in proc.stdout


@pytest.mark.parametrize("colour", [{"FORCE_COLOR": "1"}, {"NO_COLOR": "1"}, {}])
def test_colour_settings_never_make_installed_packages_look_stale(
    tmp_path: Path, uv_log: Path, colour: dict[str, str]
) -> None:
    """FORCE_COLOR=1 (CI sets it) must not colour the names deps.sh compares: nothing removed."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(base_python()).parent}\n")
    (venv / "bin" / "python").symlink_to(base_python())
    uv_log.with_name("uv.log.export").write_text("pytest==8.4.2\nfaker==37.12.0\n")
    uv_log.with_name("uv.log.installed").write_text("pytest==8.4.2\nFaker==37.12.0\n")
    proc = run_deps(uv_log, venv, **colour)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removing" not in proc.stdout
    assert not [line for line in uv_log.read_text().splitlines() if "uninstall" in line]


def test_the_pinned_uv_prints_plain_names_under_force_color() -> None:
    """The real uv honours --color never over FORCE_COLOR, which the stand-in above relies on."""
    uv = Path(sys.prefix) / "bin" / "uv"
    py = sys.executable
    if not uv.exists():
        pytest.skip("no uv in this venv (make deps installs it)")
    listing = subprocess.run(
        [str(uv), "pip", "list", "--color", "never", "--format", "freeze", "--python", py],
        capture_output=True,
        text=True,
        env=os.environ | {"FORCE_COLOR": "1"},
        check=True,
    ).stdout
    assert "pytest==" in listing
    assert "\x1b" not in listing


def test_two_runs_at_once_rebuild_once(tmp_path: Path, uv_log: Path) -> None:
    """Two `make deps` at once on a venv that needs a rebuild: one rebuilds, the other waits."""
    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed: deps.sh runs unlocked here")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nix/store/gone/bin\n")
    (venv / "bin" / "python").symlink_to("/nix/store/gone/bin/python3")
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "UV_PYTHON")}
    env = base | {"PATH": f"{uv_log.parent / 'uvbin'}:{base['PATH']}", "VENV": str(venv)}
    script = str(ROOT / "scripts" / "deps.sh")
    runs = [
        subprocess.Popen(
            [script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], outputs
    assert sum("rebuilding" in out for out in outputs) == 1, outputs
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "pass"], check=False).returncode == 0
