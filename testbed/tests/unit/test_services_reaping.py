"""Reaping native services without servers: which state dirs are looked at (this checkout's, and
the native ones in the user's own private base, nothing else), what counts as still in use, and
what is stopped. A fake backend stands in for the native one; it records what it was asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import UnsafePath
from testbed.services import ownership as own
from testbed.services import private, reaping

PROJECT = "shop-e2e-mine"
SERVERS = ("postgres", "valkey")
NOBODY = 65534

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")


class Settings:
    project = PROJECT


class FakeBackend:
    """What reap_native uses of NativeBackend; `running` names the servers still alive."""

    name = "native"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.settings = Settings()
        self.running: dict[Path, tuple[str, ...]] = {}
        self.adopted = 0
        self.stopped: list[Path] = []

    def adopt(self) -> None:
        self.adopted += 1

    def alive(self, record: own.Record) -> dict[str, own.ProcessIdentity]:
        names = self.running.get(Path(record["state_dir"]), ())
        return {k: v for k, v in record.processes().items() if k in names}

    def stop(self, record: own.Record, *, quiet: bool, state_dir: Path) -> list[str]:
        assert quiet
        assert Path(record["state_dir"]) == state_dir  # the record read from that very dir
        self.stopped.append(state_dir)
        return [f"stopped {state_dir.name}"]


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's private base, under tmp_path."""
    found = tmp_path / "base"
    monkeypatch.setattr(private, "base_dir", lambda: found)
    private.base()
    return found


@pytest.fixture
def backend(base: Path) -> FakeBackend:
    return FakeBackend(base / PROJECT)


def state_dir(
    path: Path,
    *leases: own.Lease,
    backend: str = "native",
    project: str = PROJECT,
    checkout: Path | None = None,
    **fields: Any,
) -> Path:
    """A marked state dir at path whose record names two servers and the given leases."""
    own.StateDir(path).prepare(project=project)
    record = own.Record(
        backend=backend,
        project=project,
        checkout=str(checkout or path.parent),
        state_dir=str(path),
        pg_port=25433,
        redis_port=25380,
    )
    for pid, name in enumerate(SERVERS, start=4_000_000):  # never stopped: the fake stops
        record.set_process(name, own.ProcessIdentity(pid, 1.0, (name,)))
    record.set_leases(list(leases))
    record.update(fields)
    own.Store(path).write(record)
    return path


def live_run() -> own.Lease:
    return own.new_lease(own.RUN, own.holder_identity())  # this process: alive


def dead_run() -> own.Lease:
    """A run that ended: its pid is this process's now, started at another time (no process
    needs to be started and waited for)."""
    return own.new_lease(own.RUN, own.ProcessIdentity(os.getpid(), 1.0, ("pytest",)))


def user() -> own.Lease:
    return own.new_lease(own.USER, None)


# -- what is stopped ----------------------------------------------------------------------------
def test_services_whose_run_died_are_stopped_and_reported(backend: FakeBackend) -> None:
    state_dir(backend.state_dir, dead_run())
    removed = reaping.reap_native(backend)
    assert backend.stopped == [backend.state_dir]
    assert removed[0].startswith(f"lease of dead run pid {os.getpid()}")
    assert removed[1:] == [f"stopped {PROJECT}"]
    assert backend.adopted == 1  # an older testbed's state dir is adopted before it is judged


def test_services_a_live_run_uses_are_kept_and_dead_leases_dropped(backend: FakeBackend) -> None:
    running = live_run()
    state_dir(backend.state_dir, running, dead_run())
    backend.running[backend.state_dir] = ("postgres",)  # even with a server gone: the run fails
    removed = reaping.reap_native(backend)
    assert backend.stopped == []
    assert [x[:13] for x in removed] == ["lease of dead"]
    assert own.Store(backend.state_dir).read().leases() == [running]  # written back


def test_a_live_run_alone_leaves_the_record_untouched(backend: FakeBackend) -> None:
    state_dir(backend.state_dir, live_run())
    record = backend.state_dir / own.RECORD
    before = record.stat().st_mtime_ns, record.stat().st_ino
    assert reaping.reap_native(backend) == []
    assert (record.stat().st_mtime_ns, record.stat().st_ino) == before
    assert backend.stopped == []


def test_the_users_whole_set_is_kept_and_a_half_set_stopped(backend: FakeBackend) -> None:
    state_dir(backend.state_dir, user())
    backend.running[backend.state_dir] = SERVERS
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []
    backend.running[backend.state_dir] = ("valkey",)  # of no use: `up` starts a whole set again
    assert reaping.reap_native(backend) == [f"stopped {PROJECT}"]
    assert backend.stopped == [backend.state_dir]


def test_the_users_services_of_a_deleted_checkout_are_stopped(
    backend: FakeBackend, tmp_path: Path
) -> None:
    gone = tmp_path / "deleted-checkout"
    state_dir(backend.state_dir, user(), checkout=gone)
    backend.running[backend.state_dir] = SERVERS
    removed = reaping.reap_native(backend)
    assert removed == [f"services of deleted checkout {gone}", f"stopped {PROJECT}"]


