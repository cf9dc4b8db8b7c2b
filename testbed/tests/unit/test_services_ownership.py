"""The ownership module's details that decide who may stop or delete what: identities and their
titles, frozen processes, lease records, state-dir markers, and the project lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from testbed.config import load_settings
from testbed.errors import InUse, UnsafePath, UsageError
from testbed.services import ownership as own
from testbed.services import portlock, private

# The stand-in servers: this interpreter sleeping (no `sleep` from PATH); its title as recorded.
SLEEPER_TITLE = f"{sys.executable} -c import time; time.sleep(60)"


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's base (state dirs, locks) under tmp_path."""
    found = tmp_path / "base"
    monkeypatch.setattr(private, "base_dir", lambda: found)
    return found


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A `sleep` process standing in for a server; killed afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    yield proc
    proc.kill()
    proc.wait()


def _identity(pid: int) -> own.ProcessIdentity:
    found = own.ProcessIdentity.of(pid)
    assert found is not None
    return found


def _dead_lease() -> own.Lease:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return own.Lease("dead0000000", own.RUN, own.ProcessIdentity(proc.pid, 1.0, ("true",)), 1.0)


# -- process identity ------------------------------------------------------------------------
def test_identity_records_the_start_time_to_the_hundredth(
    sleeper: subprocess.Popen[bytes],
) -> None:
    ident = _identity(sleeper.pid)
    assert ident.started == round(psutil.Process(sleeper.pid).create_time(), 2)
    # One hundredth off is another process: a check rounded to whole seconds (or 0.1 s) would
    # take it for this one. (Not `started != round(started)`: one start in 100 is on the second.)
    assert own.ProcessIdentity(sleeper.pid, ident.started + 0.01, ident.titles).alive() is False
    assert own.ProcessIdentity(sleeper.pid, ident.started - 0.01, ident.titles).alive() is False


def test_an_empty_command_line_is_asked_again_then_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    class Process:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def oneshot(self) -> contextlib.nullcontext[None]:
            return contextlib.nullcontext()

        def status(self) -> str:
            return psutil.STATUS_RUNNING

        def create_time(self) -> float:
            return 12.345

        def cmdline(self) -> list[str]:
            asked.append(1)
            return ["postgres", "-D", "x"] if len(asked) == 3 else []

    monkeypatch.setattr(own.psutil, "Process", Process)
    monkeypatch.setattr(own, "time", types.SimpleNamespace(sleep=lambda s: None))
    assert own.ProcessIdentity.of(7) == own.ProcessIdentity(7, 12.35, ("postgres -D x",))
    asked.clear()
    Process.cmdline = lambda self: []  # type: ignore[method-assign]
    # Never readable: the identity is still taken (pid and start time), with an empty title.
    assert own.ProcessIdentity.of(7) == own.ProcessIdentity(7, 12.35, ("",))


def test_a_process_showing_another_title_is_not_the_recorded_one(
    sleeper: subprocess.Popen[bytes],
) -> None:
    now = _identity(sleeper.pid)
    assert (
        own.ProcessIdentity(sleeper.pid, now.started, ("valkey-server starting",)).alive() is False
    )
    # An older testbed recorded both titles of a Valkey that rewrote its own: either passes.
    both = own.ProcessIdentity(sleeper.pid, now.started, ("valkey-server starting", SLEEPER_TITLE))
    assert both.alive() is True
    assert own.ProcessIdentity(sleeper.pid, now.started + 5, (SLEEPER_TITLE,)).alive() is False


