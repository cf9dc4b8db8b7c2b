"""What every comparison receives: where the services are, how hard to try, where to put files."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Context:
    """The running services and run options shared by every comparison module."""

    database_url: str
    redis_url: str
    pg_version: str
    redis_version: str
    repo: Path
    workdir: Path  # scratch space for generated suites; removed at the end
    quick: bool = False
    settings: Any = None  # testbed.config.Settings when testbed started the services
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def backend_dir(self) -> Path:
        """backend/ of the checkout (pytest rootdir of the real suite)."""
        return self.repo / "backend"

    @property
    def python(self) -> str:
        """The venv interpreter running the bench (subprocesses use the same one)."""
        return sys.executable

    @property
    def suite_python(self) -> str:
        """The test venv's interpreter (E2E_VENV, as make sets it): runs of the E2E suite use it,
        so they load the plugins a user's run loads, not the bench venv's extra ones."""
        venv = os.environ.get("E2E_VENV")
        if venv and (Path(venv) / "bin" / "python").exists():
            return str(Path(venv) / "bin" / "python")
        return sys.executable


def log(message: str) -> None:
    """Progress line on stderr, so stdout stays the results table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)
