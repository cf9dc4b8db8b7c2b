"""The Makefile front door: `make help` lists every target the docs name, and PYTEST_ARGS and
JUNIT_DIR reach pytest as the user wrote them.

The pass-through tests run the real Makefile and scripts with VENV pointing at a stand-in venv
whose `pytest` records its arguments, so they cost a few process starts and no services.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
TARGET = re.compile(r"[a-z0-9][a-z0-9-]*")
COMMAND = re.compile(r"(?:^|&&|\|\||;|\||\$\(|\()\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*make\s", re.M)
# The stand-in pytest: writes its argv (one JSON list per call) where ARGV_LOG says.
RECORDER = """#!{python}
import json, os, sys
with open(os.environ["ARGV_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
with open(os.environ["ARGV_LOG"] + ".env", "w") as f:
    json.dump(dict(os.environ), f)
"""


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run make in the checkout without the outer run's PYTEST_*/E2E_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "E2E_"))}
    # CI unset: under CI=true, e2e's system-libs step would install packages.
    for name in ("PYTHON", "VENV", "JUNIT_DIR", "MAKEFLAGS", "MFLAGS", "CI", "PYTHONPYCACHEPREFIX"):
        base.pop(name, None)
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=base | env,
        timeout=60,
        check=False,
    )


def help_targets() -> list[str]:
    """The targets `make help` prints, in order."""
    proc = make("help")
    assert proc.returncode == 0, proc.stderr
    return [line.split()[1] for line in proc.stdout.splitlines() if line.split()[:1] == ["make"]]


def code_of(markdown: str) -> list[str]:
    """Inline code spans and fenced-block lines of a Markdown text."""
    out: list[str] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            out.append(line)
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


def targets_named_in(markdown: str) -> set[str]:
    """First target of every `make ...` command in the code of a Markdown text.

    A command is `make` where a shell command starts (line start, after `&&`, `;`, `|`, `$(`,
    or after VAR=value assignments); options (-s) and variables (N=4) are skipped.
    """
    found = set()
    for code in code_of(markdown):
        for match in re.finditer(COMMAND, code):
            for token in code[match.end() :].split():
                if token.startswith("-") or "=" in token:
                    continue
                word = token.rstrip(")\"',;.:")
                if TARGET.fullmatch(word):
                    found.add(word)
                break
    return found


def test_help_lists_every_documented_target_including_digits() -> None:
    """Each target the README or docs/ names is in `make help` (e2e has a digit)."""
    listed = set(help_targets())
    assert "e2e" in listed, f"make help lacks e2e: {sorted(listed)}"
    for doc in DOCS:
        named = targets_named_in(doc.read_text())
        missing = sorted(named - listed)
        assert not missing, f"{doc.relative_to(ROOT)} names make {missing}, not in make help"


def test_help_lists_every_described_phony_target() -> None:
    """Every `.PHONY: name  ## text` line of the Makefile shows up in `make help`."""
    described = re.findall(r"^\.PHONY: (\S+) +## ", (ROOT / "Makefile").read_text(), re.M)
    assert described
    assert help_targets() == described


def test_the_doc_scanner_finds_commands_and_skips_flags_and_prose() -> None:
    """Control for the test above: commands count after options and variables; prose does not."""
    text = (
        "Run `make e2e N=4`, `E2E_KEEP=1 make -s up2` or\n"
        '```\nmake up && eval "$(make -s env)"\ncd x; make down\n'
        ".github/   CI: the same make targets\n```\n"
        "and `run make them in <path>`; make sure nothing else counts."
    )
    assert targets_named_in(text) == {"e2e", "up2", "up", "env", "down"}


@pytest.fixture
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv stand-in whose deps are up to date and whose pytest records argv; (venv, log)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    # A wrapper, not a symlink: the interpreter keeps this venv's packages (scripts import testbed).
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    pytest_bin = venv / "bin" / "pytest"
    pytest_bin.write_text(RECORDER.format(python=sys.executable))
    pytest_bin.chmod(0o755)
    (venv / ".deps-python").write_text("python3\n")
    stamp = venv / ".deps-stamp"
    stamp.touch()
    future = time.time() + 3600  # newer than every prerequisite: make deps has nothing to do
    os.utime(stamp, (future, future))
    return venv, tmp_path / "argv.jsonl"


def recorded(log: Path) -> list[list[str]]:
    """Argument lists the stand-in pytest was called with."""
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("target", ["e2e", "testbed-e2e", "unit", "tooling", "example"])
def test_pytest_args_reach_pytest_as_written(fake_venv: tuple[Path, Path], target: str) -> None:
    """`PYTEST_ARGS='-k "a or b"'` arrives as two arguments, the quoted one intact."""
    venv, log = fake_venv
    # --collect-only: scripts/e2e.sh starts no services for a collection.
    args = "--collect-only -k \"crm or tasks\" -m 'not slow'"
    proc = make(target, f"VENV={venv}", f"PYTEST_ARGS={args}", ARGV_LOG=str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = recorded(log)  # make example runs one suite per example app
    assert runs
    for argv in runs:
        assert argv[-5:] == ["--collect-only", "-k", "crm or tasks", "-m", "not slow"]


@pytest.mark.parametrize("target", ["e2e", "testbed-e2e", "unit", "tooling"])
def test_junit_dir_adds_one_report_per_stage(fake_venv: tuple[Path, Path], target: str) -> None:
    """JUNIT_DIR=DIR gives pytest --junitxml=DIR/<stage>.xml, with an absolute DIR."""
    venv, log = fake_venv
    proc = make(
        target,
        f"VENV={venv}",
        "JUNIT_DIR=reports/x",
        "PYTEST_ARGS=--collect-only",
        ARGV_LOG=str(log),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [argv] = recorded(log)
    assert f"--junitxml={ROOT}/reports/x/{target}.xml" in argv
    assert argv[-1] == "--collect-only"


def test_unit_runs_the_code_s_tests_and_tooling_the_repository_checks(
    fake_venv: tuple[Path, Path],
) -> None:
    """`make unit` is the fast loop of code: testbed's and opsdesk's unit tests, in random order
    (no `-p no:randomly`); `make tooling` runs tests/tooling, which run make, uv and mkdocs.
    Both run one xdist worker per core."""
    venv, log = fake_venv
    trees = {}
    for target in ("unit", "tooling"):
        log.unlink(missing_ok=True)
        proc = make(target, f"VENV={venv}", ARGV_LOG=str(log))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [argv] = recorded(log)
        assert "no:randomly" not in argv, argv
        assert "--numprocesses=auto" in argv, argv
        trees[target] = [a for a in argv if not a.startswith("-")]
    assert trees == {
        "unit": ["testbed/tests/unit", "backend/tests/unit"],
        "tooling": ["tests/tooling"],
    }


E2E_SUITES = {"e2e": "backend/tests/e2e", "testbed-e2e": "testbed/tests/e2e"}


@pytest.mark.parametrize("target", sorted(E2E_SUITES))
def test_each_e2e_target_runs_its_own_suite_only(fake_venv: tuple[Path, Path], target: str) -> None:
    """make e2e runs opsdesk's suite and make testbed-e2e testbed's own: one folder each, in
    parallel, services required, whatever SUITE or SHARD the caller's environment holds."""
    venv, log = fake_venv
    other = next(path for name, path in E2E_SUITES.items() if name != target)
    proc = make(
        target,
        f"VENV={venv}",
        "PYTEST_ARGS=--collect-only",
        ARGV_LOG=str(log),
        SUITE=other,
        SHARD="1/2" if target == "testbed-e2e" else "",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [argv] = recorded(log)
    suites = [arg for arg in argv if arg in E2E_SUITES.values()]
    assert suites == [E2E_SUITES[target]], argv
    assert "-n" in argv, argv
    assert not any(arg.startswith("--splits") for arg in argv), argv
    env = json.loads(Path(f"{log}.env").read_text())
    assert env["E2E_REQUIRE_SERVICES"] == "1"


def test_integration_runs_testbeds_e2e_suite_after_its_own(fake_venv: tuple[Path, Path]) -> None:
    """make integration: the integration tests, then testbed's E2E suite (CI's integration job)."""
    venv, log = fake_venv
    proc = make("integration", f"VENV={venv}", "PYTEST_ARGS=--collect-only", ARGV_LOG=str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = recorded(log)
    assert [argv[0] for argv in runs] == ["testbed/tests/integration", "testbed/tests/e2e"], runs


def test_a_new_python_forces_deps_and_the_same_one_does_not(tmp_path: Path) -> None:
    """deps runs again when PYTHON differs from what .venv was built with, and only then."""
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".deps-python").write_text("/opt/python3.12/bin/python3\n")
    stamp = venv / ".deps-stamp"
    stamp.touch()
    future = time.time() + 3600
    os.utime(stamp, (future, future))
    same = make("-n", "deps", f"VENV={venv}", "PYTHON=/opt/python3.12/bin/python3")
    assert "deps.sh" not in same.stdout, same.stdout
    unset = make("-n", "deps", f"VENV={venv}")
    assert "deps.sh" not in unset.stdout, unset.stdout
    other = make("-n", "deps", f"VENV={venv}", "PYTHON=/opt/python3.13/bin/python3")
    assert "scripts/deps.sh" in other.stdout, other.stdout


def test_lint_installs_nix_only_under_ci(tmp_path: Path) -> None:
    """scripts/nix-tools.sh (run before lint): a no-op outside CI; under CI=true it installs
    nix-bin, or fails saying what is missing when it cannot (here: no apt-get on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "id"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    script = str(ROOT / "scripts" / "nix-tools.sh")
    env = {"PATH": str(bin_dir)}
    outside = subprocess.run([script], capture_output=True, text=True, env=env, check=False)
    assert (outside.returncode, outside.stdout, outside.stderr) == (0, "", "")
    ci = subprocess.run(
        [script], capture_output=True, text=True, env=env | {"CI": "true"}, check=False
    )
    assert ci.returncode != 0
    assert "install Nix first" in ci.stderr


@pytest.mark.parametrize("target", ["e2e", "unit"])
def test_pytest_runs_may_cache_bytecode_outside_the_tree(
    fake_venv: tuple[Path, Path], target: str
) -> None:
    """PYTHONDONTWRITEBYTECODE=1 would make every process compile every import again: the
    front door lifts it and sends the cache under the venv instead (a user's prefix wins)."""
    venv, log = fake_venv
    args = (target, f"VENV={venv}", "PYTEST_ARGS=--collect-only")
    proc = make(*args, ARGV_LOG=str(log), PYTHONDONTWRITEBYTECODE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = json.loads(Path(f"{log}.env").read_text())
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == f"{venv}/pycache"
    mine = str(venv.parent / "my-cache")
    proc = make(*args, ARGV_LOG=str(log), PYTHONPYCACHEPREFIX=mine)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(Path(f"{log}.env").read_text())["PYTHONPYCACHEPREFIX"] == mine


def test_the_bench_times_every_step_of_make_test() -> None:
    """bench/stages.py reports `make test` by stage: its list is the Makefile's, in order."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench.stages import STAGES
    finally:
        sys.path.remove(str(ROOT))
    makefile = (ROOT / "Makefile").read_text()
    [steps] = re.findall(r"^test-steps:(.*)$", makefile, re.M)
    assert [s for s in steps.split() if s != "nix-tools"] == list(STAGES)


def _plugin_choices(argv: list[str]) -> list[str]:
    """The values of every `-p NAME` in argv that name pytest-randomly."""
    return [b for a, b in itertools.pairwise(argv) if a == "-p" and "randomly" in b]


@pytest.mark.parametrize("choice", ["no:randomly", "randomly"])
@pytest.mark.parametrize("target", ["e2e", "testbed-e2e", "example", "e2e SHARD=1/2"])
def test_pytest_args_choose_pytest_randomly(
    fake_venv: tuple[Path, Path], target: str, choice: str
) -> None:
    """`PYTEST_ARGS="-p no:randomly"` is the only say on pytest-randomly: the scripts' own
    `-p randomly` next to it made every test a TypeError inside pytest-randomly."""
    venv, log = fake_venv
    proc = make(*target.split(), f"VENV={venv}", f"PYTEST_ARGS=-p {choice}", ARGV_LOG=str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = recorded(log)
    assert runs
    for argv in runs:
        assert _plugin_choices(argv) == [choice], argv
        if choice == "no:randomly":  # its flags would be unknown to pytest
            assert not any(arg.startswith("--randomly") for arg in argv), argv
