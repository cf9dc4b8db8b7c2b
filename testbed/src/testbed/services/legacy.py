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
    dir is in postgres's argv and Valkey's title shows its port, each running in its subdir."""
    sd = StateDir(state_dir)
    if sd.is_ours() or not sd.trusted():  # a directory another user could write: never
        return
    old = private.read_json(state_dir / "state.json")
    if old is None or old.get("project") != project:
        return
    record = Record({k: v for k, v in old.items() if k != "owner"})
    record["state_dir"] = str(state_dir)  # older records may lack it; it is this one
    checks = {
        "postgres": (f"-D {state_dir / 'pg' / 'data'} ", state_dir / "pg"),
        "valkey": (f":{old.get('redis_port')}", state_dir / "valkey"),
    }
    for name, (needle, cwd) in checks.items():
        try:
            pid = int((private.read_bytes(state_dir / f"{name}.pid") or b"").split()[0])
            found = ProcessIdentity.of(pid)
            same_dir = Path(psutil.Process(pid).cwd()) == cwd
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
        if found is not None and needle in found.titles[0] + " " and same_dir:
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
