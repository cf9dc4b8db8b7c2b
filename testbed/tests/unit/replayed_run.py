"""A replayed run: `pytest -p testbed.plugin --e2e-seed=REPLAY_SEED` on one test that dumps
what its e2e_data builds, in a process of its own (test_data_seed.py checks it)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The seed the other data tests use (test_data_seed.SEED).
REPLAY_SEED = 1234
# The snapshot is test_data_seed's own, so both sides build the same rows the same way.
REPLAY_TEST = """
import json, os
from test_data_seed import _snapshot

def test_dump(e2e_data):
    with open(os.environ["DUMP_TO"], "w") as fh:
        json.dump(_snapshot(e2e_data), fh, sort_keys=True)
"""


@dataclass
class ReplayedRun:
    """The run's process and where its test dumps the data."""

    proc: subprocess.Popen[str]
    dump: Path

    @classmethod
    def start(cls, root: Path) -> ReplayedRun:
        """Start the run in the empty directory root (its HOME too, as pytester's runs)."""
        here = Path(__file__).parent
        (root / "conftest.py").write_text(
            f"import sys\nsys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]\n"
        )
        (root / "test_dump.py").write_text(REPLAY_TEST)
        dump = root / "dump.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
        # Only the testbed plugin: the other entry-point plugins would just slow the run down.
        env |= {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "DUMP_TO": str(dump), "HOME": str(root)}
        # Its own cache: the run keeps its data pools there, not in the user's cache dir.
        env["E2E_CACHE_DIR"] = str(root / "cache")
        # Plain output, which the test reads: CI's FORCE_COLOR=1 would colour the summary line
        # (PY_COLORS wins over it in pytest).
        env["PY_COLORS"] = "0"
        argv = [sys.executable, "-m", "pytest", "-p", "testbed.plugin", "-p", "no:cacheprovider"]
        argv += [f"--e2e-seed={REPLAY_SEED}", f"--basetemp={root / 'basetemp'}", "test_dump.py"]
        proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return cls(proc, dump)

    def result(self) -> tuple[int, str]:
        """Wait for the run: (exit status, its output)."""
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, out

    def stop(self) -> None:
        """Kill the run if it is still going (its test was deselected or failed early)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
