"""State dirs an older testbed made (a state.json and pid files, no marker): adopted only when the
directory is private to us and the record names this project; servers are recorded only when
their pid is, by command line and working directory, that state dir's own. Process lookups are
faked: the pids below are never signalled, only looked up."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from testbed.services import legacy
from testbed.services import ownership as own
from testbed.services.endpoints import Endpoints

PROJECT = "shop-e2e-old"
PG_PID, VALKEY_PID, RUN_PID = 4_100_001, 4_100_002, 4_100_003
NOBODY = 65534

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")


@dataclass
class Proc:
    title: str
    cwd: Path


@pytest.fixture
def procs(monkeypatch: pytest.MonkeyPatch) -> dict[int, Proc]:
    """The processes by pid, as ProcessIdentity.of and psutil see them (fill it in a test)."""
    table: dict[int, Proc] = {}

    def identity_of(cls: type[own.ProcessIdentity], pid: int) -> own.ProcessIdentity | None:
        found = table.get(pid)
        return own.ProcessIdentity(pid, 1000.0 + pid % 100, (found.title,)) if found else None

    class Process:
        def __init__(self, pid: int) -> None:
            if pid not in table:
                raise psutil.NoSuchProcess(pid)
            self.pid = pid

        def cwd(self) -> str:
            return str(table[self.pid].cwd)

    monkeypatch.setattr(own.ProcessIdentity, "of", classmethod(identity_of))
    monkeypatch.setattr(legacy.psutil, "Process", Process)
    return table


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """A state dir as an older testbed left it: private, with its record and pid files."""
    state = tmp_path / PROJECT
    (state / "pg" / "data").mkdir(parents=True)
    (state / "valkey").mkdir()
    state.chmod(0o700)
    write_record(state, owner="user")
    (state / "postgres.pid").write_text(f"{PG_PID}\n/x/pg/data\n")  # postmaster.pid's layout
    (state / "valkey.pid").write_text(f"{VALKEY_PID}\n")
    return state


def write_record(state: Path, **fields: Any) -> None:
    record = {"backend": "native", "project": PROJECT, "pg_port": 25433, "redis_port": 25380}
    (state / "state.json").write_text(json.dumps({**record, **fields}))


def servers_of(state: Path, procs: dict[int, Proc]) -> None:
    """The state dir's own servers, as an older testbed started them."""
    procs[PG_PID] = Proc(f"/pg/bin/postgres -D {state / 'pg' / 'data'} -p 25433", state / "pg")
    procs[VALKEY_PID] = Proc("valkey-server 127.0.0.1:25380", state / "valkey")


def endpoints(record: own.Record) -> Endpoints:
    port, redis = record["pg_port"], record["redis_port"]
    return Endpoints(
        "native",
        f"postgresql://shop_e2e@127.0.0.1:{port}/shop_e2e",
        f"redis://127.0.0.1:{redis}/0",
        "16.4",
        "8.1.8",
        64,
    )


def adopt(state: Path) -> own.Record:
    """Adopt state for PROJECT; the record as a later read sees it."""
    legacy.adopt(state, PROJECT, own.Store(state), endpoints)
    return own.read_record(state)


# -- adopted ---------------------------------------------------------------------------------------
def test_an_older_testbeds_state_dir_is_marked_and_its_servers_recorded(
    old: Path, procs: dict[int, Proc]
) -> None:
    servers_of(old, procs)
    record = adopt(old)
    assert own.StateDir(old).project() == PROJECT
    assert {name: p.pid for name, p in record.processes().items()} == {
        "postgres": PG_PID,
        "valkey": VALKEY_PID,
    }
    assert record["state_dir"] == str(old)
    assert record["database_url"] == "postgresql://shop_e2e@127.0.0.1:25433/shop_e2e"
    assert record["redis_url"] == "redis://127.0.0.1:25380/0"
    assert "owner" not in record
    assert [lease.kind for lease in record.leases()] == [own.USER]


