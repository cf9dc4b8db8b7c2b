"""Unit tests judge testbed's own words: whatever e2e_command the outer run configured (this
repository's suites set "make"), messages here name `python -m testbed …` unless a test says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed import report


@pytest.fixture(autouse=True)
def default_command_words() -> Iterator[None]:
    """Messages name testbed's own CLI during each test; the outer run's choice comes back after."""
    previous = report.set_command(report.DEFAULT_COMMAND)
    yield
    report.set_command(previous)
