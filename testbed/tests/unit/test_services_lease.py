"""The shared lease lifecycle (testbed.services.lease) against a fake runtime: who starts, who
reuses, who stops, and what happens to dead runs' leases, whatever the backend."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.config import Settings, load_settings
from testbed.errors import InUse, ServicesUnavailable
from testbed.services import lease
from testbed.services.endpoints import Endpoints
from testbed.services.ownership import (
    RUN,
    USER,
    Lease,
    ProcessIdentity,
    Record,
    StateDir,
    Store,
    holder_identity,
    new_lease,
    new_record,
)

EPS = Endpoints(
    backend="native",
    database_url="postgresql://a@127.0.0.1:15433/a",
    redis_url="redis://127.0.0.1:16380/0",
    pg_version="16.15",
    redis_version="8.1.8",
    redis_databases=64,
)


class FakeRuntime:
    """Services that exist, answer, start and stop as the test says; the record and its lock
    are the real ones."""

    name = "native"  # a record names a backend testbed knows

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir
        self.store = Store(self.state_dir)
        self.said: list[str] = []
        self.up = False
        self.answers = True
        self.starts = 0
        self.stopped: list[Record] = []
        self.quiet: list[bool] = []  # each stop's quiet flag: quiet ones name nothing they stop
        self.adopted = 0
        self.start_fails: BaseException | None = None
        self.stop_fails = False

    def say(self, message: str) -> None:
        self.said.append(message)

    @property
    def what(self) -> str:
        return "the fake services"

    def adopt(self) -> None:
        self.adopted += 1

    def present(self, record: Record) -> bool:
        return self.up

    def answering(self, record: Record) -> Endpoints | None:
        return EPS if self.up and self.answers else None

    def start(self, leases: list[Lease]) -> Endpoints:
        StateDir(self.state_dir).prepare(project=self.settings.project)
        record = new_record(self.name, self.settings, self.state_dir)
        record.set_leases(leases)
        self.store.write(record)
        self.up = True  # half-started: the failure below must be cleaned up
        if self.start_fails is not None:
            raise self.start_fails
        self.starts += 1
        return EPS

    def stop(self, record: Record, *, quiet: bool) -> list[str]:
        if record.get("backend"):  # (before a start, a record naming nothing is cleared too)
            self.stopped.append(Record(record))
        self.quiet.append(quiet)
        if self.stop_fails and self.up:
            raise ServicesUnavailable("the cleanup failed too")
        self.up = False
        return StateDir(self.state_dir).remove()


@pytest.fixture
def rt(tmp_path: Path) -> FakeRuntime:
    settings = load_settings(
        {},
        backend="native",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        project="opsdesk-e2e-unittest",
        checkout=tmp_path,
    )
    return FakeRuntime(settings)


def run_lease() -> Lease:
    return new_lease(RUN, holder_identity())


def recorded(rt: FakeRuntime, *leases: Lease, checkout: Path | None = None) -> None:
    """A record of rt's instance with these leases, in its marked state dir."""
    StateDir(rt.state_dir).prepare(project=rt.settings.project)
    record = new_record(rt.name, rt.settings, rt.state_dir)
    if checkout is not None:
        record["checkout"] = str(checkout)
    record.set_leases(list(leases))
    rt.store.write(record)


def lease_ids(rt: FakeRuntime) -> list[str]:
    return [x.id for x in rt.store.read().leases()]


def test_the_first_lease_starts_the_next_reuses_and_the_last_release_stops(
    rt: FakeRuntime,
) -> None:
    first, second = run_lease(), run_lease()
    assert lease.ensure(rt, first) == (EPS, True)
    assert lease.ensure(rt, second) == (EPS, False)
    assert rt.starts == 1
    assert lease_ids(rt) == [first.id, second.id]
    assert lease.release(rt, first.id) is False  # the other run still uses them
    assert rt.stopped == []
    assert lease_ids(rt) == [second.id]
    assert lease.release(rt, second.id) is True
    assert [x.leases() for x in rt.stopped] == [[]]
    assert not rt.state_dir.exists()
    assert rt.adopted == 2  # an older testbed's state dir is looked at before each decision


