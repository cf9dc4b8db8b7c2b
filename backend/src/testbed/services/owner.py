"""Who owns a set of native services: a test run (pid + start time) or the user (persistent).

A run's servers are detached (own session), so a SIGKILLed run cannot stop them itself;
recording the run lets `reap` and the next run tell its orphans from services meant to stay.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from testbed.errors import UsageError
from testbed.services.procs import is_alive

OwnerKind = Literal["run", "user"]
# "user": `python -m testbed up` (make up), kept until `make down`.
# {"pid": N, "start": T}: the process of a test run (T: field 22 of /proc/N/stat, so a
# reused pid cannot pass for the run; None where there is no /proc).
Owner = Literal["user"] | dict[str, int | None]
USER: Owner = "user"


def start_time(pid: int) -> int | None:
    """Field 22 (starttime, clock ticks after boot) of /proc/<pid>/stat, or None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: count fields after the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def run_owner(pid: int | None = None) -> Owner:
    """The owner record of a run: pid (default: this process) and its start time."""
    pid = os.getpid() if pid is None else pid
    if pid <= 0 or not is_alive(pid):
        raise UsageError(f"owner pid {pid} is not a running process; pass a live pid (e.g. $$)")
    return {"pid": pid, "start": start_time(pid)}


def make_owner(kind: OwnerKind, pid: int | None = None) -> Owner:
    """The user's (persistent) owner record, or the run record of pid (default: this process)."""
    if kind == "user":
        if pid is not None:
            raise UsageError("an owner pid only makes sense for a run's services, not the user's")
        return USER
    if kind != "run":
        raise UsageError(f"unknown owner {kind!r}; valid: run, user")
    return run_owner(pid)


def dead_run(owner: object) -> int | None:
    """The pid of the run that owned the services if that run is gone, else None.

    "user", a missing owner (state written before owners were recorded) and anything
    unreadable count as alive: reaping must never take down services it cannot prove orphaned.
    """
    if not isinstance(owner, dict):
        return None
    pid, recorded = owner.get("pid"), owner.get("start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if not is_alive(pid):
        return pid
    if isinstance(recorded, int) and start_time(pid) not in (None, recorded):
        return pid  # the pid was reused by another process: the run is gone
    return None


def describe(owner: object) -> str:
    """Short text for status lines: who keeps the services alive."""
    if isinstance(owner, dict):
        return f"run pid {owner.get('pid')}"
    if owner == USER:
        return "user (make up; kept until make down)"
    return "unknown (started by an older testbed; kept)"