def test_stopped_means_frozen(sleeper: subprocess.Popen[bytes]) -> None:
    ident = _identity(sleeper.pid)
    assert ident.stopped() is False
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        # Our child: waitpid(WUNTRACED) returns once it has stopped (a bounded loop of yields
        # ran out first on a loaded machine).
        _, status = os.waitpid(sleeper.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        assert ident.stopped() is True
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    sleeper.kill()
    sleeper.wait()
    assert ident.stopped() is False  # gone is not frozen


@pytest.mark.parametrize(
    "data",
    [
        {"pid": 0, "started": 1.0, "titles": ["a"]},
        {"pid": -3, "started": 1.0, "titles": ["a"]},
        {"pid": "7", "started": 1.0, "titles": ["a"]},
        {"pid": False, "started": 1.0, "titles": ["a"]},
        {"pid": 7, "started": None, "titles": ["a"]},
        {"pid": 7, "started": 1.0, "titles": []},
        {"pid": 7, "started": 1.0, "titles": "a"},
        "pid 7",
    ],
)
def test_malformed_recorded_identities_are_never_trusted(data: object) -> None:
    assert own.ProcessIdentity.from_json(data) is None


def test_a_recorded_identity_parses() -> None:
    assert own.ProcessIdentity.from_json({"pid": 1, "started": 2, "titles": ["a", 3]}) == (
        own.ProcessIdentity(1, 2.0, ("a", "3"))
    )


def test_holder_identity_takes_any_live_pid_and_refuses_others() -> None:
    assert own.holder_identity(1).pid == 1  # pid 1 is a process like any other
    assert own.holder_identity().pid == os.getpid()
    for pid in (0, -1):
        with pytest.raises(UsageError, match=f"owner pid {pid} is not a running process"):
            own.holder_identity(pid)


# -- leases and the record ----------------------------------------------------------------------
def test_lease_json_round_trip_and_defaults() -> None:
    lease = own.new_lease(own.RUN, own.holder_identity())
    assert len(lease.id) == 12
    assert own.Lease.from_json(lease.to_json()) == lease
    user = own.Lease.from_json({"kind": own.USER, "id": "u"})
    assert user == own.Lease("u", own.USER, None, 0.0)
    assert user.describe().startswith("the user (")
    assert lease.describe().startswith(f"run pid {os.getpid()} (since ")
    for bad in ([1], "run", None, {"kind": "other"}, {"kind": own.RUN, "holder": None}):
        assert own.Lease.from_json(bad) is None
    with pytest.raises(UsageError, match="unknown lease kind"):
        own.new_lease("admin", None)
    with pytest.raises(UsageError, match="needs the run's process"):
        own.new_lease(own.RUN, None)


def test_dropping_leases_says_whether_there_was_one() -> None:
    record = own.Record()
    lease = record.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    assert record.drop_lease("nope") is False
    assert record.drop_user_lease() is False
    record.add_lease(own.new_lease(own.USER, None))
    assert record.drop_user_lease() is True
    assert record.drop_lease(lease.id) is True
    assert record.leases() == []


def test_releasing_the_last_live_lease_ignores_dead_ones() -> None:
    record = own.Record()
    mine = record.add_lease(own.new_lease(own.RUN, own.holder_identity()))
    record.set_leases([*record.leases(), _dead_lease()])
    assert own.release_lease(record, mine.id) is True  # the dead run's lease was reaped
    assert record.leases() == []


def test_down_reaps_dead_leases_and_reports_nobody() -> None:
    record = own.Record()
    record.add_lease(own.new_lease(own.USER, None))
    record.set_leases([*record.leases(), _dead_lease()])
    assert own.request_down(record) == []
    assert record.leases() == []


def test_new_record_names_what_runs_and_where(tmp_path: Path) -> None:
    settings = load_settings({}, pg_port=25433, redis_port=25380, project="p-e2e")
    record = own.new_record("native", settings, tmp_path, pg_version="16.4")
    assert isinstance(record, own.Record)
    assert {k: v for k, v in record.items() if k != "started_at"} == {
        "backend": "native",
        "project": "p-e2e",
        "checkout": str(settings.checkout),
        "state_dir": str(tmp_path),
        "pg_port": 25433,
        "redis_port": 25380,
        "pg_version": "16.4",
    }
    assert record["started_at"] > 0


# -- state dirs -----------------------------------------------------------------------------------
def test_the_marker_names_the_project_and_what_was_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "state"
    own.StateDir(path).prepare(project="p")
    assert [p.name for p in path.iterdir()] == [".testbed-state"]  # the name older dirs carry
    marker = json.loads((path / own.MARKER).read_text())
    assert marker == {"project": "p", "created": [str(path), str(tmp_path / "a")]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_remove_lists_what_it_removed_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not ours")
    state = own.StateDir(tmp_path / "state")
    state.prepare(project="p")
    (state.path / "pg").mkdir()
    (state.path / "pg" / "data").write_text("x")
    (state.path / "log").write_text("x")
    (state.path / "link").symlink_to(outside)
    removed = state.remove()
    assert removed == [str(state.path / n) for n in ("link", "log", "pg")]
    assert (outside / "keep").read_text() == "not ours"
    assert not state.path.exists()


def test_a_garbled_marker_makes_the_dir_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    (path / own.MARKER).write_text("not json")
    (path / "log").write_text("x")
    assert own.StateDir(path).remove() == []
    assert (path / "log").is_file()


def test_a_state_dir_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("x")
    with pytest.raises(UsageError, match="exists and is not a directory"):
        own.StateDir(path).prepare(project="p")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePath, match="symbolic link"):
        own.StateDir(link).prepare(project="p")


def test_read_record_of_a_marked_dir_without_a_record(tmp_path: Path) -> None:
    own.StateDir(tmp_path / "s").prepare(project="p")
    record = own.read_record(tmp_path / "s")
    assert isinstance(record, own.Record)
    assert record == {}
    (tmp_path / "s" / own.RECORD).write_text("[1, 2]")
    assert own.read_record(tmp_path / "s") == {}


# -- the project lock ---------------------------------------------------------------------------
def test_the_project_lock_is_exclusive_and_created_where_missing(
    tmp_path: Path, base: Path
) -> None:
    store = own.Store(tmp_path / "state")
    lock = store.lock_file
    with store.locked() as held:
        assert held is True
        # Another process's open file of it: the lock is taken.
        with lock.open("a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with own.Store(tmp_path / "state").locked(wait=False) as again:
            assert again is False
    with store.locked(wait=False) as free:
        assert free is True


def test_the_record_is_written_whole_and_read_back(tmp_path: Path) -> None:
    store = own.Store(tmp_path / "state")
    store.dir.prepare(project="p")
    store.write(own.Record(backend="native", leases=[]))
    assert store.read() == {"backend": "native", "leases": []}
    assert sorted(p.name for p in store.dir.path.iterdir()) == [own.MARKER, own.RECORD]


def test_the_project_lock_waits_by_default(tmp_path: Path, base: Path) -> None:
    store = own.Store(tmp_path / "state")
    with store.locked():
        lock = store.lock_file  # made on first use
    got = threading.Event()

    def take() -> None:
        with store.locked() as held:
            if held:
                got.set()

    with lock.open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # another process holds it
        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        stat_file = Path(f"/proc/self/task/{taker.native_id}/stat")
        deadline = 500
        while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "S" and deadline:
            deadline -= 1
            threading.Event().wait(0.005)
        assert not got.is_set()  # asleep in flock, waiting
        fcntl.flock(other, fcntl.LOCK_UN)
    assert got.wait(5)
    taker.join(5)


def test_an_unreadable_command_line_with_the_recorded_start_is_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An exiting process, or one whose command line we may not read, shows an empty one.
    now = own.ProcessIdentity(4242, 5.0, ("",))
    monkeypatch.setattr(own.ProcessIdentity, "of", classmethod(lambda cls, pid: now))
    assert own.ProcessIdentity(4242, 5.0, ("postgres -D x",)).alive() is True
    assert own.ProcessIdentity(4242, 6.0, ("postgres -D x",)).alive() is False


_GOOD = {"backend": "native", "project": "p-e2e", "checkout": "/src", "pg_port": 5433}


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"backend": "docker"}, True),
        ({"pg_port": 65535, "redis_port": 1}, True),
        ({"backend": "podman"}, False),
        ({"project": "../x"}, False),
        ({"state_dir": "/elsewhere"}, False),
        ({"checkout": 7}, False),
        ({"pg_port": 0}, False),
        ({"redis_port": 65536}, False),
        ({"pg_port": True}, False),
        ({"pg_port": "5433"}, False),
        ({"processes": []}, False),
        ({"leases": {}}, False),
        ({"processes": {"postgres": {"pid": "x"}}}, False),
        ({"leases": [{"kind": "other"}]}, False),
    ],
)
def test_a_record_is_used_only_when_every_field_is_valid(
    tmp_path: Path, change: dict[str, Any], valid: bool
) -> None:
    state = own.StateDir(tmp_path / "s")
    state.prepare(project="p-e2e")
    data = {**_GOOD, "state_dir": str(state.path), **change}
    (state.path / own.RECORD).write_text(json.dumps(data))
    assert own.read_record(state.path) == (data if valid else {})


