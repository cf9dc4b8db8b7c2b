"""Ownership without servers: process identity, marked state dirs, leases, and what reap/down
may stop (only processes whose recorded identity still matches). Sleepers stand in for servers.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import __main__ as cli
from testbed import config
from testbed.config import load_settings
from testbed.errors import ServicesUnavailable, UnsafePath, UsageError
from testbed.services import ownership as own
from testbed.services import private
from testbed.services.endpoints import Endpoints
from testbed.services.lifecycle import Hold
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

# The stand-in servers: this interpreter sleeping (no `sleep` from PATH); its title as recorded.
SLEEPER_TITLE = f"{sys.executable} -c import time; time.sleep(60)"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleepers() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `sleep` processes (stand-ins for servers); all are killed afterwards."""
    made: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        made.append(
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
            )
        )
        return made[-1]

    yield start
    for proc in made:
        proc.kill()
        proc.wait()


def _identity(proc: subprocess.Popen[bytes]) -> own.ProcessIdentity:
    found = own.ProcessIdentity.of(proc.pid)
    assert found is not None
    return found


# -- process identity ------------------------------------------------------------------------
def test_identity_needs_pid_start_time_and_command_line(
    sleepers: Callable[[], subprocess.Popen[bytes]],
) -> None:
    me = own.holder_identity()
    assert me.alive()
    proc = sleepers()
    ident = _identity(proc)
    assert ident.alive()
    assert ident.titles == (SLEEPER_TITLE,)
    # The same pid with another start time or command line is another process: not ours.
    assert not own.ProcessIdentity(proc.pid, ident.started + 1, ident.titles).alive()
    assert not own.ProcessIdentity(proc.pid, ident.started, ("postgres -D x",)).alive()
    assert own.ProcessIdentity.from_json(ident.to_json()) == ident
    for bad in (None, {}, {"pid": True}, {"pid": 5, "started": "x", "titles": ["a"]}, [1]):
        assert own.ProcessIdentity.from_json(bad) is None
    proc.kill()
    proc.wait()
    assert not ident.alive()
    assert own.ProcessIdentity.of(proc.pid) is None


def test_lease_holder_must_be_alive() -> None:
    with pytest.raises(UsageError, match="not a running process"):
        own.holder_identity(_dead_pid())


# -- marked state dirs -------------------------------------------------------------------------
def test_state_dir_created_marked_and_removed_with_its_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state"
    sd = own.StateDir(path)
    sd.prepare(project="p")
    assert sd.is_ours()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700  # private: nobody else reads or enters it
    (path / "pg").mkdir()
    (path / "postgres.log").write_text("x")
    sd.remove()
    assert not (tmp_path / "a").exists()  # the parents it created went too
    assert tmp_path.exists()


