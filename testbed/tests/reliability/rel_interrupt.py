"""Interrupt trials: start an E2E run, signal it at a random point, check nothing of ours stays."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from rel_sandbox import REPO, Run, Sandbox, wait_for

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}
EXIT_WITHIN = 60.0  # seconds a signalled run may take to finish its teardown


@dataclass
class Trial:
    """One interrupt: what was sent where and when, and what was left afterwards."""

    signal: str
    target: str  # "group" (Ctrl-C style) or "controller" (the pytest controller pid only)
    delay: float
    services_up: bool = False
    exit_code: int | None = None
    exit_seconds: float | None = None
    leftovers_after_exit: list[str] = field(default_factory=list)
    leftovers_after_reap: list[str] = field(default_factory=list)
    reap_output: str = ""
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        """The run ended in time and reap left nothing of ours."""
        return self.exit_code is not None and not self.leftovers_after_reap

    def describe(self) -> str:
        """One paragraph for a failure message."""
        return (
            f"{self.signal} to {self.target} after {self.delay:.2f}s "
            f"(services up: {self.services_up}): exit {self.exit_code} "
            f"in {self.exit_seconds}s; left after exit: {self.leftovers_after_exit}; "
            f"left after `testbed reap`: {self.leftovers_after_reap}\n"
            f"reap said: {self.reap_output.strip()}\n--- run output tail ---\n"
            f"{self.output_tail}"
        )


def controller_pid(run: Run) -> int:
    """The pytest controller in the run's process group (make's child, or the run itself)."""
    for pid in sorted(run.group_alive()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"pytest") for part in cmd[:2]) or b"pytest" in cmd[1:3]:
            return pid
    return run.pid


def make_e2e_argv(workers: int = 2) -> list[str] | None:
    """`make e2e N=<workers>` if the repo has scripts/e2e.sh yet, else None."""
    if not (REPO / "scripts" / "e2e.sh").is_file():
        return None
    return ["make", "-s", "-C", str(REPO), "e2e", f"N={workers}"]


def interrupt(
    box: Sandbox,
    argv: list[str],
    sig_name: str,
    target: str,
    delay: float,
    *,
    after_services: bool = False,
) -> Trial:
    """Run argv in the sandbox, send the signal after delay (counted from the start, or from
    the moment both servers have pid files), then reap and list what is left."""
    trial = Trial(sig_name, target, delay)
    run = box.start(argv, name=f"{sig_name}-{target}")
    if after_services:
        wait_for(lambda: box.services_up() or run.proc.poll() is not None, 60)
    time.sleep(delay)
    trial.services_up = box.services_up()
    sig = SIGNALS[sig_name]
    sent = time.monotonic()
    if target == "group":
        run.signal_group(sig)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller_pid(run), sig)
    trial.exit_code = run.wait(EXIT_WITHIN)
    trial.exit_seconds = round(time.monotonic() - sent, 2)
    if trial.exit_code is None:
        run.kill_all()
    # The rest of the group finishes too: orphaned xdist workers notice their parent is gone;
    # after a signal to make's pid alone (pytest not started yet) the script runs to its end.
    deadline = time.monotonic() + 180
    while run.group_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    # What the run left at its end (servers take a moment to exit; a SIGKILL leaves them).
    trial.leftovers_after_exit = box.wait_no_leftovers(0.5)
    _, trial.reap_output = box.testbed("reap")
    trial.leftovers_after_reap = box.wait_no_leftovers(10)
    trial.output_tail = run.output()[-2500:]
    return trial
