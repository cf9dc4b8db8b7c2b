"""What ci.yml's jobs do, read from the workflow file: the timing report uploaded, the services'
logs found, reliability run after a failed integration, the shard count, Nix in one lint leg,
one pip cache per job, and the README's targets table (issue 20, items 3-5 and 9).

Each was found by running the workflow with act (`make workflow`); these catch them in
`make tooling`, without a runner.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from testbed.services.containers import LABEL

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict[str, Any]:
    """ci.yml as a mapping."""
    return yaml.safe_load(WORKFLOW.read_text())


def legs(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The matrix combinations of a job as GitHub expands them (include adds keys to a match)."""
    matrix = dict(job.get("strategy", {}).get("matrix", {}))
    include = matrix.pop("include", [])
    keys = list(matrix)
    product = itertools.product(*matrix.values())
    combos = [dict(zip(keys, values, strict=True)) for values in product]
    for extra in include:
        matched = [c for c in combos if all(c[k] == v for k, v in extra.items() if k in keys)]
        for combo in matched:
            combo.update(extra)
        if not matched:
            combos.append(dict(extra))
    return combos or [{}]


def steps(job_name: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job_name]["steps"])


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).startswith(action + "@")


def test_hidden_files_are_uploaded_when_a_path_names_one() -> None:
    """upload-artifact v4+ skips dot-files unless include-hidden-files: the timing report
    backend/.test_durations was never uploaded."""
    checked = 0
    for name, job in workflow()["jobs"].items():
        for step in job.get("steps", []):
            if not uses(step, "actions/upload-artifact"):
                continue
            paths = str(step["with"]["path"]).split()
            if any(part.startswith(".") for p in paths for part in Path(p).parts):
                checked += 1
                assert step["with"].get("include-hidden-files") is True, (name, paths)
    assert checked, "no upload names a dot-file any more: update this test"


