"""Reaping native services: those no live run or `python -m testbed up` uses any more, in
this checkout's state dir and the other state dirs in the invoking user's own base (other
checkouts, including deleted ones). Nothing outside that base is ever read: another user
could have written it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from testbed.config import STATE_DIR_GLOB
from testbed.services import private
from testbed.services.lease import drop_dead, in_use
from testbed.services.ownership import Store, read_record

if TYPE_CHECKING:
    from testbed.services.native import NativeBackend


def reap_native(backend: NativeBackend) -> list[str]:
    """Reap backend's own state dir and its native siblings; return what was removed."""
    removed: list[str] = []
    mine = backend.state_dir
    base = private.base()
    candidates = [mine, *sorted(p for p in base.glob(STATE_DIR_GLOB) if p.is_dir())]
    for state_dir in dict.fromkeys(candidates):
        if state_dir != mine and read_record(state_dir).get("backend") != backend.name:
            continue
        store = Store(state_dir)
        with store.locked(wait=state_dir == mine) as locked:
            if locked and state_dir == mine:
                backend.adopt()
            record = store.read() if locked else None
            if record and record.get("backend") == backend.name:
                if state_dir == mine and record.get("project") != backend.settings.project:
                    continue  # another project's services in a shared E2E_STATE_DIR
                removed += _reap_dir(backend, store, state_dir)
    return removed


def _reap_dir(backend: NativeBackend, store: Store, state_dir: Path) -> list[str]:
    record = store.read()
    notes = drop_dead(record).notes()
    alive = backend.alive(record)
    if in_use(record, whole=len(alive) == len(record.processes()) == 2):  # both servers
        if notes:
            store.write(record)
        return notes
    removed = backend.stop(record, quiet=True, state_dir=state_dir)
    return [*notes, *removed] if removed or notes else []
