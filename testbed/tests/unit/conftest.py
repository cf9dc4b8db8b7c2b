"""Unit tests judge testbed's own words: whatever e2e_command the outer run configured (this
repository's suites set "make"), messages here name `python -m testbed …` unless a test says.

A test whose subject is another process (a replayed run) has that process started before the
first test: on two cores it runs beside the rest of the suite instead of after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from replayed_run import ReplayedRun

from testbed import report


@pytest.fixture(autouse=True)
def default_command_words() -> Iterator[None]:
    """Messages name testbed's own CLI during each test; the outer run's choice comes back after."""
    previous = report.set_command(report.DEFAULT_COMMAND)
    yield
    report.set_command(previous)


@pytest.fixture(scope="session")
def replayed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayedRun]:
    """A run replayed with --e2e-seed: a new interpreter, so nothing this process holds (its
    hash seed, its cached pools) can make the data agree."""
    run = ReplayedRun.start(tmp_path_factory.mktemp("replayed-run"))
    yield run
    run.stop()


@pytest.fixture(scope="session", autouse=True)
def start_other_processes_first(request: pytest.FixtureRequest) -> None:
    """Start the processes that the selected tests check before the first test runs."""
    for fixture in ("replayed_run",):
        if any(fixture in getattr(item, "fixturenames", ()) for item in request.session.items):
            request.getfixturevalue(fixture)
