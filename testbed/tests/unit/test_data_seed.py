"""Seeded data: the same seed and test id give the same content; --e2e-seed replays a run;
identities never repeat across workers. (No services: these were harness E2E tests.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from replayed_run import REPLAY_SEED, ReplayedRun
from sqlalchemy import inspect

from testbed.data.context import DataContext
from tinyapp.factories import MemberFactory, MentoredMemberFactory, TeamFactory

FACTORIES = (TeamFactory, MemberFactory, MentoredMemberFactory)
BATCH = 10_000
# Seeds the other data tests use too.
SEED, OTHER_SEED = 1234, 7


def _snapshot(data: DataContext) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for cls in FACTORIES:
        objs = cls(None, data).build_batch(5)
        cols = [c.key for c in inspect(cls.model).column_attrs]
        out[cls.__name__] = [{c: repr(getattr(o, c, None)) for c in cols} for o in objs]
    return out


def test_same_seed_and_test_id_give_identical_data() -> None:
    first = _snapshot(DataContext(SEED, "tests/e2e/test_a.py::test_one"))
    again = _snapshot(DataContext(SEED, "tests/e2e/test_a.py::test_one"))
    assert first == again
    assert set(first) == {cls.__name__ for cls in FACTORIES}


@pytest.mark.parametrize(
    ("seed", "nodeid"), [(OTHER_SEED, "test_a.py::test_one"), (SEED, "test_b.py::x")]
)
def test_other_seed_or_test_gives_other_data(seed: int, nodeid: str) -> None:
    base = _snapshot(DataContext(SEED, "test_a.py::test_one"))
    assert _snapshot(DataContext(seed, nodeid)) != base


def test_e2e_seed_replays_a_run(replayed_run: ReplayedRun) -> None:
    # Another pytest process with --e2e-seed produces exactly what this process computes for
    # the same seed and test id: the seed alone determines the data. (conftest.py starts that
    # process before the first test runs.)
    status, out = replayed_run.result()
    assert status == 0, out
    assert re.search(rf"^testbed: run \S+, seed {REPLAY_SEED} ", out, re.M), out
    assert re.search(r"^1 passed\b", out.splitlines()[-1].strip("= ")), out
    replayed = json.loads(replayed_run.dump.read_text())
    assert replayed == _snapshot(DataContext(REPLAY_SEED, "test_dump.py::test_dump"))


@pytest.mark.heavy
def test_identities_differ_between_simulated_workers() -> None:
    # Eight workers' worth of tests in-process: no identity repeats across them.
    seen: set[str] = set()
    for worker in range(8):
        data = DataContext(SEED, f"tests/e2e/test_x.py::test_batch[gw{worker}]")
        batch = {data.email() for _ in range(BATCH)}
        assert len(batch) == BATCH
        assert not seen & batch
        seen |= batch
