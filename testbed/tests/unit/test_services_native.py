"""Native backend pieces that need no server: command lines, state files, reap, down."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from testbed.config import load_settings
from testbed.services import pgdata, procs
from testbed.services.binaries import PgBinaries
from testbed.services.native import NativeBackend, valkey_argv
from testbed.services.ownership import ProcessIdentity, Record, StateDir
from testbed.services.procs import is_alive, spawn, stop


def test_postgres_flags() -> None:
    pg = PgBinaries(Path("/pg/bin"), "16.15", "test")
    argv = pgdata.server_argv(pg, Path("/s/pg/data"), 15433, Path("/s/pg/sock"))
    assert argv[:7] == ["/pg/bin/postgres", "-D", "/s/pg/data", "-p", "15433", "-k", "/s/pg/sock"]
    flags = {argv[i + 1] for i, a in enumerate(argv) if a == "-c"}
    assert {
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "listen_addresses=127.0.0.1",
    } <= flags
    assert int(next(f for f in flags if f.startswith("max_connections=")).split("=")[1]) >= 200
    assert (
        pgdata.database_url(15433, "shop_e2e") == "postgresql://shop_e2e@127.0.0.1:15433/shop_e2e"
    )


def test_valkey_flags() -> None:
    argv = valkey_argv(Path("/v/valkey-server"), 16380, Path("/s/valkey"))
    pairs = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert pairs == {
        "--bind": "127.0.0.1",
        "--port": "16380",
        "--databases": "64",
        "--save": "",
        "--appendonly": "no",
        "--dir": "/s/valkey",
        "--daemonize": "no",
        "--protected-mode": "yes",
        "--set-proc-title": "no",  # keeps the command line its recorded identity names
    }


def _backend(tmp_path: Path) -> NativeBackend:
    settings = load_settings(
        {},
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        project="opsdesk-e2e-unittest",
    )
    return NativeBackend(settings, say=lambda message: None)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_nothing_running_without_state(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    assert b.running() is None
    status = b.status()
    assert not status.healthy
    assert status.processes == ()


def test_down_is_idempotent_and_never_deletes_unmarked_files(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    assert b.down() == "no services of this checkout"
    state = b.state_dir
    (state / "pg" / "data").mkdir(parents=True)
    (state / "postgres.pid").write_text(f"{_dead_pid()}\n")
    (state / "postgres.log").write_text("log")
    (state / "state.json").write_text("{}")
    assert "was not made by testbed: left alone" in b.down()
    b.reap()
    assert sorted(p.name for p in state.iterdir()) == [
        "pg",
        "postgres.log",
        "postgres.pid",
        "state.json",
    ]


def test_reap_removes_a_marked_dir_whose_servers_are_gone(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    StateDir(b.state_dir).prepare(project=b.settings.project)
    (b.state_dir / "valkey").mkdir()
    record = Record(backend="native", project=b.settings.project, checkout=str(tmp_path))
    record.set_process("valkey", ProcessIdentity(_dead_pid(), 1.0, ("valkey-server",)))
    b.store.write(record)
    removed = b.reap()
    assert any(r.endswith("valkey") for r in removed)
    assert not b.state_dir.exists()
    assert b.reap() == []


def test_stop_only_the_recorded_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        ident = ProcessIdentity.of(proc.pid)
        assert ident is not None
        assert stop(ProcessIdentity(proc.pid, ident.started + 5, ident.titles)) is False
        assert is_alive(proc.pid)  # a mismatched identity is never signalled
        assert stop(ident, timeout=5) is False  # SIGTERM was enough
        proc.wait(5)
        assert not is_alive(proc.pid)
    finally:
        proc.kill()
    stubborn = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"
    ident = ProcessIdentity.of(stubborn.pid)
    assert ident is not None
    assert stop(ident, timeout=0.2) is True  # had to SIGKILL
    stubborn.wait(5)
    stubborn.stdout.close()
    assert not is_alive(stubborn.pid)


def test_a_spawned_server_raises_no_resource_warning(tmp_path: Path) -> None:
    """spawn() keeps its Popen until the server is seen gone: a Popen dropped while the process
    ran warned (ResourceWarning), which failed green runs under `filterwarnings = error`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ident = spawn(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            log=tmp_path / "log",
            run_as=None,
            cwd=tmp_path,
            record=noop,
        )
        pid = ident.pid
        gc.collect()
        stop(ident, timeout=5)
        assert not is_alive(pid)  # reaped: no zombie left
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def noop(found: ProcessIdentity) -> None:
    """A spawn() record callback that keeps nothing."""


