"""Docker backend: docker-compose-e2e.yml under a project name derived from the checkout.

Like the native backend it records who uses the containers (testbed.services.ownership: a
record with leases in a marked state dir, under the project's lock): a run's lease ends with
the run, and the containers stop when the last lease ends. Labels on every container and on
the network name the checkout and that state dir, so `reap` finds any checkout's leftovers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed import guard, report
from testbed.config import Settings
from testbed.errors import InUse, ServicesUnavailable
from testbed.report import command
from testbed.services import extensions, health, pgdata
from testbed.services import lease as lease_lifecycle
from testbed.services.backend import ServiceStatus
from testbed.services.binaries import Say
from testbed.services.containers import (
    COMPOSE_PROJECT,
    LABEL,
    PS_FORMAT,
    Container,
    check_port,
    mount_namespace,
    reap_projects,
    report_dead,
    write_logs,
)
from testbed.services.credentials import (
    Credentials,
    admin_role,
    postgres_url,
    redis_url,
)
from testbed.services.endpoints import Endpoints
from testbed.services.engine import (
    ENGINE_TIMEOUT,
    INSTALL,
    Images,
    Runner,
    check_majors,
    compose_command,
    engine_problem,
    engine_version,
    resolve_images,
    run,
)
from testbed.services.ownership import (
    Lease,
    Record,
    StateDir,
    Store,
    new_record,
    state_dir_of,
)
from testbed.services.portlock import port_lock

REDIS_DATABASES = 64  # must match --databases in docker-compose-e2e.yml


def engine_answers(runner: Runner = run) -> bool:
    """True if a Docker engine (any version) answers."""
    return engine_version(runner)[0] is not None


def unavailable(settings: Settings, *, fetch: bool, runner: Runner | None = None) -> str | None:
    """None when the docker backend can run here (or this checkout has containers), else why
    not in one line. fetch: pull a missing image (the services are about to start)."""
    runner = runner or run
    backend = DockerBackend(settings, runner=runner, say=lambda message: None)
    problem = engine_problem(runner)
    if problem is not None:
        return f"{problem}; {INSTALL}"
    if backend.containers():
        return None  # this checkout's containers exist: docker owns them
    try:
        backend.require(fetch=fetch)
    except ServicesUnavailable as exc:
        return str(exc)
    return None


class DockerBackend:
    """PostgreSQL 16 and Valkey 8 in containers from docker-compose-e2e.yml."""

    name = "docker"

    def __init__(
        self,
        settings: Settings,
        *,
        runner: Runner = run,
        compose: Sequence[str] | None = None,
        say: Say = report.say,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.say = say
        self.state_dir = state_dir_of(settings)
        self.store = Store(self.state_dir)  # one lock per state dir, either backend
        self._compose_cmd = list(compose) if compose is not None else None
        # Never publish containers on the developer's ports.
        guard.check_postgres_url(self.database_url)
        guard.check_redis_url(self.redis_url)

    # -- command lines (unit-tested) ------------------------------------------------------
    def compose_argv(self, *args: str, project: str | None = None) -> list[str]:
        """Full compose command line for this checkout's project (or another of ours)."""
        if self._compose_cmd is None:
            found, why = compose_command(self.runner)
            if found is None:
                raise ServicesUnavailable(f"no Compose v2 ({why}); {INSTALL}")
            self._compose_cmd = found
        s = self.settings
        return [*self._compose_cmd, "-f", str(s.compose_file), "-p", project or s.project, *args]

    def up_argv(self) -> list[str]:
        """`compose up -d --wait` bounded by the wait timeout."""
        wait = str(max(1, round(self.settings.wait_timeout)))
        return self.compose_argv("up", "-d", "--wait", "--wait-timeout", wait)

    def down_argv(self, project: str | None = None) -> list[str]:
        """`compose down -v --remove-orphans`: containers, networks and volumes."""
        return self.compose_argv("down", "-v", "--remove-orphans", project=project)

    def ps_argv(self, project: str | None = None) -> list[str]:
        """`docker ps -a` of one compose project of ours (None: all of ours on the engine)."""
        which = f"{COMPOSE_PROJECT}={project}" if project else LABEL
        return ["docker", "ps", "-a", "--no-trunc", "--filter", f"label={which}",
                "--format", PS_FORMAT]  # fmt: skip

    def compose_env(self, images: Images | None = None) -> dict[str, str]:
        """Environment for compose: ports, images, role and the labels the compose file reads."""
        s = self.settings
        env = {
            **os.environ,
            "E2E_PG_PORT": str(s.pg_port),
            "E2E_REDIS_PORT": str(s.redis_port),
            "E2E_PROJECT": s.docker_label,
            "E2E_PG_ROLE": s.pg_role,
            "E2E_CHECKOUT": str(s.checkout),
            "E2E_STATE_DIR": str(self.state_dir),
            "E2E_MOUNT_NS": mount_namespace(),
        }
        # The compose file insists on both passwords (so a hand-run `up` never starts a server
        # without one); commands that start nothing get a placeholder.
        creds = self.credentials()
        env["E2E_PG_ADMIN_PASSWORD"] = creds.pg_admin if creds else "unused"
        env["E2E_REDIS_PASSWORD"] = creds.valkey if creds else "unused"
        if images is not None:
            env.update(E2E_PG_IMAGE=images.postgres, E2E_REDIS_IMAGE=images.redis)
        return env

    # -- queries ----------------------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        """The containers' passwords (0600 files in the state dir, generated per start)."""
        return Credentials.load(self.state_dir)

    @property
    def database_url(self) -> str:
        """libpq URL of the container's database, as the E2E role (no superuser)."""
        creds = self.credentials()
        role = self.settings.pg_role
        return postgres_url(role, creds.pg_app if creds else None, self.settings.pg_port, role)

    def admin_url(self, creds: Credentials) -> str:
        """The bootstrap superuser's URL (the image's POSTGRES_USER; testbed's use only)."""
        s = self.settings
        return postgres_url(admin_role(s.pg_role), creds.pg_admin, s.pg_port, s.pg_role)

    @property
    def redis_url(self) -> str:
        """URL of the container's Valkey, database 0."""
        creds = self.credentials()
        return redis_url(creds.valkey if creds else None, self.settings.redis_port)

    def containers(self, project: str | None = None, *, every: bool = False) -> list[Container]:
        """This project's containers (or another's; every=True: all of ours on the engine)."""
        argv = self.ps_argv(None if every else project or self.settings.project)
        try:
            proc = self.runner(argv, timeout=ENGINE_TIMEOUT * 2)
        except (OSError, subprocess.TimeoutExpired):
            return []
        if proc.returncode != 0:
            return []
        # "\n" only: splitlines() also splits at characters a label may hold (\x1c, \x85, ...).
        return [Container.parse(line) for line in proc.stdout.split("\n") if line.strip()]

    def _endpoints(self, pg_version: str, redis_version: str) -> Endpoints:
        return Endpoints(
            backend=self.name,
            database_url=self.database_url,
            redis_url=self.redis_url,
            pg_version=pg_version,
            redis_version=redis_version,
            redis_databases=REDIS_DATABASES,
        )

    def _on_our_ports(self, rows: list[Container]) -> bool:
        s = self.settings
        want = {"postgres-e2e": s.pg_port, "redis-e2e": s.redis_port}
        return {r.service for r in rows} == set(want) and all(
            r.publishes(want[r.service]) for r in rows
        )

    def running(self, rows: list[Container] | None = None) -> Endpoints | None:
        """Endpoints if this project's containers (rows: as just listed) run on our ports and
        answer, else None."""
        rows = self.containers() if rows is None else rows
        if not self._on_our_ports(rows) or any(r.state != "running" for r in rows):
            return None
        if self.credentials() is None:
            return None  # started without passwords (an older testbed) or ours no more
        try:
            pg = health.wait_postgres(self.database_url, 2.0)
            return self._endpoints(pg, health.wait_redis(self.redis_url, 2.0))
        except ServicesUnavailable:
            return None

    def logs(self) -> dict[str, Path]:
        """The containers' output so far, written to the state dir by service (its tail is shown
        and the file kept when a service dies); the containers go with `down`, these stay."""
        if not StateDir(self.state_dir).is_ours():
            return {}
        return write_logs(self.runner, self.containers(), self.state_dir)

    # -- lifecycle ---------------------------------------------------------------------------
    def require(self, *, fetch: bool) -> Images:
        """The images to run; else ServicesUnavailable naming what is missing."""
        problem = engine_problem(self.runner)
        if problem is not None:
            raise ServicesUnavailable(f"{problem}; {INSTALL}")
        self.compose_argv()  # raises when there is no Compose v2
        images, why = resolve_images(self.settings, self.runner, fetch=fetch, say=self.say)
        if images is None:
            raise ServicesUnavailable(why)
        return images

    def up(self) -> Endpoints:
        """Start (or reuse) the containers for the user, as `python -m testbed up` does;
        `down()` stops them."""
        return lease_lifecycle.up(self)

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Reuse this checkout's healthy containers or start them, and register the lease (see
        lease.py)."""
        return lease_lifecycle.ensure(self, lease)

    # -- what the shared lifecycle asks of this backend (lease.Runtime) ---------------------
    @property
    def what(self) -> str:
        """The instance in a message."""
        return f"this checkout's containers (compose project {self.settings.project})"

    def adopt(self) -> None:
        """Nothing to take over: an older testbed's containers are judged by reap alone."""

    def present(self, record: Record) -> bool:
        """This project's containers exist (running or not)."""
        return bool(self.containers())

    def answering(self, record: Record) -> Endpoints | None:
        """Endpoints when this project's containers run on our ports and answer."""
        rows = self.containers()
        self._refuse_other_ports(rows)
        return self.running(rows)

    def start(self, leases: list[Lease]) -> Endpoints:
        """`compose up` with fresh passwords, recorded (with the leases) before it runs."""
        images = self.require(fetch=True)
        StateDir(self.state_dir).prepare(project=self.settings.project)
        Credentials.generate().save(self.state_dir)  # compose_env() passes them
        record = self._record(images, None)
        record.set_leases(leases)
        self.store.write(record)
        eps = self._start(images)
        record.update(pg_version=eps.pg_version, redis_version=eps.redis_version)
        record["containers"] = {r.service: r.id for r in self.containers()}
        self.store.write(record)
        return eps

    def stop(self, record: Record, *, quiet: bool) -> list[str]:
        """`compose down` of this project's containers (dead ones' log tails first), and its
        state dir when the record there is ours. A network left without containers is reap's."""
        rows = self.containers()
        state_dir = self.state_dir if record.get("backend") == self.name else None
        if not rows:
            return StateDir(state_dir).remove() if state_dir else []
        return self.take_down(self.settings.project, rows, "", state_dir)

    def _record(self, images: Images | None, eps: Endpoints | None) -> Record:
        record = new_record(
            self.name,
            self.settings,
            self.state_dir,
            database_url=self.database_url,
            redis_url=self.redis_url,
        )
        if images is not None:
            record["images"] = {"postgres": images.postgres, "redis": images.redis}
        if eps is not None:
            record.update(pg_version=eps.pg_version, redis_version=eps.redis_version)
        return record

    def _start(self, images: Images) -> Endpoints:
        s = self.settings
        with port_lock((s.pg_port, s.redis_port), timeout=2 * s.wait_timeout + 30, say=self.say):
            check_port(self, s.pg_port, "PostgreSQL", "E2E_PG_PORT")
            check_port(self, s.redis_port, "Valkey", "E2E_REDIS_PORT")
            # On any failure the lifecycle takes down what the record names (lease.ensure).
            self._compose(self.up_argv(), "docker compose up", s.wait_timeout + 120, images)
            t = s.wait_timeout
            creds = self.credentials()
            if creds is None:
                raise ServicesUnavailable(f"the passwords in {self.state_dir} are gone")
            health.wait_postgres(self.admin_url(creds), t)
            self._provision(creds)
            pg = health.wait_postgres(self.database_url, t)
            eps = self._endpoints(pg, health.wait_redis(self.redis_url, t))
            check_majors(eps, images)
        return eps

    def _provision(self, creds: Credentials) -> None:
        """As the bootstrap superuser: the E2E role (no superuser) gets its password and the
        database; extensions asked for are created, the rest refused with the fix."""
        admin = self.admin_url(creds)
        pgdata.create_app_role(admin, self.settings.pg_role, creds.pg_app)
        template1 = admin.rsplit("/", 1)[0] + "/template1"
        extensions.install_refusals([admin, template1], {}, create=self.settings.pg_extensions)

    def _refuse_other_ports(self, rows: list[Container]) -> None:
        if all(r.state == "running" for r in rows) and not self._on_our_ports(rows):
            ports = ", ".join(r.ports for r in rows)
            raise InUse(
                f"this checkout's containers already run on other ports ({ports}): use those "
                f"ports (E2E_PG_PORT / E2E_REDIS_PORT), or run {command('down')} first to move "
                "them"
            )

    def _compose(self, argv: list[str], what: str, timeout: float, images: Images | None) -> None:
        try:
            proc = self.runner(argv, timeout=timeout, env=self.compose_env(images))
        except subprocess.TimeoutExpired:
            raise ServicesUnavailable(
                f"`{what}` did not finish within {timeout:g} s; check `docker ps` and the engine"
            ) from None
        if proc.returncode != 0:
            tail = "\n".join(f"    {line}" for line in proc.stderr.strip().splitlines()[-15:])
            raise ServicesUnavailable(
                f"`{what}` failed (exit {proc.returncode}):\n{tail}\n"
                f"  try: {command('reap')}, then {command('up')} again"
            )

    def take_down(
        self, project: str, rows: list[Container], why: str, state_dir: Path | None
    ) -> list[str]:
        """`compose down` of a project of ours (any checkout's), dead containers' log tails
        first; its state dir goes too when ours. Returns what was removed, and why."""
        report_dead(self.runner, rows, self.say)
        self._compose(self.down_argv(project), "docker compose down", 120, None)
        removed = [f"container {r.name} ({why})" for r in rows]
        return removed + (StateDir(state_dir).remove() if state_dir else [])

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """End a lease; take the containers down when it was the last one. True if they went."""
        return lease_lifecycle.release(self, lease_id, keep=keep)

    def down(self) -> str:
        """`python -m testbed down`: end the user's lease; take the containers down unless a
        live run uses them (dead containers' log tails first)."""
        problem = engine_problem(self.runner)
        if problem is not None:
            raise ServicesUnavailable(f"{problem}; {INSTALL}")
        return lease_lifecycle.down(self)

    def status(self) -> ServiceStatus:
        """Containers of this project, their images, who uses them, and health."""
        problem = engine_problem(self.runner)
        if problem is not None:
            return ServiceStatus(backend=self.name, endpoints=None, problems=(problem,))
        rows = self.containers()
        record = self.store.read() if self.store.dir.is_ours() else Record()
        procs = tuple(f"container {r.name} ({r.image}): {r.status}" for r in rows)
        details = [f"compose project {self.settings.project}", f"state dir {self.state_dir}"]
        eps = self.running(rows)
        use = lease_lifecycle.usage(record, running=eps is not None)
        details += use.users
        return ServiceStatus(
            self.name, eps, procs, tuple(use.problems), tuple(details), use.orphaned
        )

    def reap(self) -> list[str]:
        """Take down compose projects of ours (any checkout's) that nobody uses any more: their
        runs are dead, their containers stopped, or their checkout is gone."""
        if engine_problem(self.runner) is not None:
            return []
        return reap_projects(self)
