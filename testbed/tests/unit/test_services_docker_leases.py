"""The docker backend's lifecycle with a fake `docker`: leases in the project's record decide
who may take the containers down (the last lease does), `reap` takes down projects nobody
uses, and ports held by another checkout's containers are named."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path

import pytest
from fake_docker import COMPOSE_F, PS, Runner, backend, engine_ok, pair, row

from testbed.errors import InUse, PortConflict, ServicesUnavailable
from testbed.services import containers, docker, private
from testbed.services.credentials import Credentials
from testbed.services.docker import DockerBackend
from testbed.services.images import LOCAL_PG, LOCAL_REDIS
from testbed.services.ownership import (
    RUN,
    USER,
    ProcessIdentity,
    Record,
    StateDir,
    holder_identity,
    new_lease,
)


@pytest.fixture(autouse=True)
def healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Health gates that pass at once (no servers behind the fake engine), free ports."""
    monkeypatch.setattr("testbed.services.health.wait_postgres", lambda url, t, **k: "16.15")
    monkeypatch.setattr("testbed.services.health.wait_redis", lambda url, t, **k: "8.1.8")
    monkeypatch.setattr(docker, "port_lock", lambda *a, **k: nullcontext())
    monkeypatch.setattr(containers, "is_free", lambda port: True)
    monkeypatch.setattr(DockerBackend, "_provision", lambda self, creds: None)


class Engine:
    """The fake engine's containers of this project: `up` makes them, `down` removes them."""

    def __init__(self, rows: str = "") -> None:
        self.rows = rows
        self.runner = Runner({**engine_ok(), PS: self.ps, COMPOSE_F: self.compose})

    def ps(self, argv: list[str]) -> tuple[int, str, str]:
        return 0, self.rows, ""

    def compose(self, argv: list[str]) -> tuple[int, str, str]:
        if "down" in argv:
            self.rows = ""
        elif "up" in argv:
            self.rows = pair()
        return 0, "", ""


def run_lease() -> object:
    return new_lease(RUN, holder_identity())


def recorded(b: DockerBackend, *leases: object) -> None:
    """A docker record of b's project with these leases, in its marked state dir."""
    StateDir(b.state_dir).prepare(project=b.settings.project)
    record = Record(backend="docker", project=b.settings.project, checkout=str(b.settings.checkout))
    record.set_leases(list(leases))  # type: ignore[arg-type]
    b.store.write(record)
    Credentials.generate().save(b.state_dir)


def test_start_records_the_lease_and_the_last_release_takes_them_down(tmp_path: Path) -> None:
    fake = Engine()
    b = backend(fake.runner, tmp_path)
    first, second = run_lease(), run_lease()
    eps, started = b.ensure(first)  # type: ignore[arg-type]
    assert started is True
    assert (eps.backend, eps.pg_version, eps.redis_version) == ("docker", "16.15", "8.1.8")
    record = b.store.read()
    assert record["backend"] == "docker"
    assert record["images"] == {"postgres": LOCAL_PG, "redis": LOCAL_REDIS}
    assert [x.id for x in record.leases()] == [first.id]  # type: ignore[attr-defined]
    up_env = fake.runner.envs[fake.runner.calls.index(fake.runner.ran(*COMPOSE_F)[0])]
    assert up_env is not None
    assert up_env["E2E_STATE_DIR"] == str(b.state_dir)  # the label names the record's dir
    assert b.ensure(second) == (eps, False)  # type: ignore[arg-type]
    assert b.release(first.id) is False  # type: ignore[attr-defined]  # another run uses them
    assert fake.runner.compose() == ["up"]
    assert b.release(second.id) is True  # type: ignore[attr-defined]
    assert fake.runner.compose() == ["up", "down"]
    assert not b.state_dir.exists()


def test_a_killed_runs_healthy_containers_are_reused_and_end_with_the_new_run(
    tmp_path: Path, dead: ProcessIdentity
) -> None:
    fake = Engine(pair())
    b = backend(fake.runner, tmp_path)
    recorded(b, new_lease(RUN, dead))
    mine = run_lease()
    assert b.ensure(mine)[1] is False  # type: ignore[arg-type]
    assert [x.id for x in b.store.read().leases()] == [mine.id]  # type: ignore[attr-defined]
    assert b.status().healthy
    assert b.release(mine.id) is True  # type: ignore[attr-defined]
    assert fake.runner.compose() == ["down"]