def _wait_for_title(ident: ProcessIdentity, title: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = ProcessIdentity.of(ident.pid)
        if now is not None and now.titles[0] == title:
            return True
        time.sleep(0.01)
    return False


def test_a_spawned_server_runs_only_after_it_was_recorded(tmp_path: Path) -> None:
    """While record() runs, the process is the gate (the server's command has not started);
    once it returns, the same process (pid, start time) runs the server's command line."""
    seen: list[tuple[ProcessIdentity, ProcessIdentity | None]] = []

    def record(found: ProcessIdentity) -> None:
        seen.append((found, ProcessIdentity.of(found.pid)))

    server = [sys.executable, "-c", "import time; time.sleep(30)"]
    ident = spawn(server, log=tmp_path / "log", run_as=None, cwd=tmp_path, record=record)
    try:
        [(recorded, during)] = seen
        assert recorded == ident
        assert during is not None
        assert during.titles[0].startswith("/bin/sh -c ")  # still the gate, not the server
        assert ident.titles == (during.titles[0], " ".join(server))
        assert _wait_for_title(ident, " ".join(server)), "the server never ran after its record"
        assert ident.alive()  # the server's title is one the record names
    finally:
        stop(ident, timeout=5)
    assert not is_alive(ident.pid)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_a_server_whose_record_failed_never_runs(
    tmp_path: Path, failure: type[BaseException]
) -> None:
    """Ctrl-C (or a failed write) while recording: the gate exits and the command never runs."""
    marker = tmp_path / "ran"
    found: list[ProcessIdentity] = []

    def record(ident: ProcessIdentity) -> None:
        found.append(ident)
        raise failure

    with pytest.raises(failure):
        spawn(
            ["touch", str(marker)], log=tmp_path / "log", run_as=None, cwd=tmp_path, record=record
        )
    gate = procs._CHILDREN[found[0].pid]  # our child: wait for it, no polling
    assert gate.wait(timeout=5) != 0, "the gate ran the command after its spawner gave up"
    assert not marker.exists(), "the command ran although it was never recorded"


SPAWNER = """
import sys
from pathlib import Path
from testbed.services.procs import spawn

def record(found):
    print(found.pid, flush=True)
    sys.stdin.readline()  # killed here: after the spawn, before the record is written

spawn(["touch", sys.argv[1]], log=Path(sys.argv[2]), run_as=None, cwd=Path(sys.argv[3]),
      record=record)
"""


def test_a_spawner_killed_before_recording_leaves_no_server(tmp_path: Path) -> None:
    """SIGKILL between spawn and record (no Python cleanup runs): the gate sees its pipe close
    and exits; the server's command never runs, so nothing runs that no record names."""
    marker = tmp_path / "ran"
    argv = [sys.executable, "-c", SPAWNER, str(marker), str(tmp_path / "log"), str(tmp_path)]
    spawner = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert spawner.stdout is not None
        gate = ProcessIdentity.of(int(spawner.stdout.readline()))
        assert gate is not None
        assert gate.titles[0].startswith("/bin/sh -c ")
        spawner.kill()
        spawner.wait(5)
        # Not our child, and init may leave it a zombie: gone means not alive (is_alive).
        deadline = time.monotonic() + 5
        while is_alive(gate.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not is_alive(gate.pid), "the gate kept waiting after its spawner died"
    finally:
        for pipe in (spawner.stdin, spawner.stdout):
            if pipe is not None:
                pipe.close()
    assert not marker.exists(), "the command ran although its spawner died before recording it"


def test_status_never_advises_stopping_what_a_live_run_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers up but not answering while a live run holds them: status says the run uses them
    and to stop them once it ends, never `down` now (that would stop the run's services)."""
    from testbed.services.ownership import RUN, holder_identity, new_lease

    settings = load_settings(
        {}, backend="native", state_dir=tmp_path / "s", cache_dir=tmp_path / "c"
    )
    backend = NativeBackend(settings)
    record = Record(backend="native")
    record.add_lease(new_lease(RUN, holder_identity()))  # this process: a live run
    me = ProcessIdentity.of(os.getpid())
    monkeypatch.setattr(backend.store, "read", lambda: record)
    monkeypatch.setattr(NativeBackend, "_alive", staticmethod(lambda r: {"postgres": me}))
    monkeypatch.setattr(NativeBackend, "_healthy", lambda self, r: None)
    problems = backend.status().problems
    advice = [p for p in problems if "do not answer" in p]
    assert advice, problems
    assert "uses them: once it ends" in advice[0]
    assert "down`, then" not in advice[0]
    record.set_leases([])  # nobody holds them: now stopping them is the advice
    advice = [p for p in backend.status().problems if "do not answer" in p]
    assert advice == [
        "processes are up but do not answer: `python -m testbed down`, then `python -m testbed up`"
    ]
