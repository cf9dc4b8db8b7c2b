"""scripts/pytest-args.sh: PYTEST_ARGS as pytest's words, and whether to add pytest-randomly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    'source scripts/pytest-args.sh; printf "%s\\n" "${user_args[@]}" "|${randomly[*]}|$no_randomly"'
)


def split(pytest_args: str) -> tuple[list[str], str, str]:
    """(user_args, randomly, no_randomly) as the sourcing script sees them."""
    out = subprocess.run(
        ["bash", "-c", SHOW],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PY": sys.executable, "PYTEST_ARGS": pytest_args},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    _, randomly, no_randomly = out[-1].split("|")
    return [w for w in out[:-1] if w], randomly, no_randomly


def test_quotes_are_respected_and_nothing_is_evaluated() -> None:
    words, randomly, _ = split("-k 'crm or tasks' -x $(touch /tmp/pwned)")
    assert words == ["-k", "crm or tasks", "-x", "$(touch", "/tmp/pwned)"]
    assert randomly == "-p randomly"


@pytest.mark.parametrize(
    ("args", "randomly", "blocked"),
    [
        ("-p no:randomly", "", "1"),
        ("-pno:randomly -x", "", "1"),
        ("-p randomly", "", ""),
        ("-p xdist -x", "-p randomly", ""),
        ("-k randomly", "-p randomly", ""),
    ],
)
def test_randomly_is_added_only_when_the_user_did_not_choose(
    args: str, randomly: str, blocked: str
) -> None:
    """`-p no:randomly` next to our `-p randomly` made every test a TypeError in pytest-randomly."""
    assert split(args)[1:] == (randomly, blocked)
