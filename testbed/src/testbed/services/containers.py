"""Our containers on the engine: the labels that say whose they are, how `docker ps` lists
them, and reaping the compose projects nobody uses any more (any checkout's).

Who uses a project is recorded, with its leases, in the marked state dir its containers name
in a label (testbed.services.ownership), as for native services.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import PortConflict
from testbed.report import command
from testbed.services import private
from testbed.services.binaries import Say
from testbed.services.engine import ENGINE_TIMEOUT, Runner, run
from testbed.services.identity import suggest_ports
from testbed.services.lease import drop_dead, in_use
from testbed.services.ownership import Record, Store, read_record
from testbed.services.ports import check_free, is_free

if TYPE_CHECKING:
    from testbed.services.docker import DockerBackend

LABEL = "dev.testbed.project"  # its value: the settings' docker_label
CHECKOUT_LABEL = "dev.testbed.checkout"
STATE_LABEL = "dev.testbed.state-dir"  # where the project's record and leases live
MOUNT_NS_LABEL = "dev.testbed.mount-ns"  # the mount namespace STATE_LABEL's path is in
COMPOSE_PROJECT = "com.docker.compose.project"
SERVICE_LOGS = {"postgres-e2e": "postgres", "redis-e2e": "valkey"}  # service -> log name
# A label is any text (a path may hold a tab or a newline): each comes JSON-quoted, one column.
PS_FORMAT = "\t".join(
    f'{{{{json (.Label "{label}")}}}}' if label else f"{{{{.{field}}}}}"
    for field, label in (
        ("ID", ""),
        ("Names", ""),
        ("State", ""),
        ("Status", ""),
        ("Image", ""),
        ("", COMPOSE_PROJECT),
        ("", "com.docker.compose.service"),
        ("", CHECKOUT_LABEL),
        ("", STATE_LABEL),
        ("Ports", ""),
        ("", MOUNT_NS_LABEL),
    )
)


@dataclass(frozen=True)
class Container:
    """One container of ours as `docker ps` lists it."""

    id: str
    name: str
    state: str
    status: str
    image: str
    project: str
    service: str
    checkout: str
    state_dir: str
    ports: str
    mount_ns: str = ""  # empty: started by an older testbed, or from a compose file without it

    @classmethod
    def parse(cls, line: str) -> Container:
        """From one line of `docker ps --format` with PS_FORMAT."""
        cols = (line.split("\t") + [""] * 11)[:11]
        cols[5:9] = map(_label, cols[5:9])
        cols[10] = _label(cols[10])
        return cls(*cols)

    def publishes(self, port: int) -> bool:
        """True when the container publishes host port `port` ("127.0.0.1:5433->5432/tcp")."""
        return f":{port}->" in self.ports


def mount_namespace() -> str:
    """This process's mount namespace ("mnt:[4026531841]"): the view its state dir paths are in."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""


def _label(column: str) -> str:
    """A JSON-quoted label column; a malformed one as it came (it then matches nothing of ours)."""
    try:
        value = json.loads(column)
    except ValueError:
        return column
    return value if isinstance(value, str) else column


def engine_objects(project: str, runner: Runner = run) -> list[str]:
    """Containers, networks and volumes the engine holds for a compose project."""
    found = []
    for kind in ("container", "network", "volume"):
        argv = ["docker", kind, "ls", "--quiet", "--filter", f"label={COMPOSE_PROJECT}={project}"]
        if kind == "container":
            argv.insert(3, "--all")
        proc = runner(argv, timeout=30)
        found += [f"{kind} {line}" for line in proc.stdout.split()]
    return found


def unused(record: Record, rows: list[Container]) -> str | None:
    """Why nobody uses these containers any more (they may go), or None while someone does.

    Dead runs' leases are dropped from record on the way (the caller writes it back). Called
    under the project's lock: a run writes its record before it starts containers, so
    containers without a docker record are nobody's.
    """
    if record.get("backend") != "docker":
        return "no record of who uses them (their state dir is gone)"
    found = drop_dead(record)
    if in_use(record, whole=True):
        return None
    if found.checkout_gone is not None:
        return f"its checkout {found.checkout_gone} is gone"
    holder = found.dead[0].holder if found.dead else None
    return f"its run (pid {holder.pid}) is dead" if holder else "nobody uses them any more"


