"""Who am I in this run: run id, xdist worker, and the names and numbers derived from them."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

from testbed.isolation.schema import worker_schema

CONTROLLER = "master"


def new_run_id() -> str:
    """A short random run id: 8 hex chars, shared by every worker of one run."""
    return secrets.token_hex(4)


def new_seed() -> int:
    """A random run seed; 48 bits keeps it short to type while making reuse across runs unlikely."""
    return secrets.randbits(48)


@dataclass(frozen=True)
class Worker:
    """One process's identity in a run and everything named after it."""

    run_id: str
    worker_id: str  # "gw0".."gwN" under xdist, "master" otherwise
    count: int  # number of workers in the run (1 without xdist)
    allocated_db: int | None = None  # the Valkey database the controller allocated for it

    def __post_init__(self) -> None:
        worker_schema(self.run_id, self.worker_id)  # checks both ids and the length

    @property
    def index(self) -> int:
        """0-based worker number: gw3 -> 3, the single process -> 0."""
        digits = re.sub(r"\D", "", self.worker_id)
        return int(digits) if digits else 0

    @property
    def schema(self) -> str:
        """The worker's PostgreSQL schema, e.g. e2e_1a2b3c4d_gw0."""
        return worker_schema(self.run_id, self.worker_id)

    @property
    def redis_db(self) -> int:
        """The worker's own Valkey logical database (allocated for the run, so two runs on one
        Valkey never share one); 0 stays free for run-wide keys."""
        return self.allocated_db if self.allocated_db is not None else 1 + self.index

    @property
    def prefix(self) -> str:
        """Key and channel prefix: pub/sub channels are global across databases, so keys
        and channels are namespaced as well."""
        return f"e2e:{self.run_id}:{self.worker_id}:"

    @property
    def run_prefix(self) -> str:
        """Prefix for run-wide keys (database 0) that every worker of this run may read."""
        return f"e2e:{self.run_id}:"


def worker_from_input(
    workerinput: dict[str, Any] | None, *, run_id: str, redis_db: int | None = None
) -> Worker:
    """Build the Worker from xdist's workerinput (on a worker) or for the single process."""
    if workerinput is None:
        return Worker(run_id=run_id, worker_id=CONTROLLER, count=1, allocated_db=redis_db)
    count = int(workerinput.get("workercount", os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
    worker_id = str(workerinput["workerid"])
    return Worker(run_id=run_id, worker_id=worker_id, count=count, allocated_db=redis_db)
