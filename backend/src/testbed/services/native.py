"""Native backend: PostgreSQL 16 and Valkey 8 as local processes, state on tmpfs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from testbed import guard, health
from testbed.binaries import (
    PgBinaries,
    Say,
    ValkeyBinary,
    find_postgres,
    find_valkey,
    make_cache_dir,
)
from testbed.config import STATE_DIR_GLOB, Settings, default_state_root
from testbed.errors import ServicesUnavailable
from testbed.services import Endpoints, ServiceStatus, extensions, identity, pgdata
from testbed.services import owner as _owner
from testbed.services.portlock import port_lock
from testbed.services.ports import check_free, is_free
from testbed.services.procs import (
    RunAs,
    chown,
    is_ours,
    read_pid,
    server_user,
    spawn,
    stop,
)

REDIS_DATABASES = 64  # one logical database per xdist worker, with headroom
STATE = "state.json"
# Everything we create inside a state dir; down/reap delete only these, never the dir's other
# contents, so a mistaken E2E_STATE_DIR cannot wipe someone's files.
_OURS = (
    *("pg", "valkey", "postgres.pid", "valkey.pid", "postgres.log", "valkey.log"),
    *(STATE, f"{STATE}.tmp"),
)
_SERVERS = {"postgres": "postgres", "valkey": "valkey-server"}  # pid file → cmdline marker


class _Prepared(NamedTuple):
    pg: PgBinaries
    valkey: ValkeyBinary
    run_as: RunAs | None
    template: Path


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def valkey_argv(binary: Path, port: int, workdir: Path) -> list[str]:
    """valkey-server command line: 127.0.0.1 only, 64 databases, no persistence."""
    return [
        str(binary),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--databases",
        str(REDIS_DATABASES),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


class NativeBackend:
    """Local PostgreSQL 16 + Valkey 8 processes, detached, with pid files in the state dir."""

    name = "native"

    def __init__(self, settings: Settings, *, say: Say = _stderr) -> None:
        self.settings = settings
        self.say = say
        self.state_dir = settings.state_dir
        # Never start (or reap) anything on the developer's ports.
        guard.check_postgres_url(pgdata.database_url(settings.pg_port, settings.pg_role))
        guard.check_redis_url(f"redis://127.0.0.1:{settings.redis_port}/0")

    # -- state -----------------------------------------------------------------------------
    @contextmanager
    def _lock(self, project: str | None = None, *, wait: bool = True) -> Iterator[bool]:
        # The lock lives in the cache so `down` can delete the whole state dir while holding it.
        locks = self.settings.cache_dir / "locks"
        make_cache_dir(self.settings.cache_dir)
        locks.mkdir(exist_ok=True)
        with (locks / f"{project or self.settings.project}.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False  # someone else is busy with that project: leave it alone
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _state(self) -> dict[str, Any] | None:
        return _read_state(self.state_dir) or None

    def _pids(self, state_dir: Path | None = None) -> dict[str, int]:
        base = state_dir or self.state_dir
        found = {}
        for name in _SERVERS:
            pid = read_pid(base / f"{name}.pid")
            if pid is not None:
                found[name] = pid
        return found

    def _live_pids(self, state_dir: Path | None = None) -> dict[str, int]:
        return {n: p for n, p in self._pids(state_dir).items() if is_ours(p, _SERVERS[n])}

    def _endpoints(self, state: dict[str, Any]) -> Endpoints:
        return Endpoints(
            backend=self.name,
            database_url=pgdata.database_url(int(state["pg_port"]), self.settings.pg_role),
            redis_url=f"redis://127.0.0.1:{int(state['redis_port'])}/0",
            pg_version=str(state["pg_version"]),
            redis_version=str(state["redis_version"]),
            redis_databases=REDIS_DATABASES,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def running(self) -> Endpoints | None:
        """Healthy services of ours on the configured ports, or None."""
        state = self._state()
        if state is None or len(self._live_pids()) != len(_SERVERS):
            return None
        if (state.get("pg_port"), state.get("redis_port")) != (
            self.settings.pg_port,
            self.settings.redis_port,
        ):
            return None
        eps = self._endpoints(state)
        try:
            health.wait_postgres(eps.database_url, 2.0)
            health.wait_redis(eps.redis_url, 2.0)
        except ServicesUnavailable:
            return None
        return eps

    def up(self) -> Endpoints:
        """Start PostgreSQL and Valkey (or reuse healthy ones of ours) and wait for health."""
        return self.ensure()[0]

    def ensure(self, *, owner: _owner.Owner | None = None) -> tuple[Endpoints, bool]:
        """Like up(); the bool says whether this call started (or adopted) them, decided under
        the lock. owner: who they belong to (default: this process, as a test run)."""
        record = owner if owner is not None else _owner.run_owner()
        with self._lock():
            found = self.running()
            if found is not None:
                return found, self._adopt(record)
            self._stop_and_clean(self.state_dir, quiet=True)  # partial or unhealthy leftovers
            s = self.settings
            try:
                prepared = self._prepare()  # may download once: outside the machine-wide lock
                # The project lock only covers this checkout; another checkout may be starting
                # servers on the same ports right now. Hold the ports until ours answer.
                with port_lock(
                    (s.pg_port, s.redis_port),
                    timeout=2 * s.wait_timeout + 30,  # its health gates, plus stopping on failure
                    say=self.say,
                ):
                    self._check_port(s.pg_port, "PostgreSQL", "E2E_PG_PORT")
                    self._check_port(s.redis_port, "Valkey", "E2E_REDIS_PORT")
                    eps = self._start(prepared, record)
            except BaseException:
                self._stop_and_clean(self.state_dir, quiet=True)
                raise
        return eps, True

    def _adopt(self, record: _owner.Owner) -> bool:
        """Take over healthy services whose run was killed; True if this caller now owns them."""
        # Adopt rather than restart: the servers are healthy and verified ours, the harness
        # reaps a dead run's schemas at start anyway, and a restart only costs time. Services
        # of the user or of a live run are reused without taking them over.
        state = self._state() or {}
        dead = _owner.dead_run(state.get("owner"))
        if dead is None:
            return False
        state["owner"] = record
        self._write_state(state)
        self.say(f"adopted services left by a killed run (pid {dead})")
        return True

    def _write_state(self, state: dict[str, Any]) -> None:
        # Atomic: reap and status read it without the lock.
        tmp = self.state_dir / f"{STATE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_dir / STATE)

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

    def _ports(self) -> tuple[int, int]:
        return self.settings.pg_port, self.settings.redis_port

    def _prepare(self) -> _Prepared:
        s = self.settings
        pg = find_postgres(s, self.say)
        valkey = find_valkey(s, self.say)
        run_as = server_user()
        if run_as is not None:
            self.say(
                f"running the servers as user {run_as.name!r} (uid {run_as.uid}): "
                "PostgreSQL refuses to run as root"
            )
        template = pgdata.ensure_template(s.cache_dir, pg, run_as, self.say, s.pg_role)
        return _Prepared(pg, valkey, run_as, template)

    def _start(self, prepared: _Prepared, record: _owner.Owner) -> Endpoints:
        s = self.settings
        pg, valkey, run_as = prepared.pg, prepared.valkey, prepared.run_as
        pg_dir, vk_dir = self._make_dirs(run_as)
        pgdata.copy_template(prepared.template, pg_dir / "data")
        state = {
            "backend": self.name,
            "project": s.project,
            "checkout": str(s.checkout),
            "pg_port": s.pg_port,
            "redis_port": s.redis_port,
            "pg_version": pg.version,
            "redis_version": valkey.version,
            "pg_source": pg.source,
            "valkey_source": valkey.source,
            "user": run_as.name if run_as else None,
            "started_at": time.time(),
            "owner": record,
        }
        # Written before the servers exist: an owner killed while they start leaves a record.
        self._write_state(state)
        vk_pid = spawn(
            valkey_argv(valkey.path, s.redis_port, vk_dir),
            log=self.state_dir / "valkey.log",
            run_as=run_as,
            cwd=vk_dir,
        )
        (self.state_dir / "valkey.pid").write_text(f"{vk_pid}\n")
        pg_pid = spawn(
            pgdata.server_argv(pg, pg_dir / "data", s.pg_port, pg_dir / "sock"),
            log=self.state_dir / "postgres.log",
            run_as=run_as,
            cwd=pg_dir,
            library_dir=pgdata.bundled_library_dir(pg),
        )
        (self.state_dir / "postgres.pid").write_text(f"{pg_pid}\n")
        eps = self._endpoints(state)
        redis_version = health.wait_redis(
            eps.redis_url,
            s.wait_timeout,
            log=self.state_dir / "valkey.log",
            alive=lambda: is_ours(vk_pid, "valkey-server"),
        )
        pg_version = health.wait_postgres(
            eps.database_url,
            s.wait_timeout,
            log=self.state_dir / "postgres.log",
            alive=lambda: is_ours(pg_pid, "postgres"),
        )
        self._verify_ours(eps, pg_dir / "data", vk_pid)
        self._refuse_unloadable_extensions(pg, eps.database_url)
        state.update(pg_version=pg_version, redis_version=redis_version)
        self._write_state(state)
        return self._endpoints(state)

    def _refuse_unloadable_extensions(self, pg: PgBinaries, database_url: str) -> None:
        """Say which bundled extensions cannot load here; make CREATE EXTENSION say the fix."""
        library_dir = pgdata.bundled_library_dir(pg)
        missing = extensions.unloadable(pg.bindir, self.settings.cache_dir, library_dir)
        if missing:
            self.say(extensions.describe(missing))
            port = self.settings.pg_port
            others = [
                pgdata.database_url(port, self.settings.pg_role, database=db)
                for db in ("template1", "postgres")
            ]
            extensions.install_refusals([database_url, *others], missing)

    def _verify_ours(self, eps: Endpoints, pg_data: Path, vk_pid: int) -> None:
        """Raise PortConflict if a server that passed its health gate is not the one we spawned."""
        # Same role, database and trust auth everywhere: a server that lost the bind race
        # would otherwise pass its health gate through the winner's server.
        s = self.settings
        seen_dir = identity.postgres_data_dir(eps.database_url)
        if os.path.normpath(seen_dir) != os.path.normpath(pg_data):
            other_dir = identity.state_dir_of_data_dir(seen_dir)
            other = self._other(s.pg_port) or (
                identity.OtherCheckout(other_dir) if other_dir else None
            )
            seen = f"data directory {seen_dir}"
            raise identity.lost_race(s.pg_port, "PostgreSQL", seen, other, self._ports())
        seen_pid = identity.valkey_pid(eps.redis_url)
        if seen_pid != vk_pid:
            other = self._other(s.redis_port)
            seen = f"pid {seen_pid}, ours is {vk_pid}"
            raise identity.lost_race(s.redis_port, "Valkey", seen, other, self._ports())

    def _make_dirs(self, run_as: RunAs | None) -> tuple[Path, Path]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)  # the server account must traverse it
        pg_dir, vk_dir = self.state_dir / "pg", self.state_dir / "valkey"
        for path in (pg_dir, pg_dir / "sock", vk_dir):
            path.mkdir(mode=0o755)
            chown(path, run_as)
        return pg_dir, vk_dir

    def _stop_and_clean(self, state_dir: Path, *, quiet: bool = False) -> list[str]:
        removed: list[str] = []
        pids = self._pids(state_dir)
        for name, pid in pids.items():
            if is_ours(pid, _SERVERS[name]):
                # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients.
                sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
                killed = stop(pid, sig, timeout=10.0)
                removed.append(f"{name} pid {pid}" + (" (SIGKILL)" if killed else ""))
                if not quiet:
                    self.say(f"stopped {name} (pid {pid})" + (" with SIGKILL" if killed else ""))
        if not self._live_pids(state_dir):
            released = pgdata.release_shared_memory(state_dir / "pg" / "data")
            removed += [released] if released else []
        for entry in _OURS:
            path = state_dir / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(str(path))
        with contextlib.suppress(OSError):
            state_dir.rmdir()  # only when empty: never delete files we did not make
        return removed

    def down(self) -> None:
        """Stop our servers (bounded) and remove their data dirs, logs and pid files."""
        with self._lock():
            if not self.state_dir.exists():
                return
            self._stop_and_clean(self.state_dir)

    def status(self) -> ServiceStatus:
        """Backend, versions, ports, pids and health of the native services."""
        state = self._state() or {}
        live = self._live_pids()
        procs = tuple(f"{name} pid {pid}" for name, pid in live.items())
        details = [f"state dir {self.state_dir}"]
        if state:
            details += [
                f"postgres binaries: {state.get('pg_source')}",
                f"valkey binary:     {state.get('valkey_source')}",
            ]
            if state.get("user"):
                details.append(f"servers run as user {state['user']!r} (not root)")
            details.append(f"owner: {_owner.describe(state.get('owner'))}")
        problems = []
        dead = set(self._pids()) - set(live)
        if dead:
            problems.append(f"stale pid file(s) for {', '.join(sorted(dead))}: run `make reap`")
        eps = self.running()
        if eps is None and live:
            problems.append("processes are up but do not answer: `make down && make up`")
        orphaned = bool(live) and (dead_run := _owner.dead_run(state.get("owner"))) is not None
        if orphaned:
            problems.append(f"the run that started them (pid {dead_run}) is gone: `make reap`")
        return ServiceStatus(
            backend=self.name,
            endpoints=eps,
            processes=procs,
            details=tuple(details),
            problems=tuple(problems),
            orphaned=orphaned,
        )

    def reap(self) -> list[str]:
        """Remove state of dead runs: this checkout's, and other checkouts' next to it."""
        removed: list[str] = []
        candidates = [self.state_dir]
        root = self.state_dir.parent
        if root.is_dir():
            candidates += sorted(p for p in root.glob(STATE_DIR_GLOB) if p != self.state_dir)
        for state_dir in candidates:
            mine = state_dir == self.state_dir
            with self._lock(None if mine else state_dir.name, wait=mine) as locked:
                if locked and state_dir.is_dir():
                    removed += self._reap_dir(state_dir, mine)
        return removed

    def _reap_dir(self, state_dir: Path, mine: bool) -> list[str]:
        pids, live = self._pids(state_dir), self._live_pids(state_dir)
        if not live and any((state_dir / e).exists() for e in _OURS):
            return self._stop_and_clean(state_dir, quiet=True)
        if mine and pids and len(live) < len(_SERVERS):
            # Half a service set is useless: take the survivor down too.
            return self._stop_and_clean(state_dir, quiet=True)
        if live and (dead := _owner.dead_run(_read_state(state_dir).get("owner"))) is not None:
            # A SIGKILLed run cannot stop its (detached) servers; nobody else will.
            removed = self._stop_and_clean(state_dir, quiet=True)
            return [f"orphans of a dead run (pid {dead}) in {state_dir}", *removed]
        return []


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
