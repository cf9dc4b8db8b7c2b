"""The garbage collector around a pytest process's start-up.

Start-up (plugins, conftests, collecting the suite: an app, its SDKs, SQLAlchemy, Faker,
hypothesis) allocates hundreds of thousands of objects that live until the process ends. With
the collector running, every full collection walks all of them again: while the imports grow
the heap, during the tests, and five times at the end of every run (pytest's hunt for
unraisable exceptions). So collection pauses while the suite starts, then runs once (what
start-up left as garbage is collected, and its finalizers and warnings fire, as before), and
what survives is frozen: later collections walk only what the tests make.

The pause is a first threshold of 0, not ``gc.disable()``: a suite's own ``gc.disable()`` or
``gc.enable()`` during start-up (a conftest's) stays in effect, and ``gc.isenabled()`` tells
the truth. Only a process's outermost run pauses: a run inside a test (pytester's inline runs,
``pytest.main`` from a test) builds objects that die with it, and frozen they would never be
freed.
"""

from __future__ import annotations

import gc
import os

Thresholds = tuple[int, int, int]

_paused_once = False  # a run in this process paused (and froze) already: later ones are nested


def pause() -> Thresholds | None:
    """Stop automatic collection; the thresholds ``settle`` or ``resume`` must put back when
    this call stopped it, else None."""
    global _paused_once
    if _paused_once or os.environ.get("PYTEST_CURRENT_TEST"):
        return None  # a run inside another run's test: its heap is that test's
    thresholds = gc.get_threshold()
    if not gc.isenabled() or thresholds[0] == 0:
        return None  # someone else's choice (a debugger, PYTHONGC settings): leave it alone
    _paused_once = True
    gc.set_threshold(0, *thresholds[1:])
    return thresholds


def settle(thresholds: Thresholds) -> None:
    """Collect start-up's garbage once, freeze the survivors, restart automatic collection."""
    gc.collect()
    gc.freeze()
    resume(thresholds)


def resume(thresholds: Thresholds) -> None:
    """Restart automatic collection (without freezing: a run that never collected), unless
    start-up set thresholds of its own."""
    if gc.get_threshold()[0] == 0:
        gc.set_threshold(*thresholds)