def test_a_dead_runs_lease_is_dropped_and_its_services_reused(
    rt: FakeRuntime, dead: ProcessIdentity
) -> None:
    recorded(rt, new_lease(RUN, dead))
    rt.up = True
    mine = run_lease()
    assert lease.ensure(rt, mine) == (EPS, False)
    assert lease_ids(rt) == [mine.id]
    assert lease.release(rt, mine.id) is True  # the new run was the last user


def test_services_that_do_not_answer_are_left_to_the_live_run_using_them(
    rt: FakeRuntime, other_run: ProcessIdentity
) -> None:
    theirs = new_lease(RUN, other_run)
    recorded(rt, theirs)
    rt.up, rt.answers = True, False
    with pytest.raises(InUse, match=r"the fake services do not answer, and run pid \d+"):
        lease.ensure(rt, run_lease())
    assert rt.stopped == []
    assert lease_ids(rt) == [theirs.id]


def test_services_nobody_uses_that_do_not_answer_are_replaced_keeping_the_users_lease(
    rt: FakeRuntime, dead: ProcessIdentity
) -> None:
    user = new_lease(USER, None)
    recorded(rt, new_lease(RUN, dead), user)
    rt.up, rt.answers = True, False
    mine = run_lease()
    assert lease.ensure(rt, mine) == (EPS, True)
    assert len(rt.stopped) == 1
    assert lease_ids(rt) == [user.id, mine.id]  # `up`'s lease survives the replacement
    assert rt.said == ["replacing the fake services: they do not answer"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), ServicesUnavailable("no answer")])
def test_a_failed_start_stops_what_its_record_names(
    rt: FakeRuntime, failure: BaseException
) -> None:
    rt.start_fails = failure
    mine = run_lease()
    with pytest.raises(type(failure)):
        lease.ensure(rt, mine)
    # Stopped by what start wrote before anything ran: the new record, with the new lease.
    assert [x.leases() for x in rt.stopped][-1] == [mine]
    assert rt.up is False
    assert not rt.state_dir.exists()


def test_a_cleanup_that_fails_too_does_not_hide_the_starts_error(rt: FakeRuntime) -> None:
    rt.start_fails = KeyboardInterrupt()
    rt.stop_fails = True
    with pytest.raises(KeyboardInterrupt):
        lease.ensure(rt, run_lease())


def test_another_backends_servers_are_never_replaced(rt: FakeRuntime) -> None:
    StateDir(rt.state_dir).prepare(project=rt.settings.project)
    record = Record(backend="docker")
    record.set_process("postgres", holder_identity())
    rt.store.write(record)
    with pytest.raises(InUse, match=r"docker services are recorded .* E2E_BACKEND=docker"):
        lease.ensure(rt, run_lease())
    assert rt.stopped == []
    assert lease.release(rt, "any") is False  # nor stopped by a release of ours


def test_services_whose_record_was_lost_are_recorded_again(rt: FakeRuntime) -> None:
    rt.up = True  # answering, but no record says whose they are
    mine = run_lease()
    assert lease.ensure(rt, mine) == (EPS, False)
    record = rt.store.read()
    assert (record["backend"], record["database_url"], record["pg_version"]) == (
        "native",
        EPS.database_url,
        "16.15",
    )
    assert lease_ids(rt) == [mine.id]


def test_release_with_keep_hands_the_services_to_the_user(rt: FakeRuntime) -> None:
    mine = run_lease()
    lease.ensure(rt, mine)
    assert lease.release(rt, mine.id, keep=True) is False
    assert [x.kind for x in rt.store.read().leases()] == [USER]
    assert rt.stopped == []


