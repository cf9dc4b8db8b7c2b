"""Seeded data: the same seed and test id give the same content; --e2e-seed replays a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.test_data_factory import ALL_FACTORIES, CRMContactFactory, bind_all
from sqlalchemy import inspect

from testbed.data.context import DataContext
from testbed.data.factory import Factory, FactoryDefinitionError, UnknownField, field

pytest_plugins = ["pytester"]


def _snapshot(data: DataContext) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, factory in bind_all(None, data).items():
        objs = factory.build_batch(5)
        cols = [c.key for c in inspect(factory.model).column_attrs]
        out[name] = [{c: repr(getattr(o, c, None)) for c in cols} for o in objs]
    return out


def test_same_seed_and_test_id_give_identical_data() -> None:
    first = _snapshot(DataContext(42, "tests/e2e/test_a.py::test_one"))
    again = _snapshot(DataContext(42, "tests/e2e/test_a.py::test_one"))
    assert first == again
    assert set(first) == {cls.__name__ for cls in ALL_FACTORIES}


@pytest.mark.parametrize(("seed", "nodeid"), [(43, "test_a.py::test_one"), (42, "test_b.py::x")])
def test_other_seed_or_test_gives_other_data(seed: int, nodeid: str) -> None:
    base = _snapshot(DataContext(42, "test_a.py::test_one"))
    assert _snapshot(DataContext(seed, nodeid)) != base


@pytest.mark.heavy
def test_e2e_seed_replays_a_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    # A separate pytest process with --e2e-seed produces exactly what this process computes
    # for the same seed and test id: the seed alone determines the data.
    factories = Path(__file__).parent
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {str(factories)!r})\n")
    pytester.makepyfile(
        test_dump="""
import json, os
from test_harness_seed import _snapshot

def test_dump(e2e_data):
    with open(os.environ["DUMP_TO"], "w") as fh:
        json.dump(_snapshot(e2e_data), fh, sort_keys=True)
"""
    )
    target = tmp_path / "dump.json"
    pytester._monkeypatch.setenv("DUMP_TO", str(target))
    # Only the testbed plugin: the other entry-point plugins would just slow the child down.
    pytester._monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "testbed.plugin", "--e2e-seed=987654321")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["testbed: run *, seed 987654321 *"])
    replayed = json.loads(target.read_text())
    assert replayed == _snapshot(DataContext(987654321, "test_dump.py::test_dump"))


def test_unknown_override_names_the_valid_fields() -> None:
    factory = CRMContactFactory(None, DataContext(1, "x"))
    with pytest.raises(UnknownField, match=r"no field 'emial'; valid fields: .*email"):
        factory.build(emial="x@example.test")


def test_create_without_a_session_names_the_fixture() -> None:
    with pytest.raises(Exception, match="crm_contact_factory"):
        CRMContactFactory(None, DataContext(1, "x")).create()


def test_factory_definitions_are_checked_against_the_model() -> None:
    from opsdesk.domains.crm.models import Contact

    with pytest.raises(FactoryDefinitionError, match="has no column 'nmae'"):
        type(
            "Bad",
            (Factory,),
            {
                "model": Contact,
                "nmae": field(lambda d, r: "x"),
                "email": field(lambda d, r: "e"),
                "name": field(lambda d, r: ""),
            },
        )
    with pytest.raises(FactoryDefinitionError, match="does not fill email"):
        type("Missing", (Factory,), {"model": Contact, "name": field(lambda d, r: "x")})


def test_build_overrides_win_and_parents_are_built() -> None:
    from fixtures.test_data_factory import CompanyFactory, TaskCommentFactory

    data = DataContext(7, "x")
    company = CompanyFactory(None, data).build(name="Initech")
    contact = CRMContactFactory(None, data).build(company=company, phone=None)
    assert contact.company is company
    assert contact.phone is None
    comment = TaskCommentFactory(None, data).build()
    assert comment.task is not None
    assert comment.task.title
