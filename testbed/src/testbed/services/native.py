"""Native backend: PostgreSQL 16 and Valkey 8 as local processes, state on tmpfs."""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from testbed import guard, report
from testbed.config import Settings, default_state_root
from testbed.errors import HealthTimeout, InUse, ServicesUnavailable
from testbed.report import command
from testbed.services import extensions, health, identity, legacy, pgdata, private
from testbed.services import lease as lease_lifecycle
from testbed.services.backend import ServiceStatus
from testbed.services.binaries import (
    PgBinaries,
    Say,
    ValkeyBinary,
    find_postgres,
    find_valkey,
    make_cache_dir,
)
from testbed.services.credentials import (
    Credentials,
    admin_role,
    redis_url,
    socket_url,
    write_secret,
)
from testbed.services.endpoints import Endpoints
from testbed.services.ownership import Lease as Lease
from testbed.services.ownership import (
    ProcessIdentity,
    Record,
    StateDir,
    Store,
    new_record,
    state_dir_of,
)
from testbed.services.portlock import port_lock
from testbed.services.ports import check_free, is_free
from testbed.services.procs import (
    RunAs,
    blocked_for,
    chown,
    is_alive,
    server_user,
    spawn,
)
from testbed.services.procs import stop as stop_process

REDIS_DATABASES = 64  # one logical database per xdist worker (of every run), with headroom
SERVERS = ("postgres", "valkey")


class _Prepared(NamedTuple):
    pg: PgBinaries
    valkey: ValkeyBinary
    run_as: RunAs | None
    template: Path


def valkey_argv(binary: Path, port: int, workdir: Path, config: Path | None = None) -> list[str]:
    """valkey-server command line: 127.0.0.1 only, 64 databases, no persistence. The password
    is in the config file (0600, the servers' account's): a command line is public in /proc.
    Valkey keeps the command line it was started with (set-proc-title no): the identity recorded
    at spawn, title included, stays the proof that it is ours for as long as it runs."""
    return [
        str(binary),
        *([str(config)] if config is not None else []),
        *("--bind", "127.0.0.1", "--port", str(port), "--databases", str(REDIS_DATABASES)),
        *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        *("--daemonize", "no", "--protected-mode", "yes", "--set-proc-title", "no"),
    ]