def test_existing_empty_dir_is_adopted_without_changing_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "mine"
    path.mkdir(mode=0o750)
    sd = own.StateDir(path)
    sd.prepare(project="p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    (path / "valkey.log").write_text("x")
    sd.remove()
    assert path.is_dir()  # not ours to delete: only its contents were
    assert list(path.iterdir()) == []


def test_a_dir_others_may_write_is_refused_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.mkdir()
    path.chmod(0o1777)  # like /tmp: anyone could plant links in it
    with pytest.raises(UnsafePath, match="others may write it"):
        own.StateDir(path).prepare(project="p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777
    assert list(path.iterdir()) == []


def test_non_empty_unmarked_dir_is_refused_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    (tmp_path / "state.json").write_text('{"mine": true}')
    (tmp_path / "postgres.log").write_text("a user's log")
    sd = own.StateDir(tmp_path)
    with pytest.raises(UsageError, match="not empty and was not made by testbed"):
        sd.prepare(project="p")
    assert sd.remove() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pg", "postgres.log", "state.json"]
    assert own.read_record(tmp_path) == {}  # an unmarked record is never trusted


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_parent_is_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ServicesUnavailable) as info:
            own.StateDir(tmp_path / "state").prepare(project="p")
    finally:
        tmp_path.chmod(0o755)
    assert "\n" not in str(info.value)
    assert "choose a writable E2E_STATE_DIR" in str(info.value)


# -- leases ----------------------------------------------------------------------------------
def test_leases_user_once_dead_runs_reaped(sleepers: Callable[[], subprocess.Popen[bytes]]) -> None:
    record = own.Record()
    user = record.add_lease(own.new_lease(own.USER, None))
    assert record.add_lease(own.new_lease(own.USER, None)) == user  # `make up` twice: one
    proc = sleepers()
    run = record.add_lease(own.new_lease(own.RUN, _identity(proc)))
    assert [x.kind for x in record.leases()] == [own.USER, own.RUN]
    proc.kill()
    proc.wait()
    assert record.reap_leases() == [run]
    assert record.leases() == [user]
    with pytest.raises(UsageError):
        own.new_lease(own.RUN, None)


def test_release_stops_only_after_the_last_lease() -> None:
    record = own.Record()
    first = record.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    second = record.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    assert own.release_lease(record, first.id) is False  # the second run still uses them
    assert own.release_lease(record, second.id) is True
    kept = own.Record()
    lease = kept.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    assert own.release_lease(kept, lease.id, keep=True) is False  # --e2e-keep: the user's now
    assert [x.kind for x in kept.leases()] == [own.USER]


def test_down_ends_the_users_and_own_leases_not_other_runs(
    sleepers: Callable[[], subprocess.Popen[bytes]],
) -> None:
    record = own.Record()
    record.add_lease(own.new_lease(own.USER, None))
    record.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    assert own.request_down(record) == []
    other = record.add_lease(own.new_lease(own.RUN, _identity(sleepers())))
    assert own.request_down(record) == [other]


# -- what the native backend may stop ----------------------------------------------------------
def _backend(tmp_path: Path, **overrides: Any) -> NativeBackend:
    settings = load_settings(
        {},
        **{
            "state_dir": tmp_path / "opsdesk-e2e-owner",
            "cache_dir": tmp_path / "cache",
            "project": "opsdesk-e2e-owner",
            "pg_port": 25433,
            "redis_port": 25380,
            **overrides,
        },
    )
    return NativeBackend(settings, say=lambda message: None)


def _record(b: NativeBackend, procs: dict[str, own.ProcessIdentity], *leases: own.Lease) -> None:
    own.StateDir(b.state_dir).prepare(project=b.settings.project)
    record = own.Record(backend="native", project=b.settings.project, checkout=str(Path.cwd()))
    record["state_dir"] = str(b.state_dir)
    record.update(pg_port=25433, redis_port=25380, pg_version="16.4", redis_version="8.0.1")
    for name, ident in procs.items():
        record.set_process(name, ident)
    record.set_leases(list(leases))
    b.store.write(record)


def test_reap_stops_servers_nobody_uses(
    tmp_path: Path, sleepers: Callable[[], subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _backend(tmp_path)
    monkeypatch.setattr(NativeBackend, "_healthy", lambda self, record: None)  # no 2 s probe
    servers = {"postgres": sleepers(), "valkey": sleepers()}
    holder = sleepers()
    lease = own.new_lease(own.RUN, _identity(holder))
    _record(b, {n: _identity(p) for n, p in servers.items()}, lease)
    assert b.reap() == []  # its run is alive
    holder.kill()
    holder.wait()
    assert b.status().orphaned
    removed = b.reap()
    assert removed[0].startswith("lease of dead run pid")
    assert all(p.wait(timeout=5) is not None for p in servers.values())
    assert not b.state_dir.exists()


def test_a_pid_that_is_not_the_recorded_process_is_left_alone(
    tmp_path: Path, sleepers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    b = _backend(tmp_path)
    stranger = sleepers()  # e.g. another PostgreSQL that got the recorded pid after a reboot
    forged = own.ProcessIdentity(stranger.pid, _identity(stranger).started - 50, (SLEEPER_TITLE,))
    _record(b, {"postgres": forged})
    assert "no longer the process we started" in " ".join(b.status().problems)
    b.down()
    b.reap()
    assert is_alive(stranger.pid)


def test_reap_takes_down_services_of_a_deleted_checkout(
    tmp_path: Path,
    sleepers: Callable[[], subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = tmp_path / "base"
    monkeypatch.setattr(private, "base_dir", lambda: base)
    made = {}
    for where, name in ((base, "gone"), (tmp_path, "elsewhere")):  # only the base is reaped
        project = f"opsdesk-e2e-{name}"
        other = _backend(tmp_path, state_dir=where / project, project=project)
        servers = {"postgres": sleepers(), "valkey": sleepers()}
        _record(other, {n: _identity(p) for n, p in servers.items()}, own.new_lease(own.USER, None))
        record = other.store.read()
        record["checkout"] = str(tmp_path / "deleted-checkout")
        other.store.write(record)
        made[name] = servers
    mine = _backend(tmp_path, state_dir=base / "opsdesk-e2e-mine", project="opsdesk-e2e-mine")
    removed = mine.reap()
    assert any("deleted checkout" in r for r in removed), removed
    assert all(p.wait(timeout=5) is not None for p in made["gone"].values())
    assert all(p.poll() is None for p in made["elsewhere"].values())


def test_cli_status_exit_4_when_nobody_uses_them(
    tmp_path: Path,
    sleepers: Callable[[], subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    b = _backend(tmp_path)
    _record(b, {"postgres": _identity(sleepers()), "valkey": _identity(sleepers())})
    monkeypatch.setattr(NativeBackend, "_healthy", lambda self, record: EPS)
    monkeypatch.setattr(cli, "choose", lambda settings: b)
    monkeypatch.chdir(tmp_path)  # no ini file: testbed's own words, not a repository's make
    monkeypatch.delenv("E2E_INIFILE", raising=False)
    monkeypatch.delenv("E2E_COMMAND", raising=False)
    assert cli.main(["status"]) == 4
    assert "`python -m testbed reap` removes them" in capsys.readouterr().out
    record = b.store.read()
    record.add_lease(own.new_lease(own.USER, None))
    b.store.write(record)
    assert cli.main(["status"]) == 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"kind": "user"}),
        (["--foreground"], {"kind": "run", "holder_pid": None}),
        (["--owner-pid", "4242"], {"kind": "run", "holder_pid": 4242}),
    ],
)
def test_cli_up_lease_kind(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    expected: dict[str, object],
) -> None:
    seen: list[dict[str, object]] = []

    def fake_acquire(settings: object, **kwargs: object) -> Hold:
        seen.append(kwargs)
        return Hold(None, own.new_lease(own.USER, None), EPS, False)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "acquire", fake_acquire)
    monkeypatch.setattr(cli, "_until_signalled", lambda: None)
    monkeypatch.setattr(cli, "_release", lambda hold: None)
    assert cli.main(["up", "--backend", "native", *argv]) == 0
    assert seen == [expected]
    assert "reused" in capsys.readouterr().out


class _Releases:
    """A backend stand-in that records the leases it is asked to end."""

    name = "native"

    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, lease_id: str, *, keep: bool = False) -> bool:
        self.released.append(lease_id)
        return True


def test_cli_up_foreground_interrupted_after_the_start_ends_its_lease(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C that lands once the services run, before the foreground loop took the signals
    over (here: while the first line is written), still ends the lease: it took the services
    down, not left them to `reap`."""
    backend = _Releases()
    lease = own.new_lease(own.RUN, own.holder_identity())
    hold = Hold(backend, lease, EPS, True)  # type: ignore[arg-type]
    monkeypatch.setattr(cli, "acquire", lambda settings, **kwargs: hold)

    def interrupted(eps: Endpoints) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "describe", interrupted)
    monkeypatch.setattr(cli, "_until_signalled", lambda: pytest.fail("no loop after Ctrl-C"))
    assert cli.main(["up", "--backend", "native", "--foreground"]) == 0
    assert backend.released == [lease.id]
    assert "services stopped" in capsys.readouterr().out


@pytest.mark.parametrize("recorded", [True, False], ids=["lease-recorded", "before-the-lease"])
def test_acquire_interrupted_ends_a_recorded_lease_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: bool
) -> None:
    """Ctrl-C on the way out of ensure() (the record names the run's lease: the start had
    finished) ends that lease; one before the lease was recorded leaves the record alone (the
    start stopped what it had spawned)."""
    from testbed.services import lifecycle

    b = _backend(tmp_path)
    released: list[str] = []

    def ensure(lease: own.Lease) -> tuple[Endpoints, bool]:
        _record(b, {}, *([lease] if recorded else []))
        raise KeyboardInterrupt

    monkeypatch.setattr(b, "ensure", ensure)
    monkeypatch.setattr(b, "release", lambda lease_id, keep=False: released.append(lease_id))
    monkeypatch.setattr(lifecycle, "choose", lambda settings, **kwargs: b)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.acquire(b.settings, kind=own.RUN)
    recorded_leases = [x.id for x in b.store.read().leases()]
    assert len(recorded_leases) == (1 if recorded else 0)
    assert released == recorded_leases


def test_a_state_dir_of_an_older_testbed_is_adopted_by_identity(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    state = b.state_dir
    (state / "pg" / "data").mkdir(parents=True)
    (state / "valkey").mkdir()
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen([*argv, "-D", str(state / "pg" / "data"), "-p", "1"], cwd=state / "pg")
    stranger = subprocess.Popen([*argv, "valkey-server", "127.0.0.1:25380"], cwd=tmp_path)
    try:
        (state / "postgres.pid").write_text(f"{ours.pid}\n")
        (state / "valkey.pid").write_text(f"{stranger.pid}\n")  # right title, wrong dir
        old = {"backend": "native", "project": b.settings.project, "owner": "user"}
        (state / "state.json").write_text(
            json.dumps({**old, "pg_port": 25433, "redis_port": 25380})
        )
        assert b.status().problems  # not ours until adopted under the lock
        said = b.down()
        assert ours.wait(timeout=10) is not None, said  # provably its own: stopped
        assert stranger.poll() is None  # not provably: left alone
        assert not state.exists(), (said, list(state.iterdir()))
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


def test_services_an_older_testbed_started_at_the_old_default_stay_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (config, own):  # the base moves with the state filesystem
        monkeypatch.setattr(module, "state_filesystem", lambda: tmp_path)
    project = load_settings({}).project
    new = tmp_path / f"testbed-{os.geteuid()}" / project
    assert own.state_dir_of(load_settings({})) == new
    own.StateDir(tmp_path / "someone-elses").prepare(project="other-e2e-00000000")
    old = own.StateDir(tmp_path / project)
    old.prepare(project="other-e2e-00000000")  # another project's: never taken for ours
    assert own.state_dir_of(load_settings({})) == new
    old.remove()
    old.prepare(project=project)
    assert own.state_dir_of(load_settings({})) == old.path
    new.mkdir(parents=True)  # once the new one exists, it wins
    assert own.state_dir_of(load_settings({})) == new
