"""Generated pytest suites for the isolation comparison: one conftest per contender, same tests.

Every suite runs the same test bodies (a company and three deals written through an ORM Session,
committed, read back). Only the `db` fixture differs. Each isolated test runs right after a
baseline test in the same process, and pytest times each phase of each test, so the cost of the
isolation is read off the setup and teardown phases next to the baseline's, not off the noisy
difference of two whole runs.
"""

from __future__ import annotations

from pathlib import Path

# Shared by every contender: pytest's own per-phase durations of every test (setup, call,
# teardown), written at session end. The isolation is what the setup and teardown phases cost
# beyond the baseline's; the call phase is the test body.
COMMON = """
import json
import os

import pytest
from sqlalchemy.orm import Session

from opsdesk import db
from testbed.isolation import schema

URL = os.environ["BENCH_DB_URL"]
SCHEMA = os.environ["BENCH_SCHEMA"]
db.table_names()  # imports every opsdesk model, so Base.metadata knows every table
METADATA = db.Base.metadata
_TIMES = {}


def pytest_runtest_logreport(report):
    _TIMES.setdefault(report.nodeid.rpartition("::")[2], {})[report.when] = report.duration


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"times": _TIMES, "exitstatus": int(exitstatus)}, fh)


def _schema_engine(name, tables=True):
    eng = schema.make_engine(URL, name)
    schema.drop(eng, name)
    schema.create(eng, name, METADATA if tables else None)
    return eng


@pytest.fixture(scope="session")
def shared_conn():
    # The baseline's own schema and connection: no isolation, rows accumulate.
    eng = _schema_engine(SCHEMA + "_base")
    conn = eng.connect()
    yield conn
    conn.close()
    schema.drop(eng, SCHEMA + "_base")
    eng.dispose()


@pytest.fixture
def base_db(shared_conn):
    session = Session(bind=shared_conn)
    yield session
    session.close()
"""

# testbed's own isolation code: the worker schema of testbed.isolation.schema, the sessions of
# testbed.isolation.sessions (the same functions the plugin's fixtures call).
HARNESS = """
from testbed.isolation.sessions import WorkerDatabase, committed_session, rollback_session
from testbed.isolation.workers import Worker, new_run_id


@pytest.fixture(scope="session")
def worker_db():
    worker = Worker(run_id=new_run_id(), worker_id="master", count=1)
    wdb = WorkerDatabase(URL, worker, metadata=METADATA)
    wdb.create()
    yield wdb
    wdb.drop()
"""