def test_down_leaves_them_to_a_live_run_and_stops_them_otherwise(
    rt: FakeRuntime, other_run: ProcessIdentity
) -> None:
    theirs = new_lease(RUN, other_run)
    recorded(rt, new_lease(USER, None), theirs)
    rt.up = True
    assert lease.down(rt).startswith(f"left running: in use by run pid {other_run.pid}")
    assert lease_ids(rt) == [theirs.id]  # the user's lease ended
    recorded(rt, new_lease(USER, None), run_lease())  # this process's own lease ends too
    assert lease.down(rt) == "stopped and their data removed"
    assert not rt.state_dir.exists()
    assert lease.down(rt) == "no services of this checkout"  # idempotent


def test_down_leaves_a_directory_testbed_did_not_make_alone(rt: FakeRuntime) -> None:
    rt.state_dir.mkdir()
    (rt.state_dir / "data").write_text("theirs")
    assert lease.down(rt) == f"{rt.state_dir} was not made by testbed: left alone"
    assert rt.stopped == []
    assert (rt.state_dir / "data").read_text() == "theirs"


def test_down_refuses_another_projects_state_dir(rt: FakeRuntime) -> None:
    StateDir(rt.state_dir).prepare(project="shop-e2e-0badc0de")
    with pytest.raises(InUse, match="belongs to project shop-e2e-0badc0de"):
        lease.down(rt)
    assert rt.stopped == []


def test_drop_dead_drops_dead_runs_and_the_user_of_a_deleted_checkout(
    rt: FakeRuntime, dead: ProcessIdentity, tmp_path: Path
) -> None:
    live, gone, user = run_lease(), new_lease(RUN, dead), new_lease(USER, None)
    record = Record(backend="native", checkout=str(tmp_path))
    record.set_leases([live, gone, user])
    found = lease.drop_dead(record)
    assert (found.dead, found.checkout_gone) == ([gone], None)
    assert record.leases() == [live, user]
    assert found.notes() == [f"lease of dead {gone.describe()}"]
    record["checkout"] = str(tmp_path / "deleted")
    found = lease.drop_dead(record)
    assert (found.dead, found.checkout_gone) == ([], tmp_path / "deleted")
    assert record.leases() == [live]  # nobody can `down` it there: the user's lease ends
    assert found.notes() == [f"services of deleted checkout {tmp_path / 'deleted'}"]


def test_in_use_by_a_live_run_always_and_by_the_user_only_while_the_set_is_whole() -> None:
    record = Record(backend="native")
    assert lease.in_use(record, whole=True) is False  # nobody
    record.set_leases([new_lease(USER, None)])
    assert lease.in_use(record, whole=True) is True
    assert lease.in_use(record, whole=False) is False  # a half set: `up` starts a whole one
    record.set_leases([run_lease()])
    assert lease.in_use(record, whole=False) is True  # the run fails on its own


def test_up_takes_the_users_lease_and_returns_the_endpoints(rt: FakeRuntime) -> None:
    assert lease.up(rt) == EPS
    assert [x.kind for x in rt.store.read().leases()] == [USER]
    assert rt.starts == 1