def test_a_run_that_owned_it_gets_a_run_lease_while_alive(
    old: Path, procs: dict[int, Proc]
) -> None:
    procs[RUN_PID] = Proc("python -m pytest", old.parent)
    write_record(old, owner={"pid": RUN_PID})
    leases = adopt(old).leases()
    assert [(lease.kind, lease.holder.pid if lease.holder else None) for lease in leases] == [
        (own.RUN, RUN_PID)
    ]


@pytest.mark.parametrize(
    "owner",
    [{"pid": RUN_PID}, {"pid": str(RUN_PID)}, {"pid": True}, "somebody", 5, None],
    ids=["dead-run", "pid-text", "pid-bool", "unknown-word", "number", "none"],
)
def test_an_owner_that_is_gone_or_malformed_leaves_no_lease(
    old: Path, procs: dict[int, Proc], owner: object
) -> None:
    write_record(old, owner=owner)
    record = adopt(old)
    assert own.StateDir(old).is_ours()
    assert record.leases() == []


def test_a_record_naming_another_state_dir_is_taken_as_this_ones(
    old: Path, procs: dict[int, Proc], tmp_path: Path
) -> None:
    write_record(old, state_dir=str(tmp_path / "victim"))
    assert adopt(old)["state_dir"] == str(old)


def test_without_both_ports_no_urls_are_recorded(old: Path, procs: dict[int, Proc]) -> None:
    record = json.loads((old / "state.json").read_text())
    del record["redis_port"]
    (old / "state.json").write_text(json.dumps(record))
    called: list[own.Record] = []
    legacy.adopt(old, PROJECT, own.Store(old), lambda r: called.append(r) or endpoints(r))  # type: ignore[func-returns-value]
    assert called == []
    assert "database_url" not in own.read_record(old)


# -- servers that are not provably this state dir's own --------------------------------------------
@pytest.mark.parametrize(
    ("name", "title", "cwd"),
    [
        ("postgres", "/pg/bin/postgres -D {state}/pg/data -p 25433", "{tmp}"),  # wrong dir
        ("postgres", "/pg/bin/postgres -D {state}/pg/data-other -p 1", "{state}/pg"),  # a prefix
        ("postgres", "/pg/bin/postgres -D /elsewhere/pg/data", "{state}/pg"),
        ("valkey", "valkey-server 127.0.0.1:6379", "{state}/valkey"),  # another port
        ("valkey", "valkey-server 127.0.0.1:25380", "{state}/pg"),  # the other server's dir
        ("valkey", "valkey-server 127.0.0.1:253801", "{state}/valkey"),  # the port a prefix
        ("valkey", "valkey-server 127.0.0.1:125380", "{state}/valkey"),  # the port a suffix
        ("valkey", "socat TCP-LISTEN:25380 TCP:127.0.0.1:6379", "{state}/valkey"),  # an argument
        ("valkey", "valkey-server 127.0.0.1:6379 --x :25380", "{state}/valkey"),  # not its place
    ],
    ids=[
        "pg-cwd",
        "pg-data-prefix",
        "pg-other-data",
        "valkey-port",
        "valkey-cwd",
        "valkey-port-prefix",
        "valkey-port-suffix",
        "valkey-port-argument",
        "valkey-port-elsewhere",
    ],
)
def test_a_server_that_is_not_provably_its_own_is_not_recorded(
    old: Path, procs: dict[int, Proc], tmp_path: Path, name: str, title: str, cwd: str
) -> None:
    servers_of(old, procs)
    pid = PG_PID if name == "postgres" else VALKEY_PID
    procs[pid] = Proc(
        title.format(state=old, tmp=tmp_path), Path(cwd.format(state=old, tmp=tmp_path))
    )
    processes = adopt(old).processes()
    assert name not in processes
    assert len(processes) == 1  # the other one is still recorded
    assert own.StateDir(old).is_ours()  # adopted all the same: `down` may remove the dir


@pytest.mark.parametrize(
    "title",
    [
        "/cache/valkey 8.1/bin/valkey-server 127.0.0.1:25380",  # a path with a space
        "valkey-server 127.0.0.1:25380   ",  # the title area padded
    ],
)
def test_valkeys_own_title_naming_the_port_is_recorded(
    old: Path, procs: dict[int, Proc], title: str
) -> None:
    servers_of(old, procs)
    procs[VALKEY_PID] = Proc(title, old / "valkey")
    assert set(adopt(old).processes()) == {"postgres", "valkey"}