def test_nothing_to_say_when_nothing_was_used_or_removed(backend: FakeBackend) -> None:
    state_dir(backend.state_dir)

    def stop_nothing(record: own.Record, *, quiet: bool, state_dir: Path) -> list[str]:
        return []

    backend.stop = stop_nothing  # type: ignore[method-assign]
    assert reaping.reap_native(backend) == []


def test_no_state_dir_at_all_reaps_nothing(backend: FakeBackend) -> None:
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


# -- which state dirs ---------------------------------------------------------------------------
def test_native_siblings_in_the_base_are_reaped_whatever_their_project(
    backend: FakeBackend, base: Path
) -> None:
    state_dir(backend.state_dir, live_run())
    other = state_dir(base / "crm-e2e-other", dead_run(), project="crm-e2e-other")
    assert reaping.reap_native(backend)[-1] == "stopped crm-e2e-other"
    assert backend.stopped == [other]
    assert backend.adopted == 1  # only this checkout's own state dir is adopted


def test_nothing_outside_the_base_is_reaped(
    backend: FakeBackend, base: Path, tmp_path: Path
) -> None:
    state_dir(tmp_path / "shop-e2e-outside", dead_run())  # beside the base, not in it
    state_dir(base / "not-a-state-dir", dead_run())  # in it, but not named like one
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


def test_a_link_in_the_base_to_a_state_dir_elsewhere_is_not_followed(
    backend: FakeBackend, base: Path, tmp_path: Path
) -> None:
    victim = state_dir(tmp_path / "victim-e2e-dir", dead_run())
    (base / "shop-e2e-link").symlink_to(victim)
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


def test_docker_and_unmarked_siblings_are_left_alone(backend: FakeBackend, base: Path) -> None:
    docker = state_dir(base / "shop-e2e-docker", dead_run(), backend="docker")
    unmarked = state_dir(base / "shop-e2e-unmarked", dead_run())
    (unmarked / own.MARKER).unlink()
    (base / "shop-e2e-file").write_text("{}")
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []
    # Not even locked: a docker run or a stranger's directory is never waited on or touched.
    assert not own.lock_file(docker).exists()
    assert not own.lock_file(unmarked).exists()


def test_a_sibling_others_may_write_is_left_alone(backend: FakeBackend, base: Path) -> None:
    sibling = state_dir(base / "shop-e2e-shared", dead_run())
    sibling.chmod(0o777)  # anyone could have written its record
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


@pytest.mark.parametrize(
    "forged",
    [
        {"state_dir": "/"},  # a record naming another directory to delete
        {"pg_port": "5432"},
        {"processes": {"postgres": {"pid": 1}}},
        {"leases": "all"},
    ],
    ids=["other-dir", "port-text", "bad-process", "bad-leases"],
)
def test_a_sibling_with_a_malformed_record_is_left_alone(
    backend: FakeBackend, base: Path, forged: dict[str, object]
) -> None:
    state_dir(base / "shop-e2e-forged", dead_run(), **forged)
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


@as_root
def test_a_sibling_of_another_user_is_left_alone(backend: FakeBackend, base: Path) -> None:
    sibling = state_dir(base / "shop-e2e-theirs", dead_run())
    os.chown(sibling, NOBODY, NOBODY)
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


@as_root
def test_a_record_of_another_user_is_not_read(backend: FakeBackend, base: Path) -> None:
    sibling = state_dir(base / "shop-e2e-theirs", dead_run())
    os.chown(sibling / own.RECORD, NOBODY, NOBODY)
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


def test_a_sibling_busy_under_its_lock_is_skipped_without_waiting(
    backend: FakeBackend, base: Path
) -> None:
    sibling = state_dir(base / "shop-e2e-busy", dead_run())
    with own.Store(sibling).locked() as locked:  # e.g. a run starting there right now
        assert locked
        assert reaping.reap_native(backend) == []
    assert backend.stopped == []
    reaping.reap_native(backend)
    assert backend.stopped == [sibling]


def test_this_checkouts_state_dir_of_another_project_is_left_alone(backend: FakeBackend) -> None:
    """A shared E2E_STATE_DIR: the other project's services are never ours to stop."""
    state_dir(backend.state_dir, dead_run(), project="crm-e2e-theirs")
    assert reaping.reap_native(backend) == []
    assert backend.stopped == []


def test_a_base_others_may_write_is_refused_before_anything_is_read(
    backend: FakeBackend, base: Path
) -> None:
    state_dir(base / "shop-e2e-sibling", dead_run())
    base.chmod(0o777)
    with pytest.raises(UnsafePath) as refused:
        reaping.reap_native(backend)
    assert f"refusing the testbed base directory {base}" in str(refused.value)
    assert "mode 777" in str(refused.value)
    assert backend.stopped == []


def test_a_base_that_is_a_link_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "base"
    link.symlink_to(real)
    monkeypatch.setattr(private, "base_dir", lambda: link)
    backend = FakeBackend(tmp_path / "elsewhere" / PROJECT)
    with pytest.raises(UnsafePath, match="symbolic link"):
        reaping.reap_native(backend)
    assert backend.stopped == []
