"""A fake `docker` for the docker backend's unit tests: answers by argv prefix, records calls."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.config import load_settings
from testbed.services.docker import DockerBackend
from testbed.services.images import LOCAL_PG, LOCAL_REDIS

Answer = tuple[int, str, str] | Callable[[list[str]], tuple[int, str, str]]
NO_DAEMON = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is it running?"
VERSION = ("docker", "version")
COMPOSE_VERSION = ("docker", "compose", "version")
INSPECT = ("docker", "image", "inspect")
PS = ("docker", "ps")
COMPOSE_F = ("docker", "compose", "-f")


class Runner:
    """Fake subprocess.run: answers by argv prefix (longest first), records every call."""

    def __init__(self, answers: dict[tuple[str, ...], Answer]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str] | None] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        self.envs.append(kwargs.get("env"))
        for prefix in sorted(self.answers, key=len, reverse=True):
            if tuple(argv[: len(prefix)]) == prefix:
                answer = self.answers[prefix]
                rc, out, err = answer(argv) if callable(answer) else answer
                return subprocess.CompletedProcess(argv, rc, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")

    def ran(self, *prefix: str) -> list[list[str]]:
        """The calls that start with prefix."""
        return [c for c in self.calls if tuple(c[: len(prefix)]) == prefix]

    def compose(self) -> list[str]:
        """The compose subcommands run (up, down, ...), in order."""
        return [c[6] for c in self.ran(*COMPOSE_F)]


def engine_ok(images: tuple[str, ...] = (LOCAL_PG, LOCAL_REDIS)) -> dict[tuple[str, ...], Answer]:
    """An Engine 26 with Compose 2.26 that has these images and cannot pull."""
    return {
        VERSION: (0, "26.1.5+dfsg1\n", ""),
        COMPOSE_VERSION: (0, "2.26.1\n", ""),
        INSPECT: lambda argv: (0, "sha256:1", "") if argv[-1] in images else (1, "", "No such"),
        ("docker", "pull"): (1, "", "dial tcp: lookup registry-1.docker.io: no such host"),
    }


def row(service: str, port: int, *, state: str = "running", **kw: str) -> str:
    """One `docker ps` line in the backend's format."""
    target = 5432 if service == "postgres-e2e" else 6379
    fields = {
        "id": f"id-{service}",
        "name": f"{kw.get('project', 'p')}-{service}-1",
        "state": state,
        "status": "Up 3 seconds (healthy)" if state == "running" else "Exited (137) 1 second ago",
        "image": "img",
        "project": kw.get("project", "p"),
        "service": service,
        "checkout": kw.get("checkout", "/src/other"),
        "state_dir": kw.get("state_dir", ""),
        "ports": f"127.0.0.1:{port}->{target}/tcp" if state == "running" else "",
        "mount_ns": kw.get("mount_ns", ""),
    }
    # Labels come JSON-quoted, as PS_FORMAT asks.
    labels = ("project", "service", "checkout", "state_dir", "mount_ns")
    return "\t".join(json.dumps(v) if k in labels else v for k, v in fields.items())


def pair(pg: int = 5433, redis: int = 6380, **kw: str) -> str:
    """Both containers of a project, as `docker ps` lists them."""
    return row("postgres-e2e", pg, **kw) + "\n" + row("redis-e2e", redis, **kw)


def backend(runner: Runner, tmp: Path | None = None, **env: str) -> DockerBackend:
    """A docker backend of project "shop" on the fake engine; with tmp, the checkout is tmp
    and state and cache live under it."""
    base = {"E2E_PROJECT_NAME": "shop", **env}
    checkout = Path("/src/opsdesk")
    if tmp is not None:
        base |= {"E2E_STATE_DIR": str(tmp / "state"), "E2E_CACHE_DIR": str(tmp / "cache")}
        checkout = tmp
    settings = load_settings(base, checkout=checkout)
    return DockerBackend(settings, runner=runner, compose=["docker", "compose"], say=lambda m: None)


def fake_path(directory: Path, *commands: str) -> str:
    """A PATH holding only stand-ins for these commands, so what the machine has installed
    never decides a unit test; a stand-in that is actually run fails loudly (the fake Runner
    should have answered)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in commands:
        stub = directory / name
        stub.write_text(f"#!/bin/sh\necho 'unit test ran the real {name}' >&2\nexit 97\n")
        stub.chmod(0o755)
    return str(directory)
