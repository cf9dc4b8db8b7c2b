"""Reliability suite: real services in private sandboxes (own ports and state dirs).

Fast checks run in `make reliability` (part of `make test`); the long ones are marked `soak`
and run from `make soak` (scripts/soak.sh). Every test here leaves the developer's PostgreSQL
(5432) and Redis (6379) exactly as it found them, which the session fixture below checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from rel_devsums import dev_fingerprint
from rel_sandbox import Sandbox

collect_ignore = ["payloads"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the soak marker (pyproject is the lead's; markers are strict), and keep the
    inner runs' output plain: these tests read pytest's summary lines, which FORCE_COLOR=1 (set
    by CI workflows) would wrap in escape codes. PY_COLORS wins over FORCE_COLOR in pytest."""
    config.addinivalue_line(
        "markers", "soak: long reliability checks, run by `make soak` (scripts/soak.sh)"
    )
    os.environ["PY_COLORS"] = "0"


def soak_trials(default: int) -> int:
    """Trials per signal/scenario in soak tests (SOAK_TRIALS overrides, for a quick try)."""
    return int(os.environ.get("SOAK_TRIALS", default))


@pytest.fixture(scope="session", autouse=True)
def dev_services_untouched() -> Iterator[dict[str, dict[str, str]]]:
    """Fingerprint the dev PostgreSQL and Redis before the session and check them after."""
    before = dev_fingerprint()
    yield before
    after = dev_fingerprint()
    assert after == before, "the developer's PostgreSQL (5432) or Redis (6379) changed"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Private ports and state dir; everything in it is killed and removed afterwards."""
    box = Sandbox.make()
    yield box
    box.destroy()


@pytest.fixture
def make_sandbox() -> Iterator[Callable[[str], Sandbox]]:
    """Make several sandboxes in one test; all are destroyed afterwards."""
    made: list[Sandbox] = []

    def make(tag: str = "sbx") -> Sandbox:
        box = Sandbox.make(tag)
        made.append(box)
        return box

    yield make
    for box in made:
        box.destroy()


# Longest first, by module (a quiet 2-core machine, one process: the normal user's fresh clone
# about a minute, the default container's 45 s, the payload runs 15-25 s each, most others a
# few seconds). `make reliability` hands tests to its xdist workers in this order, one at a time
# (--dist loadgroup), so the long ones overlap instead of one worker ending on them.
LONGEST_FIRST = (
    "test_normal_user.py",
    "test_default_container.py",
    "test_lifecycle_runs.py",
    "test_hostile_suites.py",
    "test_docker_reliability.py",
    "test_trust.py",
    "test_interrupts.py",
    "test_service_death.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the suite longest first (see LONGEST_FIRST); the rest keeps its order."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)