class NativeBackend:
    """Local PostgreSQL 16 + Valkey 8 processes, detached, recorded in a marked state dir."""

    name = "native"

    def __init__(self, settings: Settings, *, say: Say = report.say) -> None:
        self.settings = settings
        self.say = say
        self.state_dir = state_dir_of(settings)
        self.store = Store(self.state_dir)
        # Never start (or reap) anything on the developer's ports.
        guard.check_postgres_url(pgdata.database_url(settings.pg_port, settings.pg_role))
        guard.check_redis_url(redis_url(None, settings.redis_port))

    # -- reading the record ---------------------------------------------------------------
    def credentials(self) -> Credentials | None:
        """The running instance's passwords (0600 files in the state dir), if any."""
        return Credentials.load(self.state_dir)

    def _endpoints(self, record: Record, creds: Credentials | None = None) -> Endpoints:
        creds = creds or self.credentials()
        return Endpoints(
            backend=self.name,
            database_url=pgdata.database_url(
                int(record["pg_port"]),
                self.settings.pg_role,
                password=creds.pg_app if creds else None,
            ),
            redis_url=redis_url(creds.valkey if creds else None, int(record["redis_port"])),
            pg_version=str(record.get("pg_version")),
            redis_version=str(record.get("redis_version")),
            redis_databases=REDIS_DATABASES,
        )

    @staticmethod
    def _alive(record: Record) -> dict[str, ProcessIdentity]:
        return {name: p for name, p in record.processes().items() if p.alive()}

    def _healthy(self, record: Record) -> Endpoints | None:
        if len(self._alive(record)) != len(SERVERS) or "redis_version" not in record:
            return None
        creds = self.credentials()
        if creds is None:
            return None  # an older testbed's servers without passwords: started again
        eps = self._endpoints(record, creds)
        try:
            health.wait_postgres(eps.database_url, 2.0)
            health.wait_redis(eps.redis_url, 2.0)
        except ServicesUnavailable:
            return None
        return eps

    def _ports(self) -> tuple[int, int]:
        return self.settings.pg_port, self.settings.redis_port

    def running(self) -> Endpoints | None:
        """Healthy services of ours on the configured ports, or None."""
        record = self.store.read()
        if (record.get("pg_port"), record.get("redis_port")) != self._ports():
            return None
        return self._healthy(record)

    def pids(self) -> dict[str, int]:
        """Pids of the recorded servers that are still the processes we started."""
        return {name: p.pid for name, p in self._alive(self.store.read()).items()}

    def up(self) -> Endpoints:
        """Start (or reuse) the services for the user, as `python -m testbed up` does;
        `down()` stops them."""
        return lease_lifecycle.up(self)

    def logs(self) -> dict[str, Path]:
        """The server logs, by service (shown and kept when a service dies)."""
        return {name: self.state_dir / f"{name}.log" for name in SERVERS}

    # -- lifecycle ------------------------------------------------------------------------
    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Reuse healthy services of ours or start them, and register the lease (see lease.py)."""
        return lease_lifecycle.ensure(self, lease)

    # -- what the shared lifecycle asks of this backend (lease.Runtime) -------------------
    @property
    def what(self) -> str:
        """The instance in a message."""
        return f"this checkout's services (state dir {self.state_dir})"

    def adopt(self) -> None:
        """Under the lock: a state dir an older testbed made becomes a marked one."""
        legacy.adopt(self.state_dir, self.settings.project, self.store, self._endpoints)

    def present(self, record: Record) -> bool:
        """Recorded servers that are still the processes we started."""
        return bool(self._alive(record))

    def answering(self, record: Record) -> Endpoints | None:
        """Endpoints when the recorded servers answer on the configured ports."""
        self._refuse_other_ports(record)
        return self._healthy(record)

    def start(self, leases: list[Lease]) -> Endpoints:
        """Find the binaries, then start both servers under the machine-wide port lock."""
        prepared = self._prepare()  # may download once: outside the machine-wide lock
        # The project lock only covers this checkout; another checkout may be starting servers
        # on the same ports right now. Hold the ports until ours answer.
        s = self.settings
        with port_lock(self._ports(), timeout=2 * s.wait_timeout + 30, say=self.say):
            self._check_port(s.pg_port, "PostgreSQL", "E2E_PG_PORT")
            self._check_port(s.redis_port, "Valkey", "E2E_REDIS_PORT")
            return self._start(prepared, leases)

    def _refuse_other_ports(self, record: Record) -> None:
        ports = (record.get("pg_port"), record.get("redis_port"))
        if ports == self._ports():
            return
        raise InUse(
            f"this checkout's services already run on ports {ports[0]} (PostgreSQL) and "
            f"{ports[1]} (Valkey), not {self._ports()[0]} and {self._ports()[1]}: use those "
            f"ports, or run {command('down')} first to move them (it removes their data)"
        )

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """End a lease; stop the services when it was the last one. True if they stopped."""
        return lease_lifecycle.release(self, lease_id, keep=keep)

    def down(self) -> str:
        """`python -m testbed down`: end the user's lease; stop the services unless a live run
        uses them."""
        return lease_lifecycle.down(self)

    def _check_port(self, port: int, service: str, env: str) -> None:
        if is_free(port):
            return
        other = self._other(port)
        if other is None:
            check_free(port, service=service, env=env)  # someone else's: name them
            return
        raise identity.held_by_other(port, other, self._ports())

    def _other(self, port: int) -> identity.OtherCheckout | None:
        roots = (self.state_dir.parent, default_state_root())
        return identity.other_checkout(port, roots, exclude=self.state_dir)

    def _prepare(self) -> _Prepared:
        s = self.settings
        pg = find_postgres(s, self.say)
        valkey = find_valkey(s, self.say)
        run_as = server_user(say=self.say)
        if run_as is not None:
            # The server account must enter the state dir (0710 to its group, nobody else).
            if private.inside(self.state_dir, private.base_dir()):
                private.base(traverse_gid=run_as.gid)
            if StateDir(self.state_dir).is_ours():
                private.grant_traverse(self.state_dir, run_as.gid)
            self.say(
                f"running the servers as the unprivileged account {run_as.name!r} "
                f"(uid {run_as.uid}), not root"
            )
            for needed in (self.state_dir, s.cache_dir):
                if (blocked := blocked_for(needed, run_as)) is not None:
                    raise ServicesUnavailable(
                        f"the servers run as user {run_as.name!r}, which cannot enter {blocked} "
                        f"(needed for {needed}); choose a directory it can reach (E2E_STATE_DIR "
                        "or E2E_CACHE_DIR, e.g. under /dev/shm) or make it traversable"
                    )
        make_cache_dir(s.cache_dir)
        template = pgdata.ensure_template(s.cache_dir, pg, run_as, self.say, s.pg_role)
        return _Prepared(pg, valkey, run_as, template)

    def _start(self, prepared: _Prepared, leases: list[Lease]) -> Endpoints:
        s = self.settings
        pg, valkey, run_as = prepared.pg, prepared.valkey, prepared.run_as
        StateDir(self.state_dir).prepare(
            project=s.project, traverse_gid=run_as.gid if run_as else None
        )
        pg_dir, vk_dir = self.state_dir / "pg", self.state_dir / "valkey"
        for path in (pg_dir, pg_dir / "sock", vk_dir):
            path.mkdir(mode=0o700)  # the servers' account's alone (mkdir's mode obeys umask)
            path.chmod(0o700)
            chown(path, run_as)
        pgdata.copy_template(prepared.template, pg_dir / "data")
        creds = Credentials.generate()
        creds.save(self.state_dir)
        vk_conf = vk_dir / "valkey.conf"
        write_secret(vk_conf, f"requirepass {creds.valkey}")
        chown(vk_conf, run_as)
        record = new_record(
            self.name,
            s,
            self.state_dir,
            pg_source=pg.source,
            valkey_source=valkey.source,
            user=run_as.name if run_as else None,
        )
        record.set_leases(leases)
        # Written before the servers exist, and with each before it runs: a holder killed
        # meanwhile leaves a record from which reap (or the next run) stops exactly what runs.
        self.store.write(record)
        servers = {
            "valkey": (valkey_argv(valkey.path, s.redis_port, vk_dir, vk_conf), vk_dir),
            "postgres": (
                pgdata.server_argv(pg, pg_dir / "data", s.pg_port, pg_dir / "sock"),
                pg_dir,
            ),
        }
        for name, (argv, cwd) in servers.items():
            lib = pgdata.bundled_library_dir(pg) if name == "postgres" else None
            keep = functools.partial(self._note_server, record, name)
            log = self.state_dir / f"{name}.log"
            spawn(argv, log=log, run_as=run_as, cwd=cwd, library_dir=lib, record=keep)
        procs = record.processes()
        eps = self._endpoints(record, creds)
        with self._lost_bind(s.redis_port, "Valkey", procs["valkey"]):
            record["redis_version"] = health.wait_redis(
                eps.redis_url,
                s.wait_timeout,
                log=self.logs()["valkey"],
                alive=procs["valkey"].alive,
            )
        # Ready means the socket answers the bootstrap role (peer: testbed's OS user only); the
        # template's roles have no password until this instance's are set, so nobody can log in
        # over TCP before that.
        admin_socket = socket_url(admin_role(s.pg_role), pg_dir / "sock", s.pg_port, s.pg_role)
        with self._lost_bind(s.pg_port, "PostgreSQL", procs["postgres"]):
            health.wait_postgres(
                admin_socket,
                s.wait_timeout,
                log=self.logs()["postgres"],
                alive=procs["postgres"].alive,
            )
        pgdata.set_passwords(
            admin_socket, {s.pg_role: creds.pg_app, admin_role(s.pg_role): creds.pg_admin}
        )
        record["pg_version"] = health.wait_postgres(
            eps.database_url, s.wait_timeout, alive=procs["postgres"].alive
        )
        self._verify_ours(eps, pg_dir / "data", procs["valkey"].pid)
        record.update(database_url=eps.database_url, redis_url=eps.redis_url)
        self._refuse_unloadable_extensions(pg, self.admin_url(creds))
        self.store.write(record)
        return self._endpoints(record)

    def _note_server(self, record: Record, name: str, found: ProcessIdentity) -> None:
        """Record a server before it runs (spawn holds it until this returns)."""
        record.set_process(name, found)
        self.store.write(record)
        private.write_atomic(self.state_dir / f"{name}.pid", f"{found.pid}\n")  # for humans only

    @contextlib.contextmanager
    def _lost_bind(self, port: int, service: str, proc: ProcessIdentity) -> Iterator[None]:
        """A server of ours that exits while another process holds its port lost the bind to
        it (a race no lock covers): say whose it is, not "exited before it answered"."""
        try:
            yield
        except HealthTimeout:
            if proc.alive() or is_free(port):
                raise
            seen = "ours exited: another process holds the port"
            raise identity.lost_race(
                port, service, seen, self._other(port), self._ports()
            ) from None

    def admin_url(self, creds: Credentials, database: str | None = None) -> str:
        """The bootstrap superuser's URL (testbed's own use only: never exported)."""
        s = self.settings
        return pgdata.database_url(
            s.pg_port,
            admin_role(s.pg_role),
            database=database or s.pg_role,
            password=creds.pg_admin,
        )

    def _refuse_unloadable_extensions(self, pg: PgBinaries, admin_url: str) -> None:
        """Create the extensions asked for; say which bundled ones cannot load here; make
        CREATE EXTENSION say the fix for those and for the ones that need a superuser (event
        triggers, which only the bootstrap superuser may install)."""
        library_dir = pgdata.bundled_library_dir(pg)
        missing = extensions.unloadable(pg.bindir, self.settings.cache_dir, library_dir)
        if missing:
            self.say(extensions.describe(missing))
        base = admin_url.rsplit("/", 1)[0]
        # template1: scratch databases inherit the triggers. The one for extensions that need a
        # superuser is in the template already; the loader's depends on this machine.
        others = [f"{base}/{db}" for db in ("template1", "postgres")] if missing else []
        extensions.install_refusals(
            [admin_url, *others],
            missing,
            create=self.settings.pg_extensions,
            superuser_refusal=False,
        )

    def _verify_ours(self, eps: Endpoints, pg_data: Path, vk_pid: int) -> None:
        """Raise PortConflict if a server that passed its health gate is not the one we spawned."""
        creds = self.credentials()
        # data_directory is readable by superusers only: ask as the bootstrap role.
        admin = replace(eps, database_url=self.admin_url(creds)) if creds else eps
        identity.verify_ours(admin, pg_data, vk_pid, self._ports(), self._other)

    def stop(self, record: Record, *, quiet: bool, state_dir: Path | None = None) -> list[str]:
        """Stop the recorded servers that are still the processes we started; remove the state
        dir if it is ours. Anything else (a reused pid, a forged file) is left alone."""
        state_dir = state_dir or self.state_dir
        removed: list[str] = []
        for name, proc in record.processes().items():
            if not proc.alive():
                if is_alive(proc.pid):
                    self.say(
                        f"left pid {proc.pid} alone: it is not the {name} we started "
                        "(its start time or command line differ)"
                    )
                continue
            # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients.
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            killed = stop_process(proc, sig, timeout=10.0)
            removed.append(f"{name} pid {proc.pid}" + (" (SIGKILL)" if killed else ""))
            if not quiet:
                self.say(f"stopped {name} (pid {proc.pid})" + (" with SIGKILL" if killed else ""))
        if not any(p.alive() for p in record.processes().values()):
            released = pgdata.release_shared_memory(state_dir / "pg" / "data")
            removed += [released] if released else []
            removed += StateDir(state_dir).remove()
        return removed

    def status(self) -> ServiceStatus:
        """Backend, versions, ports, processes, leases and health of the native services."""
        record = self.store.read()
        alive = self._alive(record)
        use = lease_lifecycle.usage(record, running=bool(alive))
        procs = tuple(f"{name} pid {p.pid}" for name, p in alive.items())
        details = [f"state dir {self.state_dir}"]
        problems = []
        if record:
            details += [
                f"ports: PostgreSQL {record.get('pg_port')}, Valkey {record.get('redis_port')}",
                f"postgres binaries: {record.get('pg_source')}",
                f"valkey binary:     {record.get('valkey_source')}",
            ]
            if record.get("user"):
                details.append(f"servers run as the account {record['user']!r} (not root)")
            details += use.users
        elif self.state_dir.exists() and not StateDir(self.state_dir).is_ours():
            problems.append(f"{self.state_dir} was not made by testbed: left alone")
        if (other := StateDir(self.state_dir).project()) not in (None, self.settings.project):
            problems.append(
                f"{self.state_dir} belongs to project {other}: its services are not this "
                "project's; give this project its own E2E_STATE_DIR"
            )
        for name, p in record.processes().items():
            if name not in alive:
                problems.append(f"{name} (pid {p.pid}) is no longer the process we started")
        eps = self._healthy(record) if alive else None
        runs = [x for x in record.leases() if x.alive() and x.kind != "user"]
        if eps is None and alive and runs:
            # Never advise stopping what a live run holds: its breaker reports a dead service.
            problems.append(
                f"processes are up but do not answer; {runs[0].describe()} uses them: once it "
                f"ends, {command('down')} and {command('up')}"
            )
        elif eps is None and alive:
            problems.append(
                f"processes are up but do not answer: {command('down')}, then {command('up')}"
            )
        problems += use.problems
        return ServiceStatus(self.name, eps, procs, tuple(problems), tuple(details), use.orphaned)

    # -- reaping --------------------------------------------------------------------------
    def reap(self) -> list[str]:
        """Remove what dead runs left: this checkout's services nobody uses any more, and other
        checkouts' next to it whose runs died or whose checkout was deleted."""
        from testbed.services.reaping import reap_native

        return reap_native(self)

    def alive(self, record: Record) -> dict[str, ProcessIdentity]:
        """The recorded servers that are still the processes we started."""
        return self._alive(record)
