"""The run's one owner of shared resources: the controller brings services up once and hands
workers a RunInfo; it reaps dead runs' schemas, and tears down only what it started."""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import guard, services
from testbed.config import Settings
from testbed.errors import ServicesUnavailable, TestbedError
from testbed.isolation import delete_run_keys, run_redis
from testbed.schema import RunLock
from testbed.schema import reap as reap_stale_schemas
from testbed.services import Endpoints
from testbed.workers import new_run_id, new_seed

E2E_DIR = "e2e"
SKIP_PREFIX = "E2E services unavailable"


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

    The plugin is active in every pytest run of the project (entry point), so `make unit`
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
    _lock: RunLock | None = None

    def __post_init__(self) -> None:
        seed = self.settings.seed
        self.info = RunInfo(
            run_id=new_run_id(),
            seed=seed if seed is not None else new_seed(),
            seed_given=seed is not None,
            require_services=self.settings.require_services,
        )

    def start(self) -> None:
        """Bring services up once (or reuse healthy ones); never raises: outcome goes in info."""
        if self.info.attempted:
            return
        self.info.attempted = True
        began = time.perf_counter()
        try:
            endpoints, self.started = services.ensure_up(self.settings)
        except ServicesUnavailable as exc:
            reason = f"{SKIP_PREFIX}: {guard.redact(str(exc)).splitlines()[0]}"
            if self.settings.require_services:
                self.info.error = (
                    f"{reason} (required: CI=true or --e2e-require-services; "
                    "fix the services or run `make up` to see the full error)"
                )
            else:
                self.info.skip_reason = reason + " (run `make up` to see why; CI would fail)"
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
        self.info.endpoints = endpoints
        try:
            self._lock = RunLock(endpoints.database_url, self.info.run_id)
            self.reaped = reap_stale_schemas(endpoints.database_url, current_run=self.info.run_id)
        except Exception as exc:
            self.info.error = f"E2E database setup failed: {guard.redact(str(exc))}"

    def finish(self) -> None:
        """Drop what this run left (schemas of crashed workers, run keys), then services
        if this run started them and --e2e-keep is off."""
        eps = self.info.endpoints
        try:
            if eps is not None and self._lock is not None:
                self._lock.release()
                self._lock = None
                # Our lock is gone, so our own leftover schemas now count as a dead run's.
                reap_stale_schemas(eps.database_url, current_run="")
                client = run_redis(eps.redis_url)
                try:
                    delete_run_keys(client, f"e2e:{self.info.run_id}:")
                finally:
                    client.close()
        finally:
            if self.started and not self.settings.keep:
                began = time.perf_counter()
                services.choose(self.settings).down()
                self.teardown_seconds = time.perf_counter() - began

    # Reporting ----------------------------------------------------------------------------
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
        """Lines for the terminal summary: services and per-worker setup timings."""
        lines: list[str] = []
        if self.services_seconds is not None:
            how = "started" if self.started else "reused"
            lines.append(f"services: {how} in {self.services_seconds:.2f}s")
        if self.teardown_seconds is not None:
            lines.append(f"services: stopped in {self.teardown_seconds:.2f}s")
        elif self.started:
            lines.append("services: left running (--e2e-keep); `make down` stops them")
        if self.worker_setup:
            per = ", ".join(f"{w} {s:.2f}s" for w, s in sorted(self.worker_setup.items()))
            lines.append(f"worker setup (schema + tables): {per}")
        lines.append(f"seed: {self.info.seed} (replay: --e2e-seed={self.info.seed})")
        return lines