CONTENDERS: dict[str, str] = {
    # testbed's default: testbed.isolation.sessions.rollback_session (SQLAlchemy's "join a
    # Session into an external transaction" recipe) on the worker schema that
    # testbed.isolation.sessions.WorkerDatabase creates.
    "default": HARNESS
    + """
@pytest.fixture
def db(worker_db):
    with rollback_session(worker_db.engine) as session:
        yield session
""",
    # testbed's committed mode: testbed.isolation.sessions.committed_session (real commits, then one
    # TRUNCATE ... RESTART IDENTITY CASCADE of the worker's tables).
    "committed": HARNESS
    + """
@pytest.fixture
def db(worker_db):
    with committed_session(worker_db) as session:
        yield session
""",
    # The whole testbed plugin: its real e2e_postgres_db fixture (hooks, run lock, seeding...).
    "plugin": """
@pytest.fixture
def db(e2e_postgres_db):
    return e2e_postgres_db
""",
    # The naive way: fresh tables for every test.
    "naive": """
@pytest.fixture(scope="session")
def naive_conn():
    eng = _schema_engine(SCHEMA + "_naive", tables=False)
    conn = eng.connect()
    yield conn
    conn.close()
    schema.drop(eng, SCHEMA + "_naive")
    eng.dispose()


@pytest.fixture
def db(naive_conn):
    METADATA.create_all(naive_conn)
    naive_conn.commit()
    session = Session(bind=naive_conn)
    yield session
    session.close()
    METADATA.drop_all(naive_conn)
    naive_conn.commit()
""",
    # pytest-postgresql 7: its own `postgresql` fixture over a noproc fixture against our server.
    # The template database gets the tables once (load=); each test gets CREATE DATABASE ...
    # TEMPLATE and DROP DATABASE from the fixture's DatabaseJanitor. One SQLAlchemy engine for the
    # whole session hands out the fixture's psycopg connection, so no per-test engine cost is added.
    "pytest_postgresql": """
from urllib.parse import urlsplit

from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

_U = urlsplit(URL)


def _load_tables(host, port, user, dbname, password):
    auth = f"{user}:{password}" if password else user  # the services require their password
    eng = create_engine(f"postgresql+psycopg://{auth}@{host}:{port}/{dbname}", poolclass=NullPool)
    METADATA.create_all(eng)
    eng.dispose()


def _terminate_own(cur, dbname):
    # The E2E role is no superuser: it may end its own sessions, not autovacuum's (a superuser
    # worker DROP DATABASE stops anyway). pytest-postgresql's janitor tries every session.
    cur.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
        (dbname,),
    )


DatabaseJanitor._terminate_connection = staticmethod(_terminate_own)

postgresql_bench_noproc = factories.postgresql_noproc(
    host=_U.hostname, port=_U.port, user=_U.username, password=_U.password,
    dbname="bench_ppg", load=[_load_tables],
)
postgresql = factories.postgresql("postgresql_bench_noproc")
_CURRENT = []
_ENGINE = create_engine("postgresql+psycopg://", creator=lambda: _CURRENT[-1], poolclass=NullPool)


@pytest.fixture
def db(postgresql):
    _CURRENT.append(postgresql)
    conn = _ENGINE.connect()
    session = Session(bind=conn)
    yield session
    session.close()
    conn.close()
    _CURRENT.pop()
""",
}

# Plugins each contender's pytest run loads: its own only, so the baseline carries none of them.
PLUGINS: dict[str, list[str]] = {
    "default": ["-p", "no:testbed", "-p", "no:pytest_postgresql"],
    "committed": ["-p", "no:testbed", "-p", "no:pytest_postgresql"],
    "plugin": ["-p", "no:pytest_postgresql"],
    "naive": ["-p", "no:testbed", "-p", "no:pytest_postgresql"],
    "pytest_postgresql": ["-p", "no:testbed"],
}

TEST_HEADER = """
from sqlalchemy import func, select

from opsdesk.domains.crm.models import Company, Deal


def _body(db, i):
    company = Company(name=f"Company {i}", domain=f"c{i}.example.com")
    db.add(company)
    db.flush()
    db.add_all(
        [Deal(title=f"Deal {k} of {i}", amount=100 * k + i, company_id=company.id)
         for k in range(3)]
    )
    db.commit()
    count = db.scalar(select(func.count()).select_from(Deal).where(Deal.company_id == company.id))
    assert count == 3
"""

# The plugin contender's testbed settings: opsdesk's tables in every worker schema.
PYTEST_INI = """[pytest]
addopts = -p no:randomly -p no:cacheprovider -p no:xdist -p no:xdist.looponfail -p no:pytest-split
e2e_schema_setup = opsdesk.db:create_tables
"""


def write_suite(
    root: Path, contender: str, tests: int, conftest_override: str | None = None
) -> Path:
    """Write pytest.ini, conftest.py and test_suite.py (warm-up test + `tests` tests) under root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(PYTEST_INI)
    body = conftest_override if conftest_override is not None else CONTENDERS[contender]
    (root / "conftest.py").write_text(COMMON + body)
    # Pairs run back to back (baseline, then contender), so load from other processes hits both
    # halves alike. Pair 0000 pays the session fixtures (schemas, template database): not measured.
    funcs = [
        f"\n\ndef test_{i:04d}_base(base_db):\n    _body(base_db, {i})\n"
        f"\n\ndef test_{i:04d}_iso(db):\n    _body(db, {i})\n"
        for i in range(tests + 1)
    ]
    (root / "test_suite.py").write_text(TEST_HEADER + "".join(funcs))
    return root
