"""Migrations once: a suite's second run restores its worker schemas from the first one's dump,
and a changed migration script (or e2e_schema_cache = false) runs the migrations again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed.services.endpoints import Endpoints

pytest_plugins = ["pytester"]

MIGRATE = """
from pathlib import Path

from alembic import command
from alembic.config import Config


def upgrade(engine):
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
"""
ENV = """
from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
"""
FIRST = """
from alembic import op

revision, down_revision = "0001", None


def upgrade():
    op.execute("CREATE TYPE mood AS ENUM ('calm', 'busy')")
    op.execute("CREATE TABLE rooms (id serial PRIMARY KEY, name text UNIQUE, mood mood)")
    op.execute("INSERT INTO rooms (name, mood) VALUES ('Blue', 'calm'), ('Red', 'busy')")
"""
SECOND = """
from alembic import op

revision, down_revision = "0002", "0001"


def upgrade():
    op.execute("CREATE TABLE bookings (id serial PRIMARY KEY, room_id int REFERENCES rooms)")
"""
TESTS = """
import json
import os

from sqlalchemy import text


def test_schema(e2e_engine, e2e_worker):
    with e2e_engine.connect() as conn:
        columns = conn.execute(text(
            "SELECT table_name || '.' || column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY 1"
        )).scalars().all()
        rooms = conn.execute(text("SELECT name, mood::text FROM rooms ORDER BY id")).all()
        conn.execute(text("INSERT INTO rooms (name) VALUES ('Green')"))  # the sequence is set
    with open(os.environ["RECORD_TO"], "a") as fh:
        fh.write(json.dumps({"columns": columns, "rooms": [list(r) for r in rooms]}) + "\\n")
"""


def _app(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, eps: Endpoints, ini: str = ""
) -> Path:
    package = pytester.path / "src" / "hotel"
    (package / "migrations" / "versions").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrate.py").write_text(MIGRATE)
    (package / "migrations" / "env.py").write_text(ENV)
    (package / "migrations" / "versions" / "0001.py").write_text(FIRST)
    (package / "migrations" / "versions" / "0002.py").write_text(SECOND)
    (pytester.path / "e2e").mkdir()
    (pytester.path / "e2e" / "test_schema.py").write_text(TESTS)
    pytester.makeini(f"[pytest]\npythonpath = src\ne2e_schema_setup = hotel.migrate:upgrade\n{ini}")
    env = {
        "E2E_BACKEND": "external",
        "E2E_DATABASE_URL": eps.database_url,
        "E2E_REDIS_URL": eps.redis_url,
        "E2E_REQUIRE_SERVICES": "1",
        "RECORD_TO": str(pytester.path / "records.jsonl"),
        "PYTEST_ADDOPTS": "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("E2E_SCHEMA_CACHE", raising=False)
    return package


def _run(pytester: pytest.Pytester, *args: str) -> tuple[list[str], list[dict[str, object]]]:
    """(each worker's setup: 'restored' or 'built', what each test saw)."""
    record = pytester.path / "records.jsonl"
    record.unlink(missing_ok=True)
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "e2e", *args
    )
    result.assert_outcomes(passed=1)
    line = next(x for x in result.outlines if x.startswith("schemas made"))
    sources = [
        "restored" if part.endswith(" restored") else "built"
        for part in re.split(r",\s*", line.split(":", 1)[1])
    ]
    return sources, [json.loads(x) for x in record.read_text().splitlines()]


@pytest.mark.heavy
@pytest.mark.timeout(900)  # four pytest runs of a small suite
def test_second_run_restores_and_a_changed_migration_rebuilds(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, e2e_docker_compose: Endpoints
) -> None:
    package = _app(pytester, monkeypatch, e2e_docker_compose)
    built, first = _run(pytester)
    assert built == ["built"]
    restored, second = _run(pytester)
    assert restored == ["restored"]
    # The restored schema is the migrated one: tables, enum, seed rows, a working sequence.
    assert second == first
    assert first[0]["rooms"] == [["Blue", "calm"], ["Red", "busy"]]
    assert "bookings.room_id" in first[0]["columns"]

    # A changed migration script is a new input: the migrations run, the new column is there.
    script = package / "migrations" / "versions" / "0002.py"
    script.write_text(
        script.read_text().replace("REFERENCES rooms", "REFERENCES rooms, nights int")
    )
    rebuilt, third = _run(pytester)
    assert rebuilt == ["built"]
    assert "bookings.nights" in third[0]["columns"]

    # With the cache off, the migrations run although a dump of these inputs exists.
    monkeypatch.setenv("E2E_SCHEMA_CACHE", "false")
    uncached, fourth = _run(pytester)
    assert uncached == ["built"]
    assert fourth == third