def test_the_lock_of_a_removed_state_dir_goes_with_it(tmp_path: Path, base: Path) -> None:
    """`down` removes the state dir under the lock: the lock file goes too (none pile up)."""
    store = own.Store(tmp_path / "state")
    store.dir.prepare(project="p")
    with store.locked():
        lock = next((base / own.LOCKS).iterdir())
        shutil.rmtree(store.dir.path)
    assert not lock.exists()
    with store.locked(wait=False) as again:  # a later holder makes a new one
        assert again is True


def test_a_waiter_never_holds_a_removed_lock_file(tmp_path: Path) -> None:
    """A lock file removed (and made anew) while a waiter blocked on it no longer counts."""
    path = tmp_path / "x.lock"
    path.touch()
    fd = os.open(path, os.O_RDWR)
    try:
        assert portlock.is_current(fd, path)
        path.unlink()
        assert not portlock.is_current(fd, path)
        path.touch()
        assert not portlock.is_current(fd, path)
    finally:
        os.close(fd)


_TAKE_AND_FREEZE = (
    "import fcntl, os, signal, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "os.kill(os.getpid(), signal.SIGSTOP)\n"
)


def _outcome_behind_a_frozen_holder(lock: Path, take: Callable[[], object]) -> BaseException:
    """What take() (which takes the lock at lock) ends with while another process, stopped,
    holds that lock: it must end, with an error, rather than wait for ever."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _TAKE_AND_FREEZE, str(lock)], stdout=subprocess.PIPE, text=True
    )
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def run() -> None:
        try:
            take()
            outcome.append(None)
        except BaseException as error:  # the outcome to judge, whatever it is
            outcome.append(error)
        done.set()

    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        threading.Thread(target=run, daemon=True).start()
        assert done.wait(15), "still waiting for a frozen holder"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    error = outcome[0]
    assert isinstance(error, InUse), error
    assert f"pid {holder.pid}" in str(error)
    assert f"kill -CONT {holder.pid}" in str(error)
    return error


def test_a_frozen_holder_of_the_lock_is_named_not_waited_for_forever(
    tmp_path: Path, base: Path
) -> None:
    """A command stopped while it holds the state dir's lock (Ctrl-Z on `up` in another terminal,
    a SIGSTOPped run) held every later run, `down` and `reap` of that checkout, silently and
    for ever. Now the waiter says which process it is and how to let it go on."""
    store = own.Store(tmp_path / "state")
    store.dir.prepare(project="p")
    with store.locked():
        lock = store.lock_file

    def take() -> None:
        with store.locked():
            pass

    error = _outcome_behind_a_frozen_holder(lock, take)
    assert "the lock of the state dir" in str(error)


def test_a_frozen_holder_of_the_binaries_cache_lock_is_named(tmp_path: Path) -> None:
    """The same for the binaries cache, shared by every checkout: a `make up` stopped while it
    downloads held every other checkout's first run."""
    from testbed.services import binaries

    cache = tmp_path / "cache"

    def take() -> None:
        with binaries.cache_lock(cache):
            pass

    binaries.make_cache_dir(cache)
    error = _outcome_behind_a_frozen_holder(cache / ".lock", take)
    assert "the binaries cache lock" in str(error)


