"""pytest plugin for bench.fastloop: records when the first test body starts.

Loaded with `-p bench.first_test` (the repo root on PYTHONPATH). Writes the wall-clock time
(time.time()) at which the first test's call phase began, one line per process (xdist workers
each write theirs), to the file named by BENCH_FIRST_TEST_FILE.
"""

from __future__ import annotations

import os
import time
from typing import Any

_seen = False


def pytest_runtest_call(item: Any) -> None:
    """Append this process's first test start time, once."""
    global _seen
    if _seen:
        return
    _seen = True
    path = os.environ.get("BENCH_FIRST_TEST_FILE")
    if path:
        with open(path, "a") as out:
            out.write(f"{time.time():.6f} {item.nodeid}\n")
