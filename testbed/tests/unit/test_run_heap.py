"""The collector around a pytest process's start-up (testbed.run.heap): paused only when it ran,
then start-up's garbage collected once and the survivors frozen. (The plugin's use of it, in a
real inner run: test_testbed_plugin.py.) Each test puts this process's collector back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from testbed.run import heap


@pytest.fixture(autouse=True)
def collector_back() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


class Node:
    """Part of a reference cycle: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


def test_pause_stops_a_running_collector_and_says_so() -> None:
    gc.enable()
    assert heap.pause() is True
    assert not gc.isenabled()


def test_pause_leaves_someone_elses_choice_alone() -> None:
    gc.disable()  # a debugger's, an outer run's
    assert heap.pause() is False
    assert not gc.isenabled()  # and settle must not follow: nothing was paused here


def test_settle_collects_start_ups_garbage_freezes_the_rest_and_restarts() -> None:
    gc.unfreeze()
    gc.disable()
    cycle = Node()
    gone = weakref.ref(cycle)
    survivor = Node()
    del cycle
    assert gone() is not None  # garbage, uncollected while paused
    heap.settle()
    assert gone() is None
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what survived start-up is not walked again
    assert survivor.me is survivor


def test_resume_restarts_without_freezing() -> None:
    gc.unfreeze()
    gc.disable()
    heap.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
