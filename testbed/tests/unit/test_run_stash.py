"""The keys of what the plugin keeps on pytest's stash: this very run's config holds what each
key promises (the plugin is active in testbed's own unit runs), one value per key."""

from __future__ import annotations

import pytest

from testbed.config import Settings
from testbed.run import stash
from testbed.run.controller import Controller, RunInfo


def test_this_runs_settings_and_run_are_on_its_stash(request: pytest.FixtureRequest) -> None:
    kept = request.config.stash
    assert isinstance(kept[stash.SETTINGS], Settings)
    assert isinstance(kept[stash.RUN], RunInfo)


def test_the_controller_is_only_in_the_controller(request: pytest.FixtureRequest) -> None:
    """An xdist worker gets the run from its controller, never a Controller of its own."""
    kept = request.config.stash
    if hasattr(request.config, "workerinput"):
        assert stash.CONTROLLER not in kept
    else:
        controller = kept[stash.CONTROLLER]
        assert isinstance(controller, Controller)
        assert kept[stash.RUN] is controller.info


def test_each_key_holds_its_own_value() -> None:
    keys = [stash.SETTINGS, stash.CONTROLLER, stash.RUN, stash.SETUP_SECONDS, stash.SETUP_SOURCE]
    kept = pytest.Stash()
    for i, key in enumerate(keys):
        kept[key] = i  # type: ignore[assignment]
    assert [kept[key] for key in keys] == list(range(len(keys)))
    del kept[stash.RUN]
    assert stash.RUN not in kept
    assert stash.SETTINGS in kept
