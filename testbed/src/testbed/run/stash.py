"""Keys of what the plugin keeps on pytest's config.stash, shared by plugin.py and fixtures.py."""

from __future__ import annotations

import pytest

from testbed.config import Settings
from testbed.run.controller import Controller, RunInfo

SETTINGS = pytest.StashKey[Settings]()
CONTROLLER = pytest.StashKey[Controller]()  # only in the controller (or single process)
RUN = pytest.StashKey[RunInfo]()
SETUP_SECONDS = pytest.StashKey[float]()  # the worker's schema setup time, for the summary
SETUP_SOURCE = pytest.StashKey[str]()  # "built" or "restored" (from a cached dump)