def test_the_lock_holder_is_read_from_the_kernels_lock_table(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/locks names the holder; one in another pid namespace shows as pid 0: nobody here."""
    store = own.Store(tmp_path / "state")
    store.dir.prepare(project="p")
    with store.locked():
        assert portlock.lock_holder(store.lock_file) == os.getpid()
    st = store.lock_file.stat()
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    table = tmp_path / "locks"
    table.write_text(f"1: FLOCK  ADVISORY  WRITE 0 {where} 0 EOF\n")
    real = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda p, *a, **k: real(table if str(p) == "/proc/locks" else p, *a, **k)
    )
    assert portlock.lock_holder(store.lock_file) is None


def test_a_frozen_holder_of_a_schema_template_build_is_named(tmp_path: Path) -> None:
    """The same for a schema template's build lock, shared by every run on the services: a run
    stopped while it builds one held every other run's workers."""
    from testbed.isolation.templates import TemplateCache

    cache = TemplateCache(tmp_path / "templates")
    (tmp_path / "templates").mkdir(mode=0o700)

    def take() -> None:
        with cache.building("d1"):
            pass

    error = _outcome_behind_a_frozen_holder(cache.path("d1").with_suffix(".lock"), take)
    assert "build lock" in str(error)


# -- mutation survivors (issue 21) ------------------------------------------------------------
def _marked_for(state: own.StateDir, project: str, checkout: object) -> None:
    state.prepare(project=project)
    record = {"backend": "native", "project": project, "state_dir": str(state.path)}
    if checkout is not None:
        record["checkout"] = checkout
    (state.path / own.RECORD).write_text(json.dumps(record))


def test_check_refuses_a_state_dir_of_another_project_naming_its_checkout(tmp_path: Path) -> None:
    state = own.StateDir(tmp_path / "s")
    _marked_for(state, "p-other", "/src/other")
    state.check("p-other")  # its own project passes
    with pytest.raises(InUse) as caught:
        state.check("p-mine")
    assert str(caught.value) == (
        f"state dir {state.path} belongs to project p-other, not p-mine: run "
        "`python -m testbed down` in /src/other first, or give this project its own "
        "E2E_STATE_DIR (or unset it)"
    )


@pytest.mark.parametrize("checkout", [None, ""])
def test_without_a_recorded_checkout_the_refusal_says_in_that_project(
    tmp_path: Path, checkout: object
) -> None:
    state = own.StateDir(tmp_path / "s")
    _marked_for(state, "p-other", checkout)
    with pytest.raises(InUse, match=r"`python -m testbed down` in that project first"):
        state.check("p-mine")


def test_prepare_refuses_a_state_dir_of_another_project(tmp_path: Path) -> None:
    state = own.StateDir(tmp_path / "s")
    state.prepare(project="p-other")
    with pytest.raises(InUse, match="belongs to project p-other, not p-mine"):
        state.prepare(project="p-mine")


def test_check_refuses_a_dir_others_may_write(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.mkdir(mode=0o700)
    path.chmod(0o777)
    with pytest.raises(UnsafePath) as caught:
        own.StateDir(path).check("p")
    assert str(caught.value) == (
        f"refusing the state dir {path}: group or others may write it (mode 777); "
        "choose a directory only you can write with E2E_STATE_DIR (or unset it)"
    )


def test_check_and_prepare_refuse_a_state_dir_behind_an_unsafe_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path is refused even though the directory itself is private.
    path = tmp_path / "s"
    path.mkdir(mode=0o700)
    monkeypatch.setattr(private, "path_problem", lambda p: "a parent others may write")
    state = own.StateDir(path)
    assert state.trusted() is False
    expected = (
        f"refusing the state dir {path}: a parent others may write; "
        "choose a directory only you can write with E2E_STATE_DIR (or unset it)"
    )
    for act in (lambda: state.check("p"), lambda: state.prepare(project="p")):
        with pytest.raises(UnsafePath) as caught:
            act()
        assert str(caught.value) == expected


def test_a_marker_cannot_send_remove_outside_the_state_dir(tmp_path: Path) -> None:
    state = own.StateDir(tmp_path / "s")
    state.prepare(project="p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = {"project": "p", "created": [str(state.path), str(elsewhere), "relative"]}
    state.marker.write_text(json.dumps(marker))
    state.remove()
    assert elsewhere.is_dir()
    assert not state.path.exists()


@pytest.mark.parametrize(
    "data",
    [
        {"kind": own.USER, "id": 7, "since": 1.0},
        {"kind": own.USER, "id": "abc", "since": "yesterday"},
    ],
)
def test_a_lease_with_a_bad_id_or_start_is_malformed(data: dict[str, Any]) -> None:
    assert own.Lease.from_json(data) is None


def _granted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, int]]:
    calls: list[tuple[Path, int]] = []
    monkeypatch.setattr(private, "grant_traverse", lambda path, gid: calls.append((path, gid)))
    return calls


def test_prepare_grants_traverse_on_an_adopted_or_marked_dir_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s"
    path.mkdir(mode=0o700)
    granted = _granted(monkeypatch)
    own.StateDir(path).prepare(project="p", traverse_gid=4321)  # adopted while empty
    assert granted == [(path, 4321)]
    own.StateDir(path).prepare(project="p", traverse_gid=4322)  # already ours
    assert granted == [(path, 4321), (path, 4322)]
    own.StateDir(path).prepare(project="p")
    assert granted == [(path, 4321), (path, 4322)]


def test_prepare_grants_traverse_on_every_directory_it_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a" / "b"
    granted = _granted(monkeypatch)
    own.StateDir(path).prepare(project="p", traverse_gid=4321)
    assert {p for p, _ in granted} == {tmp_path / "a", path}
    assert {gid for _, gid in granted} == {4321}


def test_a_state_dir_in_the_base_never_counts_the_base_as_created(base: Path) -> None:
    # The base holds every project's locks: made as the base, never removed with a state dir.
    state = own.StateDir(base / "state")
    state.prepare(project="p")
    assert json.loads(state.marker.read_text())["created"] == [str(state.path)]
    state.remove()
    assert base.is_dir()


@pytest.mark.parametrize(
    ("error", "shown"),
    [(PermissionError(13, "Permission denied", "x"), "Permission denied"), (OSError("odd"), "odd")],
)
def test_an_os_error_while_preparing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, shown: str
) -> None:
    from testbed.errors import ServicesUnavailable

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(private, "write_atomic", fail)
    path = tmp_path / "s"
    with pytest.raises(ServicesUnavailable) as caught:
        own.StateDir(path).prepare(project="p")
    assert str(caught.value) == (
        f"cannot prepare the state dir {path}: {shown}; choose a writable E2E_STATE_DIR"
    )


