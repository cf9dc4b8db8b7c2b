"""Our containers on the engine: the labels that say whose they are, how `docker ps` lists
them, and reaping the compose projects nobody uses any more (any checkout's).

Who uses a project is recorded, with its leases, in the marked state dir its containers name
in a label (testbed.services.ownership), as for native services.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.services.engine import ENGINE_TIMEOUT, Runner, run
from testbed.services.ownership import Record, Store, read_record

if TYPE_CHECKING:
    from testbed.services.docker import DockerBackend

LABEL = "dev.testbed.project"  # its value: the settings' docker_label
CHECKOUT_LABEL = "dev.testbed.checkout"
STATE_LABEL = "dev.testbed.state-dir"  # where the project's record and leases live
COMPOSE_PROJECT = "com.docker.compose.project"
SERVICE_LOGS = {"postgres-e2e": "postgres", "redis-e2e": "valkey"}  # service -> log name
PS_FORMAT = "\t".join(
    f'{{{{.Label "{label}"}}}}' if label else f"{{{{.{field}}}}}"
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

    @classmethod
    def parse(cls, line: str) -> Container:
        """From one line of `docker ps --format` with PS_FORMAT."""
        cols = (line.split("\t") + [""] * 10)[:10]
        return cls(*cols)

    def publishes(self, port: int) -> bool:
        """True when the container publishes host port `port` ("127.0.0.1:5433->5432/tcp")."""
        return f":{port}->" in self.ports


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
    dead = record.reap_leases()
    checkout = Path(str(record.get("checkout") or "/"))
    if not checkout.exists():
        record.drop_user_lease()  # its checkout is gone: nobody can `make down` it
        return f"its checkout {checkout} is gone"
    if record.leases():
        return None
    holder = dead[0].holder if dead else None
    return f"its run (pid {holder.pid}) is dead" if holder else "nobody uses them any more"


def reap_projects(backend: DockerBackend) -> list[str]:
    """Take down every compose project of ours on the engine that nobody uses any more."""
    from testbed.services.native import lock_file

    projects: dict[str, list[Container]] = {}
    for row in backend.containers(every=True):
        projects.setdefault(row.project, []).append(row)
    removed: list[str] = []
    for project, rows in sorted(projects.items()):
        mine = project == backend.settings.project
        state_dir = Path(rows[0].state_dir) if rows[0].state_dir else None
        if mine:
            state_dir = backend.state_dir
        if state_dir is None:  # an older testbed's: only stopped ones prove themselves unused
            if any(r.state != "running" for r in rows):
                removed += backend.take_down(project, rows, "stopped", None)
            continue
        store = Store(state_dir, lock_file(backend.settings, project))
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
    fmt = f'{{{{.Name}}}}\t{{{{.Label "{STATE_LABEL}"}}}}'
    argv = ["docker", "network", "ls", "--filter", f"label={LABEL}", "--format", fmt]
    proc = backend.runner(argv, timeout=ENGINE_TIMEOUT * 2)
    removed = []
    for line in proc.stdout.splitlines():
        name, _, state_dir = line.partition("\t")
        record = read_record(Path(state_dir)) if state_dir else Record()
        record.reap_leases()
        if record.leases():
            continue  # a live run (or the user) may be about to start containers on it
        # `network rm` refuses a network that containers still use: only bare ones go.
        if backend.runner(["docker", "network", "rm", name], timeout=30).returncode == 0:
            removed.append(f"network {name}")
    return removed
