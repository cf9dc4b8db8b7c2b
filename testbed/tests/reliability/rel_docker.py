"""A sandbox for the docker backend: own ports and compose project; leftovers on the engine.

The engine must answer (Engine >= 25, Compose v2) with the images present; outside CI the docker
reliability tests skip otherwise, under CI=true they fail (`make reliability` provides them).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass

import pytest
from rel_sandbox import Sandbox

from testbed.config import load_settings
from testbed.services.containers import engine_objects
from testbed.services.docker import unavailable


def require_docker() -> None:
    """Skip (outside CI) or fail (CI=true) unless the docker backend can run here."""
    why = unavailable(load_settings({}, backend="docker"), fetch=True)
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs the docker backend for these tests: {why}")
    pytest.skip(f"docker backend unavailable: {why}")


def container_id(project: str, service: str) -> str | None:
    """The running container of one service of a compose project."""
    argv = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"]
    argv += ["--filter", f"label=com.docker.compose.service={service}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    ids = proc.stdout.split()
    return ids[0] if ids else None


@dataclass
class DockerSandbox(Sandbox):
    """Private ports and compose project; testbed runs in it use E2E_BACKEND=docker."""

    project: str = ""

    @classmethod
    def make(cls, tag: str = "sbx") -> DockerSandbox:
        """A fresh sandbox with its own compose project oprel-<random>."""
        box = Sandbox.make(f"docker-{tag}")
        return cls(box.root, box.pg_port, box.redis_port, project=f"oprel-{uuid.uuid4().hex[:10]}")

    def env(self, **extra: str) -> dict[str, str]:
        """The native sandbox's environment, with the docker backend and our own project."""
        return super().env(E2E_BACKEND="docker", E2E_PROJECT=self.project, **extra)

    def services_up(self) -> bool:
        """Both containers of the project run."""
        return all(container_id(self.project, s) for s in ("postgres-e2e", "redis-e2e"))

    def leftovers(self) -> list[str]:
        """Listeners, our processes, state entries, and the project's engine objects."""
        return super().leftovers() + engine_objects(self.project)

    def destroy(self) -> None:
        """Kill our runs, take the project down on the engine, remove the sandbox."""
        for job in self.runs:
            if job.proc.poll() is None:
                job.kill_all()
        if engine_objects(self.project):
            self.testbed("down", timeout=120)
        super().destroy()
