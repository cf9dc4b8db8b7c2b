"""The run's one owner of shared resources: the controller takes a lease on the services (which
starts them or reuses them), hands workers a RunInfo with their Valkey database, watches the
services (breaker), reaps dead runs' schemas, and ends its lease at the end."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import guard
from testbed.config import Settings
from testbed.errors import ServicesUnavailable, TestbedError, UnsafePath
from testbed.isolation.schema import RunLock, worker_schema
from testbed.isolation.schema import reap as reap_stale_schemas
from testbed.isolation.sessions import delete_run_keys, run_redis
from testbed.isolation.workers import CONTROLLER, new_run_id, new_seed
from testbed.report import command
from testbed.run import allocation, breaker
from testbed.services import lifecycle, manifest
from testbed.services.endpoints import Endpoints
from testbed.services.health import log_tail
from testbed.services.lifecycle import Hold

E2E_DIR = "e2e"
SKIP_PREFIX = "E2E services unavailable"
KEPT_LOG_RUNS = 9  # server logs of the last runs whose services died (plus this one)


@dataclass
class RunInfo:
    """What every worker of a run shares; travels to xdist workers as plain data."""

    run_id: str
    seed: int
    seed_given: bool = False
    endpoints: Endpoints | None = None
    skip_reason: str | None = None  # services unavailable, outside CI: E2E tests skip
    error: str | None = None  # anything else, or unavailable under CI: E2E tests error
    attempted: bool = False
    require_services: bool = False
    unavailable: bool = False  # the error is "services unavailable" (make e2e: exit 3)
    run_dir: str | None = None  # the breaker's trip file lives here
    redis_db: int | None = None  # this process's Valkey database, allocated for the run

    def to_input(self) -> dict[str, Any]:
        """A dict of primitives for node.workerinput."""
        data = dataclasses.asdict(self)
        return data

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> RunInfo:
        """Rebuild on a worker from node.workerinput."""
        data = dict(data)
        eps = data.pop("endpoints")
        return cls(endpoints=Endpoints(**eps) if eps else None, **data)


def wants_services(args: Sequence[str], rootdir: Path, names: Sequence[str] = (E2E_DIR,)) -> bool:
    """True when a collection argument is, is inside, or contains a directory named e2e
    (or one of `names`: the e2e_dirs setting).

    The plugin is active in every pytest run of the project (entry point), so a unit-test run
    must not start PostgreSQL: services are the E2E suite's, and only its run starts them.
    """
    for arg in args:
        path = Path(arg.split("::", 1)[0])
        path = path if path.is_absolute() else (Path.cwd() / path)
        if set(names) & set(path.resolve().parts):
            return True
        if path.is_dir() and any(p.is_dir() for name in names for p in path.rglob(name)):
            return True
    return False


def allocate_redis_db(info: RunInfo, worker: str) -> int:
    """A Valkey database of the run's own for one worker (through database 0); the same one
    when asked again for that worker."""
    eps = info.endpoints
    assert eps is not None
    client = run_redis(eps.redis_url)
    try:
        return allocation.allocate(client, info.run_id, worker, eps.redis_databases)
    finally:
        client.close()


def reap_runs(eps: Endpoints, current_run: str = "") -> list[str]:
    """Drop dead runs' schemas (`python -m testbed reap`, and each run). Dead runs' Valkey
    databases need nothing: their claims expire (allocation.TTL_S), whatever project or
    database made them."""
    return [f"schema {s}" for s in reap_stale_schemas(eps.database_url, current_run=current_run)]


@dataclass
class Controller:
    """Runs in the xdist controller, or in the single process without xdist."""

    settings: Settings
    info: RunInfo = field(init=False)
    started: bool = False
    services_seconds: float | None = None
    teardown_seconds: float | None = None
    reaped: list[str] = field(default_factory=list)
    worker_setup: dict[str, float] = field(default_factory=dict)
    worker_setup_source: dict[str, str] = field(default_factory=dict)  # "built" / "restored"
    problems: list[str] = field(default_factory=list)
    stopped: bool = False
    finished: bool = False
    distributed: bool = False  # xdist workers run the tests (each gets its own database)
    _hold: Hold | None = None
    _lock: RunLock | None = None
    _monitor: breaker.MonitorProcess | None = None

    def __post_init__(self) -> None:
        seed = self.settings.seed
        self.info = RunInfo(
            run_id=new_run_id(),
            seed=seed if seed is not None else new_seed(),
            seed_given=seed is not None,
            require_services=self.settings.require_services,
        )

    def start(self) -> None:
        """Take a lease on the services (start or reuse them); never raises: outcome in info."""
        if self.info.attempted:
            return
        self.info.attempted = True
        began = time.perf_counter()
        try:
            self._hold = lifecycle.acquire(self.settings)
            self.started = self._hold.started
        except ServicesUnavailable as exc:
            self.info.unavailable = True
            reason = f"{SKIP_PREFIX}: {guard.redact(str(exc)).splitlines()[0]}"
            if self.settings.require_services:
                self.info.error = (
                    f"{reason} (required: CI=true or --e2e-require-services; "
                    f"fix the services or run {command('up')} to see the full error)"
                )
            else:
                self.info.skip_reason = f"{reason} (run {command('up')} to see why; CI would fail)"
            return
        except TestbedError as exc:
            self.info.error = f"E2E services failed: {guard.redact(str(exc))}"
            return
        except Exception:  # a bug is an error with its traceback, never a skip
            self.info.error = "E2E services failed unexpectedly:\n" + guard.redact(
                traceback.format_exc()
            )
            return
        finally:
            self.services_seconds = time.perf_counter() - began
        endpoints = self._hold.endpoints
        self.info.endpoints = endpoints
        try:
            self._lock = RunLock(endpoints.database_url, self.info.run_id)
            self.reaped = reap_runs(endpoints, current_run=self.info.run_id)
            # Distributed, the controller runs no tests; it needs a database only for a
            # conftest that reads the Redis URL when the controller imports it.
            if not self.distributed or self.settings.redis_url_env:
                self.info.redis_db = self.allocate_redis_db(CONTROLLER)
        except Exception as exc:
            self.info.error = f"E2E database setup failed: {guard.redact(str(exc))}"
            return
        run_dir = Path(tempfile.mkdtemp(prefix=f"testbed-run-{self.info.run_id}-"))
        self.info.run_dir = str(run_dir)
        watched = [
            breaker.Service.from_url("PostgreSQL", endpoints.database_url),
            breaker.Service.from_url("Valkey", endpoints.redis_url),
        ]
        try:
            self._monitor = breaker.MonitorProcess(
                watched, run_dir, redis_url=endpoints.redis_url, run_id=self.info.run_id
            )
        except OSError as exc:  # without the monitor no fail-fast: E2E tests error, not hang
            self.info.error = f"E2E service monitor could not start: {exc}"

    def allocate_redis_db(self, worker: str) -> int:
        """A Valkey database of this run's own for one worker (through database 0)."""
        return allocate_redis_db(self.info, worker)

    @property
    def trip(self) -> breaker.Trip | None:
        """Why the breaker tripped, if it did."""
        return breaker.read_trip(self.info.run_dir)

    def finish(self) -> None:
        """Drop what this run left (schemas, run keys, Valkey databases), then end the lease:
        the services stop if nobody else uses them (and --e2e-keep is off). Never raises:
        what failed goes into the summary."""
        if self.finished:
            return
        self.finished = True
        if self._monitor is not None:
            self._monitor.stop()
        trip = self.trip
        eps = self.info.endpoints
        if eps is not None and self._lock is not None:
            self._lock.release()
            self._lock = None
            if trip is None:
                self._step("cleaning up the run's schemas and keys", self._cleanup, eps)
        if trip is not None or (eps is not None and self._hold is not None and not self._answers()):
            self._keep_logs(trip)
        if self._hold is not None:
            began = time.perf_counter()
            hold, self._hold = self._hold, None
            self.stopped = bool(
                self._step("ending the lease", hold.release, keep=self.settings.keep)
            )
            if self.stopped:
                self.teardown_seconds = time.perf_counter() - began
        if self.info.run_dir:
            shutil.rmtree(self.info.run_dir, ignore_errors=True)

    def _cleanup(self, eps: Endpoints) -> None:
        # Our lock is gone, so our own leftover schemas now count as a dead run's.
        reap_stale_schemas(eps.database_url, current_run="")
        client = run_redis(eps.redis_url)
        try:
            delete_run_keys(client, f"e2e:{self.info.run_id}:")
            allocation.release(client, self.info.run_id)
        finally:
            client.close()

    def _answers(self) -> bool:
        eps = self.info.endpoints
        assert eps is not None
        for name, url in (("PostgreSQL", eps.database_url), ("Valkey", eps.redis_url)):
            try:
                breaker.probe(breaker.Service.from_url(name, url))
            except Exception:  # whatever a test left patched: it did not answer us
                return False
        return True

    def _keep_logs(self, trip: breaker.Trip | None) -> None:
        assert self._hold is not None
        logs = self._hold.backend.logs()
        if trip is not None:
            self.problems.append(f"breaker: {trip.message()}")
        kept_logs = self.settings.cache_dir / "logs"
        try:  # logs are copied (and old ones removed) as us: never in a cache others can write
            manifest.check_cache(self.settings.cache_dir)
        except UnsafePath as exc:
            self.problems.append(f"server logs not kept: {exc}")
            return
        for old in sorted(kept_logs.glob("*-*"))[:-KEPT_LOG_RUNS]:  # oldest first, by name
            shutil.rmtree(old, ignore_errors=True)
        keep = kept_logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.info.run_id}"
        for name, path in logs.items():
            if not path.is_file():
                continue
            try:
                keep.mkdir(parents=True, exist_ok=True)
                kept = shutil.copy2(path, keep / path.name)
            except OSError as exc:
                self.problems.append(f"{name} log {path} could not be kept: {exc.strerror}")
                continue
            shown = trip is None or trip.service.lower().startswith(name[:5])
            if shown:
                self.problems.append(f"{name} log tail:\n{log_tail(Path(kept))}")
            self.problems.append(f"{name} log kept at {kept}")

    def _step(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            first = guard.redact(str(exc)).strip().splitlines()
            self.problems.append(
                f"{what} failed: {type(exc).__name__}: {first[0] if first else ''}"
            )
            return None

    # Reporting ----------------------------------------------------------------------------
    def _schemas_line(self) -> str:
        """One line naming every worker schema this run made, with its setup time."""
        made = []
        for worker, seconds in sorted(self.worker_setup.items()):
            name = worker_schema(self.info.run_id, CONTROLLER if worker == "main" else worker)
            restored = " restored" if self.worker_setup_source.get(worker) == "restored" else ""
            made.append(f"{name} {seconds:.2f}s{restored}")
        return f"schemas made (schema + tables, dropped at the end): {', '.join(made)}"

    def header(self) -> list[str]:
        """Lines for pytest's header: backend, versions, URLs (redacted), seed, timing."""
        info = self.info
        seed = f"seed {info.seed} (replay: --e2e-seed={info.seed})"
        lines = [f"testbed: run {info.run_id}, {seed}"]
        if not info.attempted:
            lines.append("testbed: services not started (no e2e directory among the test paths)")
            return lines
        took = f"{self.services_seconds:.2f}s" if self.services_seconds is not None else "?"
        eps = info.endpoints
        if eps is not None:
            how = "started by this run" if self.started else "reused (already running)"
            lines.append(
                f"testbed: backend {eps.backend}: PostgreSQL {eps.pg_version} at "
                f"{guard.redact(eps.database_url)}, Valkey {eps.redis_version} at "
                f"{guard.redact(eps.redis_url)} ({eps.redis_databases} dbs); "
                f"services ready in {took}, {how}"
            )
        if info.skip_reason:
            lines.append(f"testbed: E2E tests will be SKIPPED: {info.skip_reason}")
        if info.error:
            lines.append(f"testbed: E2E tests will ERROR: {info.error.splitlines()[0]}")
        if self.reaped:
            lines.append(f"testbed: reaped {len(self.reaped)} stale schema(s) of dead runs")
        return lines

    def summary(self) -> list[str]:
        """Lines for the terminal summary: services, the schemas made and their setup times."""
        lines: list[str] = []
        if self.services_seconds is not None:
            how = "started" if self.started else "reused"
            lines.append(f"services: {how} in {self.services_seconds:.2f}s")
        if self.teardown_seconds is not None:
            lines.append(f"services: stopped in {self.teardown_seconds:.2f}s")
        elif self.started and self.settings.keep:
            lines.append(f"services: left running (--e2e-keep); {command('down')} stops them")
        elif self.started:
            lines.append(f"services: left running: another run or {command('up')} still uses them")
        lines += self.problems
        if self.worker_setup:
            lines.append(self._schemas_line())
        lines.append(f"seed: {self.info.seed} (replay: --e2e-seed={self.info.seed})")
        return lines
