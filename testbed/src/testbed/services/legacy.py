"""State dirs an older testbed made (a record and pid files, no marker): adopted once, recording
their servers by identity only where they are provably that state dir's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from testbed.services import private
from testbed.services.endpoints import Endpoints
from testbed.services.ownership import (
    RUN,
    USER,
    ProcessIdentity,
    Record,
    StateDir,
    Store,
    new_lease,
)


def adopt(
    state_dir: Path, project: str, store: Store, endpoints: Callable[[Record], Endpoints]
) -> None:
    """Mark state_dir if an older testbed made it for project; record its servers when the data
    dir is in postgres's argv and Valkey's title ends with its address (the port a whole word),
    each running in its subdir."""
    sd = StateDir(state_dir)
    if sd.is_ours() or not sd.trusted():  # a directory another user could write: never
        return
    old = private.read_json(state_dir / "state.json")
    if old is None or old.get("project") != project:
        return
    record = Record({k: v for k, v in old.items() if k != "owner"})
    record["state_dir"] = str(state_dir)  # older records may lack it; it is this one
    data_arg, redis_port = f"-D {state_dir / 'pg' / 'data'} ", old.get("redis_port")
    checks: dict[str, tuple[Callable[[str], bool], Path]] = {
        "postgres": (lambda title: data_arg in title + " ", state_dir / "pg"),
        "valkey": (lambda title: _valkey_title_shows(title, redis_port), state_dir / "valkey"),
    }
    for name, (shows, cwd) in checks.items():
        try:
            pid = int((private.read_bytes(state_dir / f"{name}.pid") or b"").split()[0])
            found = ProcessIdentity.of(pid)
            same_dir = Path(psutil.Process(pid).cwd()) == cwd
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
        if found is not None and shows(found.titles[0]) and same_dir:
            record.set_process(name, found)
    owner = old.get("owner")
    if owner == USER:
        record.add_lease(new_lease(USER, None))
    elif isinstance(owner, dict) and isinstance(owner.get("pid"), int):
        holder = ProcessIdentity.of(owner["pid"])
        if holder is not None:
            record.add_lease(new_lease(RUN, holder))
    if "pg_port" in record and "redis_port" in record:
        eps = endpoints(record)
        record.update(database_url=eps.database_url, redis_url=eps.redis_url)
    sd.prepare(project=project)
    store.write(record)


def _valkey_title_shows(title: str, port: object) -> bool:
    """True when title is Valkey's own for port. An older testbed bound 127.0.0.1 and let Valkey
    set its title, "<executable> <address>:<port>": the port is the last word's, whole (":5433"
    is not ":54330", nor another process's argument)."""
    words = title.split()
    return len(words) >= 2 and words[-1] == f"127.0.0.1:{port}"
