"""The workflow's env: blocks, as each step sees them (job env, then step env)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def steps_with_env() -> list[tuple[str, str, dict[str, Any]]]:
    """(job, run line, effective env) for every `run:` step of ci.yml."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    found = []
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                env = workflow.get("env", {}) | job.get("env", {}) | step.get("env", {})
                found.append((name, step["run"], env))
    return found


def test_the_example_apps_never_run_with_kept_services() -> None:
    """E2E_KEEP=1 keeps the first example app's services on the ports the second one needs."""
    example_steps = [(job, env) for job, run, env in steps_with_env() if "make example" in run]
    assert example_steps, "no step runs make example: update this test"
    for job, env in example_steps:
        assert str(env.get("E2E_KEEP", "0")) not in {"1", "true", "yes"}, job


def test_the_e2e_shards_keep_their_services_for_the_logs() -> None:
    """The shard's own `make e2e` step keeps its containers, so a failure's logs can be read."""
    e2e_steps = [env for job, run, env in steps_with_env() if run.startswith("make e2e ")]
    assert e2e_steps
    assert all(env.get("E2E_KEEP") == "1" for env in e2e_steps)
