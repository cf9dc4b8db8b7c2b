"""Seeded data: the same seed and test id give the same content; --e2e-seed replays a run;
identities never repeat across workers. (No services: these were harness E2E tests.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from testbed.data.context import DataContext
from tinyapp.factories import MemberFactory, MentoredMemberFactory, TeamFactory

pytest_plugins = ["pytester"]
FACTORIES = (TeamFactory, MemberFactory, MentoredMemberFactory)
BATCH = 10_000


def _snapshot(data: DataContext) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for cls in FACTORIES:
        objs = cls(None, data).build_batch(5)
        cols = [c.key for c in inspect(cls.model).column_attrs]
        out[cls.__name__] = [{c: repr(getattr(o, c, None)) for c in cols} for o in objs]
    return out


def test_same_seed_and_test_id_give_identical_data() -> None:
    first = _snapshot(DataContext(42, "tests/e2e/test_a.py::test_one"))
    again = _snapshot(DataContext(42, "tests/e2e/test_a.py::test_one"))
    assert first == again
    assert set(first) == {cls.__name__ for cls in FACTORIES}


@pytest.mark.parametrize(("seed", "nodeid"), [(43, "test_a.py::test_one"), (42, "test_b.py::x")])
def test_other_seed_or_test_gives_other_data(seed: int, nodeid: str) -> None:
    base = _snapshot(DataContext(42, "test_a.py::test_one"))
    assert _snapshot(DataContext(seed, nodeid)) != base


@pytest.mark.heavy
def test_e2e_seed_replays_a_run(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A separate pytest process with --e2e-seed produces exactly what this process computes
    # for the same seed and test id: the seed alone determines the data.
    here = Path(__file__).parent
    pytester.makeconftest(f"import sys\nsys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]\n")
    pytester.makepyfile(
        test_dump="""
import json, os
from test_data_seed import _snapshot

def test_dump(e2e_data):
    with open(os.environ["DUMP_TO"], "w") as fh:
        json.dump(_snapshot(e2e_data), fh, sort_keys=True)
"""
    )
    target = tmp_path / "dump.json"
    monkeypatch.setenv("DUMP_TO", str(target))
    # Only the testbed plugin: the other entry-point plugins would just slow the child down.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "testbed.plugin", "--e2e-seed=987654321")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["testbed: run *, seed 987654321 *"])
    replayed = json.loads(target.read_text())
    assert replayed == _snapshot(DataContext(987654321, "test_dump.py::test_dump"))


@pytest.mark.heavy
def test_identities_differ_between_simulated_workers() -> None:
    # Eight workers' worth of tests in-process: no identity repeats across them.
    seen: set[str] = set()
    for worker in range(8):
        data = DataContext(1234, f"tests/e2e/test_x.py::test_batch[gw{worker}]")
        batch = {data.email() for _ in range(BATCH)}
        assert len(batch) == BATCH
        assert not seen & batch
        seen |= batch
