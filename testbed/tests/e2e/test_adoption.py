"""What a real suite needs from testbed, run as a new user's suite would be (a pytest subprocess
against this run's services): xdist modes, a setup hook, tables made by tests, env URLs."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from testbed.isolation import schema
from testbed.isolation.schema import worker_schema
from testbed.isolation.workers import new_run_id
from testbed.services.endpoints import Endpoints

pytest_plugins = ["pytester"]

CONFTEST = '''
import json
import os

import pytest
from sqlalchemy import text

# An app's conftest that reads its settings once, at import (KeyError when they come late).
DATABASE_URL = os.environ["APP_DATABASE_URL"]
REDIS_URL = os.environ["APP_REDIS_URL"]


def setup(engine):
    """The app's init script: a table and one seed row, once per worker schema."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE setup_runs (id serial PRIMARY KEY, at text)"))
        conn.execute(text("INSERT INTO setup_runs (at) VALUES (current_schema())"))


@pytest.fixture
def record(request, e2e_worker, e2e_engine):
    url_at_import = request.module.URL_AT_IMPORT
    """Write (test, worker, schema seen) for the outer test to check."""
    def write(**extra):
        with e2e_engine.connect() as conn:
            seen = conn.execute(text("SELECT current_schema()")).scalar_one()
            runs = conn.execute(text("SELECT count(*) FROM setup_runs")).scalar_one()
        line = dict(test=request.node.name, worker=e2e_worker.worker_id,
                    schema=e2e_worker.schema, seen=seen, setup_runs=runs,
                    url_at_import=url_at_import, url=os.environ.get("APP_DATABASE_URL"),
                    conftest_url=DATABASE_URL, conftest_redis=REDIS_URL,
                    redis=os.environ.get("APP_REDIS_URL"), **extra)
        with open(os.environ["RECORD_TO"], "a") as fh:
            fh.write(json.dumps(line) + "\\n")
    return write