def test_another_projects_state_dir_is_refused_before_its_lock_is_waited_for(
    rt: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lock may be held by that project's run for as long as it runs: refused at once."""
    StateDir(rt.state_dir).prepare(project="shop-e2e-0badc0de")
    monkeypatch.setattr(rt.store, "locked", lambda: pytest.fail("waited for the other's lock"))
    with pytest.raises(InUse, match="belongs to project shop-e2e-0badc0de"):
        lease.ensure(rt, run_lease())


def test_a_state_dir_taken_by_another_project_while_waiting_for_the_lock_is_refused(
    rt: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged again under the lock: another project's run may have marked it meanwhile."""
    locked = rt.store.locked

    @contextlib.contextmanager
    def taken_meanwhile() -> Iterator[bool]:
        StateDir(rt.state_dir).prepare(project="shop-e2e-0badc0de")
        with locked() as held:
            yield held

    monkeypatch.setattr(rt.store, "locked", taken_meanwhile)
    with pytest.raises(InUse, match="belongs to project shop-e2e-0badc0de"):
        lease.ensure(rt, run_lease())
    assert rt.starts == 0


def test_another_backends_record_without_servers_is_replaced(rt: FakeRuntime) -> None:
    """A docker record that names no process (its containers gone) stands in nobody's way."""
    StateDir(rt.state_dir).prepare(project=rt.settings.project)
    rt.store.write(Record(backend="docker"))
    mine = run_lease()
    assert lease.ensure(rt, mine) == (EPS, True)
    assert rt.store.read()["backend"] == "native"
    assert lease_ids(rt) == [mine.id]


def test_stops_of_a_replacement_or_cleanup_are_quiet_and_those_of_release_and_down_are_not(
    rt: FakeRuntime,
) -> None:
    """What ensure clears before a start (or after a failed one) is its own business; what
    release and down stop, they say."""
    mine = run_lease()
    lease.ensure(rt, mine)
    assert rt.quiet == [True]  # the (empty) record cleared before the start
    lease.release(rt, mine.id)
    assert rt.quiet == [True, False]
    lease.up(rt)
    assert lease.down(rt) == "stopped and their data removed"
    assert rt.quiet == [True, False, True, False]
    rt.start_fails = ServicesUnavailable("no answer")
    with pytest.raises(ServicesUnavailable):
        lease.ensure(rt, run_lease())
    assert rt.quiet[-2:] == [True, True]  # cleared before, and cleaned up after


def test_down_looks_for_an_older_testbeds_state_first(rt: FakeRuntime) -> None:
    lease.up(rt)
    adopted = rt.adopted
    lease.down(rt)
    assert rt.adopted == adopted + 1


def test_down_names_every_live_run_that_keeps_them(
    rt: FakeRuntime, other_run: ProcessIdentity
) -> None:
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        another = ProcessIdentity.of(second.pid)
        assert another is not None
        runs = [new_lease(RUN, other_run), new_lease(RUN, another)]
        recorded(rt, *runs)
        rt.up = True
        who = ", ".join(x.describe() for x in runs)
        assert lease.down(rt) == f"left running: in use by {who}; they stop when it ends"
    finally:
        second.kill()
        second.wait()


def test_down_stops_servers_in_our_state_dir_whatever_the_record_says(rt: FakeRuntime) -> None:
    """A state dir testbed made, with a record that names no backend (lost, or written by an
    interrupted start): down still stops and removes it."""
    StateDir(rt.state_dir).prepare(project=rt.settings.project)
    assert lease.down(rt) == "stopped and their data removed"
    assert not rt.state_dir.exists()


def test_a_record_without_a_checkout_keeps_the_users_lease(rt: FakeRuntime) -> None:
    user = new_lease(USER, None)
    record = Record(backend="native")
    record.set_leases([user])
    found = lease.drop_dead(record)
    assert (found.dead, found.checkout_gone) == ([], None)
    assert record.leases() == [user]


def test_usage_names_the_live_users_and_finds_the_orphaned(
    rt: FakeRuntime, dead: ProcessIdentity
) -> None:
    mine = run_lease()
    record = Record(backend="native")
    record.set_leases([mine, new_lease(RUN, dead)])
    used = lease.usage(record, running=True)
    assert used == lease.Usage((f"used by: {mine.describe()}",), orphaned=False)
    assert used.problems == []
    record.set_leases([new_lease(RUN, dead)])
    orphaned = lease.usage(record, running=True)
    assert orphaned == lease.Usage(("used by: nobody",), orphaned=True)
    assert orphaned.problems == [
        "no run or `python -m testbed up` uses them any more: `python -m testbed reap` removes them"
    ]
    assert lease.usage(record, running=False).orphaned is False  # nothing runs: nothing to reap
