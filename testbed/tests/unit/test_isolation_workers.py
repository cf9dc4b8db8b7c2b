"""Who am I in a run: worker ids, schema, Valkey database and prefixes derived from them."""

from __future__ import annotations

import pytest

from testbed.isolation.workers import (
    CONTROLLER,
    Worker,
    new_run_id,
    new_seed,
    worker_from_input,
)


def test_new_run_ids_and_seeds() -> None:
    ids = {new_run_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 8 and int(i, 16) >= 0 for i in ids)
    seeds = {new_seed() for _ in range(20)}
    assert len(seeds) == 20
    assert all(0 <= s < 2**48 for s in seeds)


def test_the_single_process() -> None:
    worker = worker_from_input(None, run_id="1a2b3c4d")
    assert (worker.worker_id, worker.count, worker.index) == (CONTROLLER, 1, 0)
    assert worker.schema == "e2e_1a2b3c4d_master"
    assert worker.redis_db == 1  # 0 stays free for run-wide keys
    assert worker.prefix == "e2e:1a2b3c4d:master:"
    assert worker.run_prefix == "e2e:1a2b3c4d:"


def test_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    worker = worker_from_input({"workerid": "gw12", "workercount": 16}, run_id="1a2b3c4d")
    assert (worker.worker_id, worker.count, worker.index) == ("gw12", 16, 12)
    assert worker.schema == "e2e_1a2b3c4d_gw12"
    assert worker.redis_db == 13
    assert worker.prefix == "e2e:1a2b3c4d:gw12:"
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    assert worker_from_input({"workerid": "gw0"}, run_id="1a2b3c4d").count == 3
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    assert worker_from_input({"workerid": "gw0"}, run_id="1a2b3c4d").count == 1


def test_an_allocated_database_wins_over_the_index() -> None:
    worker = worker_from_input({"workerid": "gw2", "workercount": 4}, run_id="1a2b3c4d", redis_db=9)
    assert worker.redis_db == 9
    assert Worker("1a2b3c4d", "gw2", 4, allocated_db=0).redis_db == 0  # 0 is a database too


@pytest.mark.parametrize(("run_id", "worker_id"), [("xyz", "gw0"), ("1a2b3c4d", "gw-0")])
def test_bad_ids_are_refused_when_the_worker_is_made(run_id: str, worker_id: str) -> None:
    with pytest.raises(ValueError, match="must be"):
        Worker(run_id, worker_id, 1)
