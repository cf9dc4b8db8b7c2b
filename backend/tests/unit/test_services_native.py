"""Native backend pieces that need no server: command lines, state files, reap, down."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testbed.binaries import PgBinaries
from testbed.config import load_settings
from testbed.services import pgdata
from testbed.services.native import NativeBackend, valkey_argv
from testbed.services.procs import is_alive, is_ours, read_pid, stop


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


def test_down_is_idempotent_and_removes_only_our_files(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    b.down()  # nothing there: no error
    state = b.state_dir
    (state / "pg" / "data").mkdir(parents=True)
    (state / "postgres.pid").write_text(f"{_dead_pid()}\n")
    (state / "postgres.log").write_text("log")
    (state / "precious.txt").write_text("not ours")
    b.down()
    b.down()
    assert sorted(p.name for p in state.iterdir()) == ["precious.txt"]


def test_reap_removes_state_of_dead_runs(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    state = b.state_dir
    (state / "valkey").mkdir(parents=True)
    (state / "valkey.pid").write_text(f"{_dead_pid()}\n")
    (state / "postgres.pid").write_text(f"{_dead_pid()}\n")
    (state / "state.json").write_text("{}")
    removed = b.reap()
    assert any(r.endswith("valkey.pid") for r in removed)
    assert not state.exists()
    assert b.reap() == []


def test_status_reports_stale_pid_files(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    b.state_dir.mkdir(parents=True)
    (b.state_dir / "postgres.pid").write_text(f"{_dead_pid()}\n")
    assert "stale pid file(s) for postgres" in b.status().problems[0]


def test_process_helpers(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        assert is_alive(proc.pid)
        # Right after exec /proc/<pid>/cmdline may read empty; comm is the executable's name.
        assert is_ours(proc.pid, Path(sys.executable).name)
        assert not is_ours(proc.pid, "valkey-server")
        assert stop(proc.pid, timeout=5) is False  # SIGTERM was enough
        assert not is_alive(proc.pid)
    finally:
        proc.kill()
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('ready', flush=True); time.sleep(30)",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ready\n"
    assert stop(stubborn.pid, timeout=0.2) is True  # had to SIGKILL
    assert not is_alive(stubborn.pid)
    pidfile = tmp_path / "x.pid"
    assert read_pid(pidfile) is None
    pidfile.write_text("garbage")
    assert read_pid(pidfile) is None
    pidfile.write_text("123\n")
    assert read_pid(pidfile) == 123