def reap_projects(backend: DockerBackend) -> list[str]:
    """Take down every compose project of ours on the engine that nobody uses any more."""
    projects: dict[str, list[Container]] = {}
    for row in backend.containers(every=True):
        projects.setdefault(row.project, []).append(row)
    removed: list[str] = []
    here = mount_namespace()
    for project, rows in sorted(projects.items()):
        if rows[0].mount_ns and rows[0].mount_ns != here:
            continue  # started in another mount namespace (a job's container): its record is there
        mine = project == backend.settings.project
        state_dir = Path(rows[0].state_dir) if rows[0].state_dir else None
        if mine:
            state_dir = backend.state_dir
        elif state_dir is not None and not private.inside(state_dir, private.base_dir()):
            continue  # another user's, or an explicit E2E_STATE_DIR elsewhere: not ours to judge
        if state_dir is None:  # an older testbed's: only stopped ones prove themselves unused
            if any(r.state != "running" for r in rows):
                removed += backend.take_down(project, rows, "stopped", None)
            continue
        store = Store(state_dir)
        with store.locked(wait=mine) as locked:
            if not locked:
                continue  # that checkout is busy starting or stopping: not ours to judge now
            record = store.read()
            why = unused(record, rows)
            if why is None:
                store.write(record)
                continue
            removed += backend.take_down(project, rows, why, state_dir)
    return removed + reap_networks(backend)


def reap_networks(backend: DockerBackend) -> list[str]:
    """Networks of ours without containers whose project nobody uses (a run killed between
    `network create` and the containers leaves one)."""
    labels = (f'{{{{json (.Label "{label}")}}}}' for label in (STATE_LABEL, MOUNT_NS_LABEL))
    fmt = "\t".join(["{{.Name}}", *labels])  # a path: JSON-quoted
    argv = ["docker", "network", "ls", "--filter", f"label={LABEL}", "--format", fmt]
    proc = backend.runner(argv, timeout=ENGINE_TIMEOUT * 2)
    removed = []
    here = mount_namespace()
    for line in filter(None, proc.stdout.split("\n")):
        name, state_dir, mount_ns = [*line.split("\t"), "", ""][:3]
        state_dir, mount_ns = _label(state_dir), _label(mount_ns)
        if mount_ns and mount_ns != here:
            continue  # a job's (another mount namespace): its record is in its filesystem
        record = read_record(Path(state_dir)) if state_dir else Record()
        record.reap_leases()
        if record.leases():
            continue  # a live run (or the user) may be about to start containers on it
        # `network rm` refuses a network that containers still use: only bare ones go.
        if backend.runner(["docker", "network", "rm", name], timeout=30).returncode == 0:
            removed.append(f"network {name}")
    return removed


def report_dead(runner: Runner, rows: list[Container], say: Say) -> None:
    """Print the log tail of containers that died, before `down` removes them and it."""
    for row in rows:
        if row.state in ("running", "created"):
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            logs = runner(["docker", "logs", "--tail", "20", row.id], timeout=15)
            tail = (logs.stdout + logs.stderr).strip().splitlines()[-20:]
            text = "\n".join(f"    {line}" for line in tail) or "    (empty log)"
            say(f"container {row.name} is {row.status.lower()}; its log ends with:\n{text}")


def check_port(backend: DockerBackend, port: int, service: str, env: str) -> None:
    """Raise PortConflict unless 127.0.0.1:port is free, naming the holder: another checkout's
    containers (their project and checkout), else the process (pid and command line)."""
    if is_free(port):
        return
    holders = [r for r in backend.containers(every=True) if r.publishes(port)]
    if not holders:
        check_free(port, service=service, env=env)  # not a container of ours: name it
        return
    other = holders[0]
    where = f"in {other.checkout}" if other.checkout else "in that checkout"
    s = backend.settings
    raise PortConflict(
        f"port {port} for {service} is held by the testbed containers of another checkout "
        f"(container {other.name}, compose project {other.project}): "
        f"run {command('down')} {where}, "
        f"or use other ports: {suggest_ports(s.pg_port, s.redis_port)}",
        port=port,
        holder=f"container {other.name}",
    )


def write_logs(runner: Runner, rows: list[Container], state_dir: Path) -> dict[str, Path]:
    """Write each container's output to <state_dir>/postgres.log and valkey.log; return them."""
    found: dict[str, Path] = {}
    for row in rows:
        name = SERVICE_LOGS.get(row.service)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc = runner(["docker", "logs", "--timestamps", row.id], timeout=30)
            if name is not None and proc.returncode == 0:
                found[name] = state_dir / f"{name}.log"
                found[name].write_text(proc.stdout + proc.stderr)
    return found
