"""A private E2E sandbox: own ports and state dir, runs in their own process group, leftovers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.config import state_filesystem

REPO = Path(__file__).resolve().parents[3]
BACKEND = REPO / "backend"
VENV_BIN = Path(sys.executable).parent
PYTEST = VENV_BIN / "pytest"
PYTHON = VENV_BIN / "python"
E2E_SUITE = BACKEND / "tests" / "e2e"
# A small slice of the real E2E suite for `make reliability` (make test runs the whole suite).
# (testbed's own isolation checks moved to testbed/tests/e2e, on another app's configuration.)
FAST_E2E = (E2E_SUITE / "test_crm.py",)
PAYLOADS = Path(__file__).resolve().parent / "payloads"
# Our sandboxes live under one parent per sandbox so testbed's reap (which looks at siblings
# named opsdesk-e2e-*) never touches a developer's or the main run's state dir.
# The filesystem testbed itself would put state on: /dev/shm only where it is big enough and
# allows exec (not in a default container, where a case's pinned binaries there could not run).
SHM = state_filesystem()
DEV_PORTS = (5432, 6379, 5433, 6380)


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()
PORTS = range(20000, 32000)


def worker_ports() -> range:
    """This xdist worker's slice of PORTS (all of it without xdist): a port one worker hands
    out is never another's, however their checks and their servers' binds interleave."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    span = len(PORTS) // count
    return range(PORTS.start + index * span, PORTS.start + (index + 1) * span)


def free_port() -> int:
    """A free port below the ephemeral range (a client socket in TIME_WAIT there blocks bind)."""
    rng = random.SystemRandom()
    ports = worker_ports()
    for _ in range(500):
        port = rng.choice(ports)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


# `testbed reap` also takes down what dead runs left in the user's base, any checkout's. A test
# that leaves something there for its own reap to find (a deleted checkout's services) holds
# this lock exclusively; every other reap of this suite, in any xdist worker or concurrent
# run, holds it shared, so none takes that test's leftovers first.
REAP_LOCK = Path(tempfile.gettempdir()) / f"oprel-reap-{os.geteuid()}.lock"
_reap_exclusive = False  # this process holds REAP_LOCK exclusively (its own reaps go ahead)


@contextlib.contextmanager
def reap_lock(*, exclusive: bool = False) -> Iterator[None]:
    """Hold REAP_LOCK, shared (a reap) or exclusive (a test whose leftovers its reap must find)."""
    global _reap_exclusive
    if _reap_exclusive:
        yield
        return
    fd = os.open(REAP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        _reap_exclusive = exclusive
        yield
    finally:
        _reap_exclusive = False
        os.close(fd)


def clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus every E2E_* setting, CI and service URLs (a neutral start)."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.startswith(("E2E_", "PYTEST_", "HYPOTHESIS_")) or key in (
            "CI",
            "DATABASE_URL",
            "REDIS_URL",
            "PYTEST_ADDOPTS",
            "N",
            "SHARD",
        ):
            env.pop(key)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Run:
    """A child process started in its own process group (like a terminal job)."""

    argv: Sequence[str]
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.proc.pid

    def signal_group(self, sig: int) -> None:
        """Send sig to the whole process group (what Ctrl-C in a terminal does)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def signal_pid(self, sig: int) -> None:
        """Send sig to the child alone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_all(self) -> None:
        """SIGKILL the process group (last resort so a failing test leaves no runaway job)."""
        self.signal_group(signal.SIGKILL)
        self.wait(10)

    def output(self) -> str:
        """Everything the child wrote to stdout and stderr so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def group_alive(self) -> list[int]:
        """Pids still alive in the child's process group (xdist workers after SIGKILL...)."""
        alive = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields_ = stat.rsplit(")", 1)[-1].split()
            if fields_[0] not in ("Z", "X") and int(fields_[2]) == self.proc.pid:
                alive.append(int(entry.name))
        return alive


