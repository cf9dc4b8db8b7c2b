"""Owners of native services (BUG-R1): run = pid + start time, user = kept; reap and adoption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import __main__ as cli
from testbed.config import load_settings
from testbed.errors import UsageError
from testbed.services import Endpoints, ensure_up
from testbed.services import owner as owner_mod
from testbed.services.native import NativeBackend
from testbed.services.procs import is_alive

EPS = Endpoints(
    "native",
    "postgresql://opsdesk_e2e@127.0.0.1:25433/opsdesk_e2e",
    "redis://127.0.0.1:25380/0",
    "16.4",
    "8.0.1",
    64,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _backend(tmp_path: Path, said: list[str] | None = None, **overrides: Any) -> NativeBackend:
    settings = load_settings({}, **{**_settings_overrides(tmp_path), **overrides})
    sink = said if said is not None else []
    return NativeBackend(settings, say=sink.append)


@pytest.fixture
def fake_servers(tmp_path: Path) -> Iterator[tuple[NativeBackend, list[subprocess.Popen[bytes]]]]:
    """A state dir whose pid files name live processes that look like our servers."""
    b = _backend(tmp_path)
    b.state_dir.mkdir(parents=True)
    procs = []
    for name, marker in (("postgres", "postgres"), ("valkey", "valkey-server")):
        # The marker in argv makes is_ours() accept the sleeper as that server.
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", marker],
            start_new_session=True,
        )
        procs.append(proc)
        (b.state_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    yield b, procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _write_owner(b: NativeBackend, owner: object) -> None:
    state = {"backend": "native", "pg_port": 25433, "redis_port": 25380}
    state |= {"pg_version": "16.4", "redis_version": "8.0.1"}
    if owner is not None:
        state["owner"] = owner
    (b.state_dir / "state.json").write_text(json.dumps(state))


def _owner_in_state(b: NativeBackend) -> object:
    return json.loads((b.state_dir / "state.json").read_text()).get("owner")


# -- owner records and liveness ------------------------------------------------------------
def test_start_time_is_field_22_of_proc_stat() -> None:
    start = owner_mod.start_time(os.getpid())
    assert isinstance(start, int)
    assert start == int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert owner_mod.start_time(_dead_pid()) is None


def test_run_owner_records_pid_and_start_time() -> None:
    record = owner_mod.make_owner("run")
    assert record == {"pid": os.getpid(), "start": owner_mod.start_time(os.getpid())}
    assert owner_mod.make_owner("user") == "user"
    assert owner_mod.dead_run(record) is None  # we are alive


def test_owner_pid_must_be_a_live_process() -> None:
    with pytest.raises(UsageError, match="not a running process"):
        owner_mod.make_owner("run", _dead_pid())
    with pytest.raises(UsageError, match="only makes sense for a run"):
        owner_mod.make_owner("user", os.getpid())


def test_dead_run_detects_gone_and_reused_pids() -> None:
    gone = _dead_pid()
    assert owner_mod.dead_run({"pid": gone, "start": 1}) == gone
    start = owner_mod.start_time(os.getpid())
    assert start is not None
    # Same pid, other start time: the pid now belongs to another process.
    assert owner_mod.dead_run({"pid": os.getpid(), "start": start + 1}) == os.getpid()
    # Persistent, legacy (no owner) and unreadable owners are never declared dead.
    for kept in ("user", None, {}, {"pid": "x"}, {"pid": True}, [1, 2]):
        assert owner_mod.dead_run(kept) is None


# -- reap decisions -------------------------------------------------------------------------
def test_reap_stops_servers_of_a_dead_run(
    fake_servers: tuple[NativeBackend, list[subprocess.Popen[bytes]]],
) -> None:
    b, procs = fake_servers
    dead = _dead_pid()
    _write_owner(b, {"pid": dead, "start": 12345})
    assert b.status().orphaned
    removed = b.reap()
    assert removed[0].startswith(f"orphans of a dead run (pid {dead})")
    assert all(proc.wait(timeout=10) is not None for proc in procs)
    assert not b.state_dir.exists()


def test_reap_stops_servers_of_a_reused_pid(
    fake_servers: tuple[NativeBackend, list[subprocess.Popen[bytes]]],
) -> None:
    b, procs = fake_servers
    start = owner_mod.start_time(os.getpid())
    assert start is not None
    _write_owner(b, {"pid": os.getpid(), "start": start - 1})
    assert b.reap()
    assert not any(is_alive(p.pid) for p in procs)


@pytest.mark.parametrize("owner", ["user", None, "live-run"])
def test_reap_keeps_services_of_the_user_or_a_live_run(
    fake_servers: tuple[NativeBackend, list[subprocess.Popen[bytes]]], owner: str | None
) -> None:
    b, procs = fake_servers
    _write_owner(b, owner_mod.run_owner() if owner == "live-run" else owner)
    assert b.reap() == []
    assert all(is_alive(p.pid) for p in procs)
    assert (b.state_dir / "state.json").exists()
    assert not b.status().orphaned


def test_reap_looks_at_other_checkouts_too(
    tmp_path: Path, fake_servers: tuple[NativeBackend, list[subprocess.Popen[bytes]]]
) -> None:
    other, procs = fake_servers
    _write_owner(other, {"pid": _dead_pid(), "start": 1})
    mine = _backend(tmp_path, state_dir=tmp_path / "opsdesk-e2e-mine", project="opsdesk-e2e-mine")
    assert any(r.startswith("orphans of a dead run") for r in mine.reap())
    assert not other.state_dir.exists()
    assert not any(is_alive(p.pid) for p in procs)


# -- adoption by the next run ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("previous", "adopted"),
    [("dead-run", True), ("live-run", False), ("user", False), (None, False)],
)
def test_ensure_adopts_only_a_dead_runs_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, previous: str | None, adopted: bool
) -> None:
    said: list[str] = []
    b = _backend(tmp_path, said)
    b.state_dir.mkdir(parents=True)
    dead = _dead_pid()
    records: dict[str | None, object] = {
        "dead-run": {"pid": dead, "start": 7},
        "live-run": owner_mod.run_owner(),
        "user": "user",
        None: None,
    }
    _write_owner(b, records[previous])
    monkeypatch.setattr(b, "running", lambda: EPS)
    mine = {"pid": os.getpid(), "start": 99}
    assert b.ensure(owner=mine) == (EPS, adopted)
    if adopted:
        assert _owner_in_state(b) == mine
        assert said == [f"adopted services left by a killed run (pid {dead})"]
    else:
        assert _owner_in_state(b) == records[previous]
        assert said == []


def test_ensure_up_passes_the_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    def fake_ensure(self: NativeBackend, *, owner: object = None) -> tuple[Endpoints, bool]:
        seen.append(owner)
        return EPS, True

    monkeypatch.setattr(NativeBackend, "ensure", fake_ensure)
    settings = load_settings({}, **_settings_overrides(tmp_path), backend="native")
    ensure_up(settings)
    ensure_up(settings, owner="user")
    ensure_up(settings, owner="run", owner_pid=os.getppid())
    ensure_up(load_settings({}, **_settings_overrides(tmp_path), backend="native", keep=True))
    assert seen == [
        owner_mod.run_owner(),
        "user",
        owner_mod.run_owner(os.getppid()),
        "user",  # --e2e-keep: left running on purpose, so never reaped as a dead run's
    ]
    with pytest.raises(UsageError):
        ensure_up(settings, owner_pid=_dead_pid())


def _settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {
        "state_dir": tmp_path / "opsdesk-e2e-owner",
        "cache_dir": tmp_path / "cache",
        "project": "opsdesk-e2e-owner",
        "pg_port": 25433,
        "redis_port": 25380,
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"owner": "user"}),
        (["--foreground"], {"owner": "run"}),
        (["--owner-pid", "4242"], {"owner": "run", "owner_pid": 4242}),
    ],
)
def test_cli_up_owner(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: dict[str, object],
) -> None:
    seen: list[dict[str, object]] = []

    def fake_ensure_up(settings: object, **kwargs: object) -> tuple[Endpoints, bool]:
        seen.append(kwargs)
        return EPS, False

    monkeypatch.setattr(cli, "ensure_up", fake_ensure_up)
    monkeypatch.setattr(cli, "_hold", lambda settings, owned: 0)
    assert cli.main(["up", "--backend", "native", *argv]) == 0
    assert seen == [expected]
    assert "reused" in capsys.readouterr().out


def test_cli_status_exit_4_for_a_dead_runs_services(
    fake_servers: tuple[NativeBackend, list[subprocess.Popen[bytes]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    b, _ = fake_servers
    _write_owner(b, {"pid": _dead_pid(), "start": 1})
    monkeypatch.setattr(NativeBackend, "running", lambda self: EPS)
    monkeypatch.setattr(cli, "_backend", lambda settings, command: b)
    assert cli.main(["status"]) == 4
    assert "is gone: `make reap`" in capsys.readouterr().out
    _write_owner(b, "user")
    assert cli.main(["status"]) == 0
