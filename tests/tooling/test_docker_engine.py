"""scripts/docker_engine.py stops only the dockerd it can prove it started, and trusts no record
it did not write (the daemon is faked by a `sleep`; no engine is needed)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from testbed.services.ownership import ProcessIdentity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The tool, its record and log in a private dir of this test's own."""
    spec = importlib.util.spec_from_file_location(
        "docker_engine", ROOT / "scripts" / "docker_engine.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Not the machine's: a wrapped run (make test under CI=true) holds its users' lock while we
    # run. Set after the import: the tool reads E2E_ENGINE_DIR when it uses a path.
    monkeypatch.setenv("E2E_ENGINE_DIR", str(tmp_path / "engine"))
    monkeypatch.setattr(module, "STOP_GRACE", 5.0)
    return module


@pytest.fixture
def daemon() -> Iterator[subprocess.Popen[bytes]]:
    """A long-running process standing in for dockerd."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def identity(pid: int) -> ProcessIdentity:
    found = ProcessIdentity.of(pid)
    assert found is not None
    return found


def gone_identity() -> ProcessIdentity:
    """The identity of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    found = identity(proc.pid)
    proc.wait()
    return found


def record(engine: ModuleType, dockerd: ProcessIdentity, owner: ProcessIdentity) -> None:
    engine.engine_dir().mkdir(mode=0o700, exist_ok=True)
    engine.record_path().write_text(
        json.dumps({"dockerd": dockerd.to_json(), "owner": owner.to_json()})
    )


def test_stop_ends_the_recorded_daemon(engine: ModuleType, daemon: subprocess.Popen[bytes]) -> None:
    record(engine, identity(daemon.pid), identity(os.getpid()))
    engine.stop_daemon()
    assert daemon.wait(timeout=10) is not None
    assert not engine.record_path().exists()


def test_a_reused_pid_is_never_signalled(
    engine: ModuleType, daemon: subprocess.Popen[bytes]
) -> None:
    """Same pid, another start time: not the daemon we started; left alone, record dropped."""
    real = identity(daemon.pid)
    record(engine, ProcessIdentity(real.pid, real.started - 100, real.titles), real)
    engine.stop_daemon()
    assert daemon.poll() is None
    assert not engine.record_path().exists()


@pytest.mark.parametrize("text", ["", "{", "[]", '{"dockerd": {"pid": 1}}', '{"dockerd": 7}'])
def test_a_malformed_record_is_not_trusted(engine: ModuleType, text: str) -> None:
    engine.engine_dir().mkdir(mode=0o700)
    engine.record_path().write_text(text)
    assert engine.read_record() is None


def test_a_linked_record_is_not_followed(
    engine: ModuleType, daemon: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """A record that is a symlink (planted by someone else) is never read."""
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(
        json.dumps({"dockerd": identity(daemon.pid).to_json(), "owner": gone_identity().to_json()})
    )
    engine.engine_dir().mkdir(mode=0o700)
    engine.record_path().symlink_to(elsewhere)
    engine.stop_daemon()
    assert daemon.poll() is None


def test_a_killed_runs_daemon_is_adopted_and_a_live_runs_is_not(
    engine: ModuleType, daemon: subprocess.Popen[bytes]
) -> None:
    record(engine, identity(daemon.pid), identity(os.getppid()))
    assert not engine.adopt_orphan()  # its owner (our parent) still runs
    record(engine, identity(daemon.pid), gone_identity())
    assert engine.adopt_orphan()
    adopted = engine.read_record()
    assert adopted is not None
    assert adopted[1].pid == os.getpid()


def test_adoption_is_decided_on_one_read_of_the_record(
    engine: ModuleType, daemon: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record read says a live run owns its daemon; a later read (another run rewrote it)
    names another, orphaned one. The run adopts nothing: it judged the first and must not
    write that daemon down as adopted on the strength of the second."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reads = iter(
            [
                (identity(daemon.pid), identity(os.getppid())),  # its owner still runs
                (identity(other.pid), gone_identity()),
            ]
        )
        read = []
        monkeypatch.setattr(engine, "read_record", lambda: read.append(1) or next(reads))
        assert not engine.adopt_orphan()
        assert len(read) == 1
        assert not engine.record_path().exists()  # nothing written
    finally:
        other.kill()
        other.wait()


def test_the_paths_follow_the_engine_dir_when_used(
    engine: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """E2E_ENGINE_DIR set after the tool was imported (a test, a caller's own dir) is the one
    its record, log and users' lock go to."""
    moved = tmp_path / "moved"
    monkeypatch.setenv("E2E_ENGINE_DIR", str(moved))
    assert engine.record_path() == moved / "dockerd.json"
    assert engine.log_path() == moved / "dockerd.log"
    assert engine.users_path() == moved / "users.lock"
    engine.write_record(identity(os.getpid()))
    assert (moved / "dockerd.json").is_file()
    os.close(engine.use_engine())
    assert (moved / "users.lock").is_file()
    monkeypatch.setenv("E2E_CACHE_DIR", str(tmp_path / "cache"))
    assert engine.cache_dir() == tmp_path / "cache"


def test_a_shared_record_directory_is_refused(engine: ModuleType) -> None:
    engine.engine_dir().mkdir(mode=0o755)
    engine.engine_dir().chmod(0o777)
    with pytest.raises(SystemExit, match=r"refusing the engine record directory .* may write"):
        engine.private_dir()


def test_a_0755_record_directory_of_ours_is_kept(engine: ModuleType) -> None:
    """An earlier version made /run/testbed-engine 0755; CI then refused to start at all."""
    engine.engine_dir().mkdir(mode=0o755)
    engine.engine_dir().chmod(0o755)
    engine.private_dir()
    engine.write_record(identity(os.getpid()))
    assert engine.read_record() is not None


def test_a_record_directory_behind_a_link_is_refused(engine: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    engine.engine_dir().symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match="symbolic link"):
        engine.private_dir()


def test_outside_ci_nothing_is_installed_or_started(
    engine: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "problem", lambda: "no Docker engine answers (test)")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(engine, "install", lambda packages: pytest.fail("installed"))
    monkeypatch.setattr(engine, "start_daemon", lambda: pytest.fail("started"))
    with pytest.raises(SystemExit, match="E2E_BACKEND=native"):
        engine.ensure()


def test_a_record_in_a_shared_directory_is_never_acted_on(
    engine: ModuleType, daemon: subprocess.Popen[bytes]
) -> None:
    """Anyone who may write the record's directory (E2E_ENGINE_DIR in /tmp, made by another
    user first) can name any live process there, its pid, start time and command line being
    public: `stop` (as root) would have ended it. Such a record is refused, as writing is."""
    record(engine, identity(daemon.pid), gone_identity())
    engine.engine_dir().chmod(0o777)
    with pytest.raises(SystemExit, match=r"refusing the engine record directory .* may write"):
        engine.stop_daemon()
    assert daemon.poll() is None


@contextlib.contextmanager
def another_run(engine: ModuleType) -> Iterator[None]:
    """A second run using the engine, as `run` marks it: a shared lock on USERS."""
    engine.engine_dir().mkdir(mode=0o700, exist_ok=True)
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(engine.users_path())!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH)\nprint('using', flush=True)\nsys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        assert proc.stdout.readline() == b"using\n"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_the_daemon_stops_with_the_last_run_that_uses_it(
    engine: ModuleType, daemon: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CI runs on one machine: the one that started dockerd ended first and stopped it under
    the other, whose docker tests then failed. Now the last run out stops it."""
    monkeypatch.setattr(engine.signal, "signal", lambda *_: None)  # run's SIGTERM handler
    record(engine, identity(daemon.pid), identity(os.getpid()))  # this run started it
    monkeypatch.setattr(engine, "ensure", lambda: True)
    with another_run(engine):
        assert engine.main(["run", "--", sys.executable, "-c", "pass"]) == 0
        assert daemon.poll() is None  # left to the run that still uses it
        assert engine.main(["stop"]) == 1  # nor does `stop` take it from that run
        assert daemon.poll() is None
    record(engine, identity(daemon.pid), gone_identity())  # its starter has exited since
    monkeypatch.setattr(engine, "ensure", lambda: False)  # the other run reused it
    assert engine.main(["run", "--", sys.executable, "-c", "pass"]) == 0
    assert daemon.wait(timeout=10) is not None
    assert not engine.record_path().exists()


def test_a_run_never_stops_a_daemon_whose_starter_still_runs(
    engine: ModuleType, daemon: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine.signal, "signal", lambda *_: None)
    record(engine, identity(daemon.pid), identity(os.getppid()))  # a live run started it
    monkeypatch.setattr(engine, "ensure", lambda: False)
    assert engine.main(["run", "--", sys.executable, "-c", "pass"]) == 0
    assert daemon.poll() is None