def test_healthy_containers_whose_state_dir_is_gone_are_replaced(tmp_path: Path) -> None:
    """A wiped state dir (a CI job's container, a reboot) crashed the next run with
    FileNotFoundError on state.json.tmp; their passwords went with it, so they are replaced
    by containers with new ones in a new marked state dir."""
    fake = Engine(pair(state_dir=str(tmp_path / "state")))
    b = backend(fake.runner, tmp_path)
    assert not b.state_dir.exists()
    mine = run_lease()
    assert b.ensure(mine)[1] is True  # type: ignore[arg-type]
    assert fake.runner.compose() == ["down", "up"]
    assert StateDir(b.state_dir).is_ours()
    assert b.credentials() is not None
    assert [x.id for x in b.store.read().leases()] == [mine.id]  # type: ignore[attr-defined]
    assert b.release(mine.id) is True  # type: ignore[attr-defined]
    assert fake.runner.compose() == ["down", "up", "down"]
    assert not b.state_dir.exists()


def test_unhealthy_containers_a_live_run_uses_are_not_pulled_away(tmp_path: Path) -> None:
    fake = Engine(pair(state="exited"))
    b = backend(fake.runner, tmp_path)
    recorded(b, run_lease())
    with pytest.raises(InUse, match=r"do not answer, and run pid \d+ .* still uses them"):
        b.ensure(run_lease())  # type: ignore[arg-type]
    assert fake.runner.compose() == []


def test_unhealthy_containers_nobody_uses_are_replaced_keeping_make_up(
    tmp_path: Path, dead: ProcessIdentity
) -> None:
    fake = Engine(pair(state="exited"))
    b = backend(fake.runner, tmp_path)
    user = new_lease(USER, None)
    recorded(b, new_lease(RUN, dead), user)
    assert b.ensure(run_lease())[1] is True  # type: ignore[arg-type]
    assert fake.runner.compose() == ["down", "up"]
    assert [x.kind for x in b.store.read().leases()] == [USER, RUN]  # `make up` kept


def test_containers_on_other_ports_are_not_moved(tmp_path: Path) -> None:
    fake = Engine(pair())
    b = backend(fake.runner, tmp_path, E2E_PG_PORT="15433", E2E_REDIS_PORT="16380")
    with pytest.raises(InUse, match=r"already run on other ports .*5433"):
        b.ensure(run_lease())  # type: ignore[arg-type]
    assert fake.runner.compose() == []


def test_native_services_of_this_checkout_are_not_replaced(tmp_path: Path) -> None:
    b = backend(Engine().runner, tmp_path)
    StateDir(b.state_dir).prepare(project=b.settings.project)
    record = Record(backend="native")
    record.set_process("postgres", holder_identity())
    b.store.write(record)
    with pytest.raises(InUse, match="native services are recorded"):
        b.ensure(run_lease())  # type: ignore[arg-type]


def test_a_state_dir_of_another_project_is_never_used_or_taken_down(tmp_path: Path) -> None:
    fake = Engine(pair())
    b = backend(fake.runner, tmp_path)
    StateDir(b.state_dir).prepare(project="shop-e2e-0badc0de")
    for call in (lambda: b.ensure(run_lease()), b.down):  # type: ignore[arg-type]
        with pytest.raises(InUse, match="belongs to project shop-e2e-0badc0de"):
            call()
    assert fake.runner.compose() == []
    assert StateDir(b.state_dir).project() == "shop-e2e-0badc0de"


def test_make_down_leaves_them_to_a_live_run_and_takes_them_down_otherwise(
    tmp_path: Path, other_run: ProcessIdentity
) -> None:
    fake = Engine(pair())
    b = backend(fake.runner, tmp_path)
    recorded(b, new_lease(USER, None), new_lease(RUN, other_run))
    assert b.down().startswith("left running: in use by run pid")
    assert fake.runner.compose() == []
    assert [x.kind for x in b.store.read().leases()] == [RUN]  # the user's lease ended
    recorded(b, new_lease(USER, None))
    assert b.down() == "stopped and their data removed"
    assert fake.runner.compose() == ["down"]
    assert not b.state_dir.exists()


def test_a_server_of_another_major_is_refused_and_taken_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("testbed.services.health.wait_postgres", lambda url, t, **k: "15.8")
    fake = Engine()
    fake.runner = Runner(
        {**engine_ok(images=("pg:15", LOCAL_REDIS)), PS: fake.ps, COMPOSE_F: fake.compose}
    )
    b = backend(fake.runner, tmp_path, E2E_PG_IMAGE="pg:15")
    with pytest.raises(ServicesUnavailable, match=r"image pg:15 runs PostgreSQL 15.8, not 16.x"):
        b.ensure(run_lease())  # type: ignore[arg-type]
    assert fake.runner.compose() == ["up", "down"]  # started, then taken down again
    assert not b.state_dir.exists()