def test_service_logs_collects_the_containers_compose_labels(tmp_path: Path) -> None:
    """service-logs.sh asks docker for the label compose sets now (it filtered on an old one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls"
    fake = bin_dir / "docker"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    env["E2E_VENV"] = str(Path(os.environ.get("E2E_VENV", ROOT / ".venv")))
    script = ROOT / ".github" / "scripts" / "service-logs.sh"
    proc = subprocess.run(
        [str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    ps = [line for line in calls.read_text().splitlines() if line.startswith("ps ")]
    assert ps == [f"ps -a --filter label={LABEL} --format {{{{.Names}}}}"], ps


def test_the_docs_name_the_label_compose_sets() -> None:
    compose = (ROOT / "docker-compose-e2e.yml").read_text()
    assert f"{LABEL}:" in compose
    assert LABEL in (ROOT / "docs" / "ci-and-nix.md").read_text()


def test_reliability_runs_when_integration_failed() -> None:
    """One make call for both skipped reliability whenever integration failed."""
    runs = [(s.get("run", ""), s.get("if", "")) for s in steps("integration")]
    integration = [r for r, _ in runs if re.search(r"\bmake integration\b", r)]
    reliability = [(r, cond) for r, cond in runs if re.search(r"\bmake .*\breliability\b", r)]
    assert integration
    assert reliability
    for run, cond in reliability:
        assert "integration" not in run, run
        assert "!cancelled()" in cond or "always()" in cond, cond


def test_every_python_leg_runs_unit_and_tooling_after_lint() -> None:
    """`make unit` is the fast loop of code; `make tooling` (Makefile, scripts, workflow, docs)
    is a stage of its own that CI runs too, even when a unit test failed."""
    runs = [(s.get("run", ""), s.get("if", "")) for s in steps("lint")]
    order = [
        target for run, _ in runs for target in re.findall(r"\bmake (lint|unit|tooling)\b", run)
    ]
    assert order == ["lint", "unit", "tooling"], runs
    [(run, cond)] = [(r, c) for r, c in runs if re.search(r"\bmake tooling\b", r)]
    assert "JUNIT_DIR=reports" in run
    assert "!cancelled()" in cond or "always()" in cond, cond
    [summary] = [r for r, c in runs if "junit_summary.py" in r]
    assert "reports/unit.xml" in summary, summary
    assert "reports/tooling.xml" in summary, summary


def test_the_shard_count_is_the_matrix_length() -> None:
    """SHARD=i/k with k the number of shard jobs: a hard-coded /3 went stale when a shard was
    added. (strategy.job-total says it on GitHub, but act leaves it empty.)"""
    job = workflow()["jobs"]["e2e"]
    matrix = job["strategy"]["matrix"]
    assert set(matrix) == {"group", "shards"}
    groups = matrix["group"]
    assert groups == list(range(1, len(groups) + 1))
    assert matrix["shards"] == [len(groups)]
    assert job["env"]["SHARD"] == "${{ matrix.group }}/${{ matrix.shards }}"
    text = job["name"] + "".join(s.get("name", "") + s.get("run", "") for s in job["steps"])
    assert not re.search(rf"/{len(groups)}\b", text), "a literal shard count is left"


def test_nix_is_installed_in_one_lint_leg_and_the_others_skip_the_flake_checks() -> None:
    job = workflow()["jobs"]["lint"]
    with_nix = [leg for leg in legs(job) if leg.get("nix")]
    assert len(legs(job)) == len(job["strategy"]["matrix"]["python"])
    assert len(with_nix) == 1, with_nix
    nix_steps = [s for s in job["steps"] if uses(s, "cachix/install-nix-action")]
    assert [s.get("if") for s in nix_steps] == ["matrix.nix"]
    # make lint's flake checks, and make tooling's tests of them (which run the same tools).
    for target in ("make lint", "make tooling"):
        step = next(s for s in job["steps"] if str(s.get("run", "")).startswith(target))
        assert step["env"]["LINT_SKIP"] == "${{ !matrix.nix && 'nix' || '' }}", target


def test_lint_skip_skips_the_flake_checks_even_under_ci(tmp_path: Path) -> None:
    """Without Nix, CI=true refuses to skip the nix check unless LINT_SKIP names it; and
    nix-tools.sh then installs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f"#!/bin/sh\ntouch {tmp_path}/apt-called\nexit 1\n")
    apt.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CI": "true", "HOME": str(tmp_path)}
    lint = [str(ROOT / "scripts" / "lint.sh"), "nix"]
    refused = subprocess.run(lint, env=env, capture_output=True, text=True, timeout=60)
    if "nix-instantiate not found" in refused.stdout:  # a machine with Nix checks it for real
        assert refused.returncode == 1
    skipped = subprocess.run(
        lint, env=env | {"LINT_SKIP": "nix"}, capture_output=True, text=True, timeout=60
    )
    assert skipped.returncode == 0, skipped.stdout
    assert "skip  nix" in skipped.stdout
    tools = subprocess.run(
        ["sh", str(ROOT / "scripts" / "nix-tools.sh")],
        env=env | {"LINT_SKIP": "nix"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tools.returncode == 0, tools.stderr
    assert not (tmp_path / "apt-called").exists()


def test_every_job_and_leg_has_its_own_pip_cache_key() -> None:
    """setup-python's `cache: pip` gave five jobs one key; they raced to save it."""
    keys: list[str] = []
    for name, job in workflow()["jobs"].items():
        for step in job.get("steps", []):
            if uses(step, "actions/setup-python"):
                assert "cache" not in step.get("with", {}), name
            if not uses(step, "actions/cache") or "pip" not in str(step["with"]["path"]):
                continue
            for index, _leg in enumerate(legs(job)):
                key = step["with"]["key"].replace("${{ github.job }}", name)
                keys.append(key.replace("${{ strategy.job-index }}", str(index)))
    assert len(keys) >= 8, keys
    assert len(set(keys)) == len(keys), keys


def test_the_readme_table_lists_every_target() -> None:
    """`make example` and `make images` were missing from the README's targets table."""
    described = re.findall(r"^\.PHONY: (\S+) +## ", (ROOT / "Makefile").read_text(), re.M)
    lines = (ROOT / "README.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| `make")]
    in_table = set(re.findall(r"`make ([a-z0-9-]+)", "\n".join(table)))
    missing = sorted(set(described) - in_table - {"help"})
    assert not missing, f"README's targets table lacks make {missing}"
