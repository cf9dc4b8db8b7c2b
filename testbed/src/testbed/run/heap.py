"""The garbage collector around a pytest process's start-up.

Start-up (plugins, conftests, collecting the suite: an app, its SDKs, SQLAlchemy, Faker,
hypothesis) allocates hundreds of thousands of objects that live until the process ends. With
the collector running, every full collection walks all of them again: while the imports grow
the heap, during the tests, and five times at the end of every run (pytest's hunt for
unraisable exceptions). So collection pauses while the suite starts, then runs once (what
start-up left as garbage is collected, and its finalizers and warnings fire, as before), and
what survives is frozen: later collections walk only what the tests make.
"""

from __future__ import annotations

import gc


def pause() -> bool:
    """Stop automatic collection; True when this call stopped it (``settle`` must follow)."""
    if not gc.isenabled():
        return False  # someone else's choice (a debugger, an outer run): leave it alone
    gc.disable()
    return True


def settle() -> None:
    """Collect start-up's garbage once, freeze the survivors, restart automatic collection."""
    gc.collect()
    gc.freeze()
    gc.enable()


def resume() -> None:
    """Restart automatic collection without freezing (a run that never collected)."""
    gc.enable()