def test_port_held_by_another_checkouts_container_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "is_free", lambda port: port != 15433)
    theirs = row("postgres-e2e", 15433, project="shop-e2e-0badc0de", checkout="/src/theirs")

    def ps(argv: list[str]) -> tuple[int, str, str]:
        return (0, theirs, "") if "label=dev.testbed.project" in argv else (0, "", "")

    runner = Runner({**engine_ok(), PS: ps})
    with pytest.raises(PortConflict) as caught:
        backend(runner, tmp_path, E2E_PG_PORT="15433", E2E_REDIS_PORT="16380").ensure(
            run_lease()  # type: ignore[arg-type]
        )
    text = str(caught.value)
    assert text.startswith("port 15433 for PostgreSQL is held by the testbed containers of ")
    assert "compose project shop-e2e-0badc0de" in text
    assert "run `python -m testbed down` in /src/theirs" in text
    assert "E2E_PG_PORT=" in text
    assert runner.compose() == []


def test_reap_takes_down_only_projects_nobody_uses(
    tmp_path: Path, dead: ProcessIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(private, "base_dir", lambda: tmp_path)  # reap judges only the user's base

    def project(
        name: str, *leases: object, state: str = "running", checkout: Path = tmp_path
    ) -> str:
        state_dir = tmp_path / name
        StateDir(state_dir).prepare(project=name)
        record = Record(backend="docker", project=name, checkout=str(checkout))
        record.set_leases(list(leases))  # type: ignore[arg-type]
        (state_dir / "state.json").write_text(json.dumps(record))
        return pair(project=name, state_dir=str(state_dir), state=state)

    here = os.readlink("/proc/self/ns/mnt")  # this process's view of the filesystem
    assert here.startswith("mnt:[")
    listing = "\n".join(
        [
            project("a-dead", new_lease(RUN, dead)),
            project("b-live", run_lease()),
            project("c-user", new_lease(USER, None)),
            project("d-gone-checkout", new_lease(USER, None), checkout=tmp_path / "deleted"),
            pair(project="e-no-record", state_dir=str(tmp_path / "missing"), mount_ns=here),
            # A run in a container sharing the engine (a CI job): its state dir is in its own
            # filesystem, not missing. Seen from here it looks like e-no-record; it is in use.
            pair(project="h-in-a-job", state_dir=str(tmp_path / "missing"), mount_ns="mnt:[1]"),
            pair(project="f-old-running"),  # no state dir label: an older testbed's, running
            pair(project="g-old-stopped", state="exited"),
        ]
    )
    networks = "".join(  # the state dir and mount namespace labels JSON-quoted, as reap asks
        f"{name}_default\t{json.dumps(str(tmp_path / name))}\t{json.dumps(ns)}\n"
        for name, ns in (("a-dead", here), ("b-live", here), ("h-in-a-job", "mnt:[1]"))
    )
    runner = Runner(
        {
            **engine_ok(),
            PS: (0, listing, ""),
            ("docker", "network", "ls"): (0, networks, ""),
            ("docker", "logs"): (0, "FATAL: the end\n", ""),
        }
    )
    said: list[str] = []
    b = backend(runner, tmp_path)
    b.say = said.append
    removed = b.reap()
    downs = [c[5] for c in runner.ran(*COMPOSE_F)]
    assert downs == ["a-dead", "d-gone-checkout", "e-no-record", "g-old-stopped"]
    assert f"container a-dead-postgres-e2e-1 (its run (pid {dead.pid}) is dead)" in removed
    assert any("its checkout" in r and "deleted is gone" in r for r in removed)
    assert any("e-no-record" in r and "no record of who uses them" in r for r in removed)
    assert not (tmp_path / "a-dead").exists()  # its marked state dir went with it
    assert (tmp_path / "b-live" / "state.json").exists()
    assert runner.ran("docker", "network", "rm") == [["docker", "network", "rm", "a-dead_default"]]
    # A stopped container's log tail is shown before `down` removes it with its log.
    assert any("g-old-stopped-redis-e2e-1 is exited" in s and "FATAL: the end" in s for s in said)


def test_logs_are_written_to_the_state_dir_by_service(tmp_path: Path) -> None:
    fake = Engine(pair())
    fake.runner.answers[("docker", "logs")] = (0, "ready to accept connections\n", "")
    b = backend(fake.runner, tmp_path)
    assert b.logs() == {}  # no marked state dir: nothing of ours to write into
    recorded(b, run_lease())
    logs = b.logs()
    assert logs == {"postgres": b.state_dir / "postgres.log", "valkey": b.state_dir / "valkey.log"}
    assert logs["postgres"].read_text() == "ready to accept connections\n"
