"""testbed.run.heap: the collector paused for start-up, then start-up's survivors frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from testbed.run import heap


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_pause_stops_the_collector_and_settle_freezes_survivors_and_restarts_it() -> None:
    gc.enable()
    gc.unfreeze()
    assert heap.pause() is True
    assert not gc.isenabled()
    survivor = [object() for _ in range(100)]
    heap.settle()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(survivor)


def test_settle_collects_start_up_garbage_before_freezing() -> None:
    """A cycle start-up dropped is collected (its finalizer runs now), not frozen for good."""
    gc.enable()
    heap.pause()
    finalized: list[bool] = []

    class Node:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            finalized.append(True)

    Node()
    assert finalized == []  # a cycle: only the collector can free it
    heap.settle()
    assert finalized == [True]


def test_a_collector_someone_else_stopped_is_left_stopped() -> None:
    gc.disable()
    assert heap.pause() is False
    assert not gc.isenabled()


def test_resume_restarts_without_freezing() -> None:
    gc.enable()
    gc.unfreeze()
    heap.pause()
    heap.resume()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
