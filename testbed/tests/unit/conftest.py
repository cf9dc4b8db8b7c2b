"""Unit tests judge testbed's own words: whatever e2e_command the outer run configured (this
repository's suites set "make"), messages here name `python -m testbed …` unless a test says.

A test whose subject is another process (a replayed run) has that process started before the
first test: on two cores it runs beside the rest of the suite instead of after it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from replayed_run import ReplayedRun

from testbed import report
from testbed.services.ownership import ProcessIdentity


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
    """Start the processes that the selected tests check before the first test runs. Under
    xdist every worker collects every test but runs only some: the first worker starts them
    early, another only when a test of its own asks (each such run costs ~2 s of CPU)."""
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    for fixture in ("replayed_run",):
        if any(fixture in getattr(item, "fixturenames", ()) for item in request.session.items):
            request.getfixturevalue(fixture)


@pytest.fixture
def other_run() -> Iterator[ProcessIdentity]:
    """The identity of another live run (not this process, whose own lease `down` ends)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    found = ProcessIdentity.of(proc.pid)
    assert found is not None
    yield found
    proc.kill()
    proc.wait()


@pytest.fixture
def dead() -> ProcessIdentity:
    """The identity of a run that has ended (its pid gone, a start time no process has)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return ProcessIdentity(proc.pid, 1.0, ("pytest",))