'''

TESTS = """
import os

import pytest
from sqlalchemy import text

URL_AT_IMPORT = os.environ.get("APP_DATABASE_URL")  # a module the app imports at collection


@pytest.mark.xdist_group("a")
@pytest.mark.parametrize("n", range(3))
def test_group_a(record, n):
    record()


@pytest.mark.xdist_group("b")
@pytest.mark.parametrize("n", range(3))
def test_group_b(record, n):
    record()


class TestScope:
    @pytest.mark.parametrize("n", range(3))
    def test_scoped(self, record, n):
        record()


@pytest.mark.committed
def test_makes_a_table(record, e2e_engine):
    with e2e_engine.begin() as conn:
        conn.execute(text("CREATE TABLE made_by_a_test (id int)"))
        conn.execute(text("INSERT INTO made_by_a_test VALUES (1)"))
    record(made_table=True)
"""


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, eps: Endpoints, *args: str
) -> list[dict[str, Any]]:
    pytester.makeconftest(CONFTEST)
    (pytester.path / "functional").mkdir()
    (pytester.path / "functional" / "test_app.py").write_text(TESTS)
    pytester.makeini(
        "[pytest]\ne2e_schema_setup = conftest:setup\ne2e_database_url_env = APP_DATABASE_URL\n"
        "e2e_redis_url_env = APP_REDIS_URL\n"
        "e2e_dirs = functional\n"  # a suite whose E2E tests live elsewhere than e2e/
    )
    out = pytester.path / "records.jsonl"
    env = {
        "E2E_BACKEND": "external",
        "E2E_DATABASE_URL": eps.database_url,
        "E2E_REDIS_URL": eps.redis_url,
        "E2E_REQUIRE_SERVICES": "1",
        "RECORD_TO": str(out),
        "PYTEST_ADDOPTS": "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    monkeypatch.delenv("APP_REDIS_URL", raising=False)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=10)
    run_id = next(
        line.split("run ", 1)[1].split(",", 1)[0]
        for line in result.outlines
        if line.startswith("testbed: run ")
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record in records:
        record["run"] = run_id
    return records


def _check_common(records: list[dict[str, Any]], eps: Endpoints) -> None:
    assert len(records) == 10
    for record in records:
        # Each worker sees its own schema, set up exactly once, and hands the app its URL.
        assert record["seen"] == record["schema"] == f"e2e_{record['run']}_{record['worker']}"
        assert record["setup_runs"] == 1
        assert record["url"] == record["url_at_import"] == record["conftest_url"]
        assert record["redis"] == record["conftest_redis"]  # the worker's own database
        assert f"search_path%3D%22{record['schema']}%22" in record["url"]
    # Nothing of the inner run is left: its schemas went at the end, with the test's table.
    with psycopg.connect(schema.libpq_url(eps.database_url)) as conn:
        assert schema.listed(conn, records[0]["run"]) == []
        assert left_by(conn, records[0]["run"], "made_by_a_test") == []


def left_by(conn: psycopg.Connection[Any], run_id: str, table: str) -> list[str]:
    """Schemas holding `table` that this run must not have left: its own worker schemas, and
    any schema that is no run's worker schema (public included). Other runs' worker schemas are
    theirs: a concurrent test's inner run (another xdist worker of this suite) has the same
    table in e2e_<its run>_master while it runs."""
    rows = conn.execute(
        "SELECT schemaname FROM pg_tables WHERE tablename = %s ORDER BY 1", (table,)
    )
    return [
        name
        for (name,) in rows
        if schema.parse(name) is None or name.startswith(f"{schema.PREFIX}{run_id}_")
    ]


def _same_worker(records: list[dict[str, Any]], prefix: str) -> bool:
    return len({r["worker"] for r in records if r["test"].startswith(prefix)}) == 1


@pytest.mark.heavy
def test_worker_schemas_with_dist_loadgroup(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, e2e_docker_compose: Endpoints
) -> None:
    records = _run(pytester, monkeypatch, e2e_docker_compose, "-n", "2", "--dist", "loadgroup")
    _check_common(records, e2e_docker_compose)
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert _same_worker(records, "test_group_a")
    assert _same_worker(records, "test_group_b")


@pytest.mark.heavy
def test_worker_schemas_with_dist_loadscope(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, e2e_docker_compose: Endpoints
) -> None:
    records = _run(pytester, monkeypatch, e2e_docker_compose, "-n", "2", "--dist", "loadscope")
    _check_common(records, e2e_docker_compose)
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert _same_worker(records, "test_scoped")


def test_a_table_made_by_a_test_is_dropped_with_its_schema_single_process(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, e2e_docker_compose: Endpoints
) -> None:
    records = _run(pytester, monkeypatch, e2e_docker_compose)
    _check_common(records, e2e_docker_compose)
    assert {r["worker"] for r in records} == {"master"}
    assert any(r.get("made_table") for r in records)


def test_what_a_run_left_excludes_another_live_runs_schemas(e2e_docker_compose: Endpoints) -> None:
    """The leftover check looks at this run's schemas and at schemas of no run, never at a live
    run's: test_worker_schemas_with_dist_loadscope failed now and then on e2e_<run>_master, the
    schema of the single-process test's inner run, which another xdist worker had running."""
    ours, theirs = new_run_id(), new_run_id()
    table = f"left_{theirs}"  # a name of its own: concurrent tests' checks never see it
    their_schema, no_runs = worker_schema(theirs, "master"), f"testbed_scratch_{theirs}"
    lock = schema.RunLock(e2e_docker_compose.database_url, theirs)  # a live run: never reaped
    try:
        with psycopg.connect(schema.libpq_url(e2e_docker_compose.database_url)) as conn:
            conn.execute(f"CREATE SCHEMA {their_schema}")
            conn.execute(f"CREATE TABLE {their_schema}.{table} (id int)")
            conn.commit()
            assert left_by(conn, ours, table) == []
            assert left_by(conn, theirs, table) == [their_schema]
            # A table outside every run's schemas (a search_path that missed) is always found.
            conn.execute(f"CREATE SCHEMA {no_runs}")
            conn.execute(f"CREATE TABLE {no_runs}.{table} (id int)")
            conn.commit()
            assert left_by(conn, ours, table) == [no_runs]
    finally:
        with psycopg.connect(
            schema.libpq_url(e2e_docker_compose.database_url), autocommit=True
        ) as conn:
            for name in (their_schema, no_runs):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema.quote(name)} CASCADE")
        lock.release()