@pytest.mark.parametrize(
    "content",
    ["", "not-a-pid\n", "-\n", f"{PG_PID + 999}\n"],
    ids=["empty", "text", "dash", "no-such-process"],
)
def test_a_pid_file_that_names_no_server_is_skipped(
    old: Path, procs: dict[int, Proc], content: str
) -> None:
    servers_of(old, procs)
    (old / "postgres.pid").write_text(content)
    assert set(adopt(old).processes()) == {"valkey"}


def test_a_pid_file_planted_as_a_link_is_not_read(
    old: Path, procs: dict[int, Proc], tmp_path: Path
) -> None:
    servers_of(old, procs)
    (tmp_path / "pid").write_text(f"{PG_PID}\n")
    (old / "postgres.pid").unlink()
    (old / "postgres.pid").symlink_to(tmp_path / "pid")
    assert set(adopt(old).processes()) == {"valkey"}


def test_a_process_that_vanishes_while_looked_at_is_skipped(
    old: Path, procs: dict[int, Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    servers_of(old, procs)

    def gone(self: object) -> str:
        raise psutil.AccessDenied(PG_PID)

    monkeypatch.setattr(legacy.psutil.Process, "cwd", gone)
    assert adopt(old).processes() == {}


# -- not adopted -----------------------------------------------------------------------------------
def not_adopted(state: Path) -> None:
    legacy.adopt(state, PROJECT, own.Store(state), endpoints)
    assert not (state / own.MARKER).exists()
    assert own.read_record(state) == {}


def test_another_projects_state_dir_is_not_adopted(old: Path, procs: dict[int, Proc]) -> None:
    write_record(old, project="crm-e2e-old")
    not_adopted(old)


@pytest.mark.parametrize(
    "content", ["", "not json", "[]", '"shop-e2e-old"', json.dumps({"backend": "native"})]
)
def test_a_missing_or_malformed_record_is_not_adopted(
    old: Path, procs: dict[int, Proc], content: str
) -> None:
    (old / "state.json").write_text(content)
    not_adopted(old)


def test_no_record_at_all_is_not_adopted(old: Path, procs: dict[int, Proc]) -> None:
    (old / "state.json").unlink()
    not_adopted(old)


def test_a_record_planted_as_a_link_is_not_read(
    old: Path, procs: dict[int, Proc], tmp_path: Path
) -> None:
    (tmp_path / "record.json").write_text((old / "state.json").read_text())
    (old / "state.json").unlink()
    (old / "state.json").symlink_to(tmp_path / "record.json")
    not_adopted(old)


def test_a_state_dir_others_may_write_is_not_adopted(old: Path, procs: dict[int, Proc]) -> None:
    old.chmod(0o770)
    servers_of(old, procs)
    not_adopted(old)


def test_a_state_dir_that_is_a_link_is_not_adopted(
    old: Path, procs: dict[int, Proc], tmp_path: Path
) -> None:
    link = tmp_path / "shop-e2e-link"
    link.symlink_to(old)
    legacy.adopt(link, PROJECT, own.Store(link), endpoints)
    assert not (old / own.MARKER).exists()


@as_root
def test_a_state_dir_of_another_user_is_not_adopted(old: Path, procs: dict[int, Proc]) -> None:
    os.chown(old, NOBODY, NOBODY)
    not_adopted(old)


@as_root
def test_a_record_of_another_user_is_not_read(old: Path, procs: dict[int, Proc]) -> None:
    os.chown(old / "state.json", NOBODY, NOBODY)
    not_adopted(old)


def test_a_marked_state_dir_is_left_as_it_is(old: Path, procs: dict[int, Proc]) -> None:
    servers_of(old, procs)
    own.StateDir(old).prepare(project=PROJECT)  # ours already: its record is the truth
    before = (old / "state.json").read_text()
    legacy.adopt(old, PROJECT, own.Store(old), endpoints)
    assert (old / "state.json").read_text() == before
