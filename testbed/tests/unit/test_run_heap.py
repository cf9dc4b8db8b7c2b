"""The collector around a pytest process's start-up (testbed.run.heap): paused only in a
process's outermost run and only when it ran, then start-up's garbage collected once and the
survivors frozen. (The plugin's use of it, in a real inner run: test_testbed_plugin.py.) Each
test puts this process's collector back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from testbed.run import heap


@pytest.fixture(autouse=True)
def collector_back() -> Iterator[None]:
    was_enabled, thresholds = gc.isenabled(), gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def as_outermost(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a process's first run sees it: no test of another run under way, none paused yet.
    (In the test's body: pytest sets PYTEST_CURRENT_TEST anew as the call starts.)"""
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(heap, "_paused_once", False)


class Node:
    """Part of a reference cycle: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


def test_pause_stops_automatic_collection_and_hands_back_the_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    as_outermost(monkeypatch)
    gc.enable()
    thresholds = gc.get_threshold()
    assert heap.pause() == thresholds
    assert gc.get_threshold() == (0, *thresholds[1:])
    assert gc.isenabled()  # not gc.disable(): a suite's own disable() stays observable


def test_pause_leaves_someone_elses_choice_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    as_outermost(monkeypatch)
    gc.disable()  # a debugger's
    thresholds = gc.get_threshold()
    assert heap.pause() is None
    assert not gc.isenabled()  # and settle must not follow: nothing was paused here
    assert gc.get_threshold() == thresholds


def test_a_run_inside_a_test_does_not_pause() -> None:
    thresholds = gc.get_threshold()
    assert heap.pause() is None  # this test is another run's: pytester, pytest.main
    assert gc.get_threshold() == thresholds


def test_only_the_first_run_of_a_process_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    as_outermost(monkeypatch)
    thresholds = gc.get_threshold()
    assert heap.pause() == thresholds
    gc.set_threshold(*thresholds)
    assert heap.pause() is None
    assert gc.get_threshold() == thresholds


def test_settle_collects_start_ups_garbage_freezes_the_rest_and_restarts() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(0, *thresholds[1:])
    cycle = Node()
    gone = weakref.ref(cycle)
    survivor = Node()
    del cycle
    assert gone() is not None  # garbage, uncollected while paused
    heap.settle(thresholds)
    assert gone() is None
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() > 0  # what survived start-up is not walked again
    assert survivor.me is survivor


def test_settle_keeps_a_suites_own_disable() -> None:
    thresholds = gc.get_threshold()
    gc.set_threshold(0, *thresholds[1:])
    gc.disable()  # a conftest's, while paused
    heap.settle(thresholds)
    assert not gc.isenabled()


def test_resume_restarts_without_freezing() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(0, *thresholds[1:])
    heap.resume(thresholds)
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0


def test_resume_keeps_thresholds_start_up_set_itself() -> None:
    thresholds = gc.get_threshold()
    gc.set_threshold(0, *thresholds[1:])
    gc.set_threshold(5000, 20, 20)  # a conftest's tuning
    heap.resume(thresholds)
    assert gc.get_threshold() == (5000, 20, 20)