def test_the_lock_file_name_is_stable_and_per_state_dir(base: Path) -> None:
    # Two testbed versions side by side must take the same lock for the same state dir.
    assert own.lock_file(Path("/srv/e2e/state")) == base / "locks/bbdd06d2347dc76cbce2fde6.lock"
    assert own.lock_file(Path("/srv/e2e/other")) != own.lock_file(Path("/srv/e2e/state"))


def _opened_locks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    fds: list[int] = []
    real = private.open_lock

    def recording(path: Path) -> int:
        fds.append(real(path))
        return fds[-1]

    monkeypatch.setattr(private, "open_lock", recording)
    return fds


def _all_closed(fds: list[int]) -> bool:
    def closed(fd: int) -> bool:
        try:
            os.fstat(fd)
        except OSError:
            return True
        return False

    return bool(fds) and all(closed(fd) for fd in fds)


def test_the_lock_closes_its_file_when_taken_busy_or_interrupted(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = own.Store(tmp_path / "s")
    store.dir.prepare(project="p")
    fds = _opened_locks(monkeypatch)
    with store.locked() as got:
        assert got is True
    assert _all_closed(fds)

    holder = os.open(base / own.LOCKS / store.lock_file.name, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        fds.clear()
        with store.locked(wait=False) as got:
            assert got is False
        assert _all_closed(fds)

        def interrupted(*args: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(own, "wait_unless_frozen", interrupted)
        fds.clear()
        with pytest.raises(KeyboardInterrupt), store.locked():
            pass
        assert _all_closed(fds)
    finally:
        os.close(holder)


def test_the_lock_is_released_even_while_a_copy_of_its_descriptor_lives(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process forked under the lock holds a copy of the descriptor: closing ours alone would
    # leave the lock held until that process ends.
    store = own.Store(tmp_path / "s")
    store.dir.prepare(project="p")
    copies: list[int] = []
    real = private.open_lock
    monkeypatch.setattr(private, "open_lock", lambda path: _with_copy(real(path), copies))
    try:
        with store.locked():
            pass
        monkeypatch.setattr(private, "open_lock", real)
        with store.locked(wait=False) as again:
            assert again is True
    finally:
        for fd in copies:
            os.close(fd)


def _with_copy(fd: int, copies: list[int]) -> int:
    copies.append(os.dup(fd))
    return fd


def test_a_lock_directory_others_may_write_is_refused(tmp_path: Path, base: Path) -> None:
    locks = base / own.LOCKS
    locks.mkdir(parents=True, mode=0o700)
    locks.chmod(0o777)
    store = own.Store(tmp_path / "s")
    with pytest.raises(UnsafePath) as caught, store.locked():
        pass
    assert str(caught.value) == (
        f"refusing the lock directory {locks}: group or others may write it (mode 777); "
        "remove it and retry"
    )


def test_a_lock_file_replaced_while_waiting_is_closed_and_the_new_one_locked(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a holder that removed the file while we waited: the first check says stale.
    store = own.Store(tmp_path / "s")
    store.dir.prepare(project="p")
    answers = iter([False, True])
    monkeypatch.setattr(own, "is_current", lambda fd, path: next(answers))

    def wait(*args: object) -> None:
        raise AssertionError("waited for a lock nobody else holds: the stale file stayed open")

    monkeypatch.setattr(own, "wait_unless_frozen", wait)
    fds = _opened_locks(monkeypatch)
    open_before = set(os.listdir("/proc/self/fd"))
    with store.locked() as got:
        assert got is True
    assert len(fds) == 2
    assert set(os.listdir("/proc/self/fd")) == open_before
