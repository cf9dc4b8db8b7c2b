"""scripts/workflow.py (`make workflow`): every job of the workflows runs here or is listed with
the reason, every action has its pinned code or a stand-in that says why, and job selection."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "workflow_runner", ROOT / "scripts" / "workflow.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wf = load()


def test_every_job_runs_or_is_listed_with_its_reason() -> None:
    legs = wf.load_legs()
    jobs = {
        (path.name, job)
        for path in wf.WORKFLOWS.glob("*.yml")
        for job in yaml.safe_load(path.read_text())["jobs"]
    }
    assert {(leg.workflow, leg.job) for leg in legs} == jobs
    skipped = {(leg.workflow, leg.job) for leg in legs if leg.skip}
    assert skipped == set(wf.NEEDS_INTERNET) | set(wf.NOT_A_JOB)
    assert all(len(leg.skip) > 20 for leg in legs if leg.skip)  # a reason, not a flag


def test_every_action_of_a_job_that_runs_has_code_here(tmp_path: Path) -> None:
    """Built in (checkout), or a stand-in under .github/act whose header says why."""
    runnable = {(leg.workflow, leg.job) for leg in wf.load_legs() if not leg.skip}
    for path in wf.WORKFLOWS.glob("*.yml"):
        for job_id, job in yaml.safe_load(path.read_text())["jobs"].items():
            if (path.name, job_id) not in runnable:
                continue
            for step in job.get("steps", []):
                repo = str(step.get("uses", "")).split("@")[0]
                if not repo or repo in wf.BUILT_IN:
                    continue
                stand_in = wf.STAND_INS / repo.split("/")[1] / "action.yml"
                assert stand_in.is_file(), f"{repo} ({job_id}) has no stand-in"
                head = stand_in.read_text().split("\nname:")[0]
                assert head.startswith(f"# Stand-in for {repo} "), stand_in
                assert len(head) > 120, f"{stand_in}: say why it stands in"
    # With no pinned trees in the cache, everything but checkout maps to a stand-in.
    args, notes = wf.action_dirs(tmp_path)
    assert not any("no stand-in" in n for n in notes if "nix" not in n and "flake" not in n)
    mapped = args[1::2]
    assert all(m.split("=", 1)[1].startswith(str(wf.STAND_INS)) for m in mapped)
    assert any(m.startswith("actions/setup-python@") for m in mapped)


def test_a_pinned_tree_in_the_cache_replaces_the_stand_in(tmp_path: Path) -> None:
    sha = next(s for r, s in wf.actions_used() if r == "actions/setup-python")
    real = tmp_path / "actions" / f"actions+setup-python@{sha}"
    real.mkdir(parents=True)
    (real / "action.yml").write_text("name: setup-python\n")
    args, _ = wf.action_dirs(tmp_path)
    assert f"actions/setup-python@{sha}={real}" in args
    assert not any(a.startswith("actions/cache@") and str(tmp_path) in a for a in args)


def test_jobs_are_selected_by_id_and_matrix_values() -> None:
    legs = wf.load_legs()
    assert [leg.label for leg in wf.select(legs, ["lint:python=3.12"])] == ["lint:python=3.12"]
    assert len(wf.select(legs, ["e2e"])) == len(
        yaml.safe_load((wf.WORKFLOWS / "ci.yml").read_text())["jobs"]["e2e"]["strategy"]["matrix"][
            "group"
        ]
    )
    assert wf.select(legs, []) == legs
    with pytest.raises(SystemExit, match="no job matches"):
        wf.select(legs, ["lint:python=2.7"])


def test_the_lint_leg_with_nix_is_the_one_selected_with_its_python() -> None:
    (leg,) = wf.select(wf.load_legs(), ["lint:python=3.12"])
    assert leg.matrix == {"python": "3.12", "nix": True}


def test_a_cache_dir_with_a_space_and_a_quote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """testbed prints its cache dir shell-quoted; act splits --container-options as a shell does."""
    import shlex

    cache = tmp_path / "it's a cache"
    monkeypatch.setenv("E2E_CACHE_DIR", str(cache))
    assert wf.cache_dir() == cache / "act"
    option = wf.mount_option(cache / "pip-cache", "/root/.cache/pip")
    assert shlex.split(option) == ["-v", f"{cache}/pip-cache:/root/.cache/pip"]


def test_a_job_asked_for_under_ci_must_run() -> None:
    ran = ("e2e:group=1", "success", 60.0)
    skipped = ("lint:python=3.12", "not run: no Python 3.12 in the runner image", 0.0)
    failed = ("integration", "failure (exit 1)", 90.0)
    assert wf.verdict([ran, skipped], asked=False, ci=True) == 0  # the full list: listed, passes
    assert wf.verdict([ran, skipped], asked=True, ci=False) == 0  # by hand: said, not failed
    assert wf.verdict([ran, skipped], asked=True, ci=True) == 1  # .ci/run: it must really run
    assert wf.verdict([ran, failed], asked=False, ci=False) == 1
    assert wf.verdict([ran], asked=True, ci=True) == 0