@dataclass
class Sandbox:
    """Private ports and state dir for one trial; never the dev or the default E2E ports."""

    root: Path
    pg_port: int
    redis_port: int
    runs: list[Run] = field(default_factory=list)
    # Project names given to `python -m testbed` (E2E_PROJECT_NAME): the teardown's `down`
    # must name the project whose state dir it is, or it is refused and the servers stay.
    projects: set[str] = field(default_factory=set)

    @classmethod
    def make(cls, tag: str = "sbx") -> Sandbox:
        """A fresh sandbox under /dev/shm/oprel-<tag>-<random>."""
        root = SHM / f"oprel-{tag}-{uuid.uuid4().hex[:8]}"
        root.mkdir(mode=0o755)
        pg, rd = free_port(), free_port()
        assert pg not in DEV_PORTS
        assert rd not in DEV_PORTS
        return cls(root=root, pg_port=pg, redis_port=rd)

    @property
    def state_dir(self) -> Path:
        """The native backend's state dir (pid files, logs, data dirs)."""
        return self.root / "opsdesk-e2e-sbx"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment that points testbed at this sandbox's ports and state dir."""
        env = clean_env()
        env.update(
            E2E_BACKEND="native",
            E2E_PG_PORT=str(self.pg_port),
            E2E_REDIS_PORT=str(self.redis_port),
            E2E_STATE_DIR=str(self.state_dir),
            E2E_WAIT_TIMEOUT="60",
            # The payloads are opsdesk suites in a temp dir, out of reach of its pytest ini.
            E2E_PROJECT_NAME="opsdesk",
            E2E_SCHEMA_SETUP="opsdesk.db:create_tables",
        )
        env.update(extra)
        return env

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
        name: str = "run",
    ) -> Run:
        """Start argv in its own session/process group, output to a log in the sandbox."""
        log = self.root / f"{name}-{len(self.runs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env or self.env()),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run = Run(argv=argv, proc=proc, log=log)
        self.runs.append(run)
        return run

    def run(
        self, argv: Sequence[str], *, timeout: float = 120, **kwargs: object
    ) -> tuple[int, str]:
        """Run argv to completion (bounded); return (exit code, output)."""
        job = self.start(argv, **kwargs)  # type: ignore[arg-type]
        code = job.wait(timeout)
        if code is None:
            job.kill_all()
            raise AssertionError(f"{' '.join(argv)} did not finish in {timeout} s:\n{job.output()}")
        return code, job.output()

    def e2e_argv(
        self, *extra: str, workers: int = 2, suite: Sequence[Path] = (E2E_SUITE,)
    ) -> list[str]:
        """pytest over the E2E suite (or a slice) with xdist, in random order."""
        return [
            str(PYTEST),
            *map(str, suite),
            "-n",
            str(workers),
            "-q",
            "-p",
            "no:cacheprovider",
            *extra,
        ]

    def testbed(self, *args: str, timeout: float = 90, **env: str) -> tuple[int, str]:
        """`python -m testbed ...` against this sandbox (a reap under the shared reap_lock)."""
        if "E2E_PROJECT_NAME" in env:
            self.projects.add(env["E2E_PROJECT_NAME"])
        with reap_lock() if args[:1] == ("reap",) else contextlib.nullcontext():
            return self.run(
                [str(PYTHON), "-m", "testbed", *args],
                env=self.env(**env),
                timeout=timeout,
                name="testbed",
            )

    def urls(self, **env: str) -> dict[str, str]:
        """The running services' URLs as `python -m testbed env` prints them (passwords
        included: the services require them)."""
        code, out = self.testbed("env", **env)
        assert code == 0, out
        found = {}
        for line in out.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = shlex.split(value)[0]
        return found

    def database_url(self, database: str = "opsdesk_e2e") -> str:
        """The E2E role's URL (with its password) to one database of the sandbox's server."""
        return self.urls()["E2E_DATABASE_URL"].rsplit("/", 1)[0] + f"/{database}"

    def services_up(self) -> bool:
        """Both native servers have pid files."""
        return len(server_pids(self.state_dir)) == 2

    def leftovers(self) -> list[str]:
        """What of ours is still there: listeners, server processes, state entries."""
        found = []
        for port in (self.pg_port, self.redis_port):
            if not port_is_free(port):
                found.append(f"a listener on port {port}")
        for pid, cwd, cmd in self.processes():
            found.append(f"process {pid} in {cwd}: {cmd[:150]}")
        if self.state_dir.exists():
            found += [f"state entry {p}" for p in sorted(self.state_dir.iterdir())]
        return found

    def processes(self) -> list[tuple[int, str, str]]:
        """(pid, cwd, command line) of every process working in the sandbox: its root in the
        command line, the environment or the working directory."""
        marker = str(self.root)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            try:  # a server that rewrites its title (or environ) still works in our dirs
                cwd = os.readlink(entry / "cwd")
            except OSError:
                cwd = ""
            if marker in cmd or marker.encode() in environ or cwd.startswith(marker):
                found.append((int(entry.name), cwd, cmd))
        return found

    def wait_no_leftovers(self, timeout: float = 15) -> list[str]:
        """leftovers(), polled until empty or timeout (servers take a moment to exit)."""
        deadline = time.monotonic() + timeout
        while (found := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return found

    def destroy(self) -> None:
        """Kill our runs, take the sandbox's services down, and remove it (test teardown)."""
        for job in self.runs:
            if job.proc.poll() is None:
                job.kill_all()
        for project in (None, *sorted(self.projects)):
            if self.state_dir.exists():
                if project:
                    self.testbed("down", timeout=60, E2E_PROJECT_NAME=project)
                else:
                    self.testbed("down", timeout=60)
        # What a test left that no `down` could stop (its state was gone, or never written):
        # processes working in this sandbox only, which nothing else on the machine uses.
        for pid, _, _ in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def server_pids(state_dir: Path) -> dict[str, int]:
    """{'postgres': pid, 'valkey': pid} from the sandbox's pid files."""
    pids = {}
    for name in ("postgres", "valkey"):
        try:
            pids[name] = int((state_dir / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def wait_for(predicate: object, timeout: float, step: float = 0.05) -> bool:
    """Poll predicate() until true or timeout; return its last value as a bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(predicate())  # type: ignore[operator]


def payload_suite(tmp: Path, name: str = "steady_suite.py") -> Path:
    """Copy a payload to <tmp>/e2e/test_<name> (testbed starts services for an e2e dir)."""
    target = tmp / "e2e"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PAYLOADS / name, target / f"test_{name.removesuffix('_suite.py')}.py")
    return target


def start_payload(sandbox: Sandbox, tmp_path: Path, tests: int = 16) -> tuple[Run, Path]:
    """Start the steady payload suite (-n 2) in the sandbox; return once 4 tests have run."""
    progress = tmp_path / "progress"
    progress.mkdir(parents=True)
    suite = payload_suite(tmp_path)
    env = sandbox.env(REL_PROGRESS=str(progress), REL_TESTS=str(tests), REL_SLEEP="0.2")
    run = sandbox.start(
        [str(PYTEST), str(suite), "-n", "2", "-p", "no:randomly", "-q", "--timeout", "600"],
        env=env,
        cwd=tmp_path,
        name="payload",
    )
    assert wait_for(lambda: len(list(progress.iterdir())) >= 4, 120), run.output()
    return run, progress
