"""Every extension the official postgres:16 image offers is either created by the E2E role or
refused with the fix.

The official image builds all of contrib (uuid-ossp against libuuid) and leaves out the runtime of
the pl/perl, pl/python and pl/tcl languages, so those are not part of the promise. The E2E role is
no superuser: it creates the trusted extensions itself; one that needs a superuser is refused
naming e2e_pg_extensions (the bootstrap role creates those at start). Where the native backend
finds an extension whose library cannot load here (outside CI), CREATE EXTENSION must fail with
the package to install instead of a bare loader error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from testbed.config import load_settings
from testbed.isolation.workers import Worker
from testbed.services import extensions, pgdata
from testbed.services.binaries import PgBinaries, find_postgres
from testbed.services.endpoints import Endpoints

OFFICIAL_IMAGE_EXTENSIONS = (
    "adminpack",
    "amcheck",
    "autoinc",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "moddatetime",
    "old_snapshot",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "plpgsql",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
)


def _url(base: str, database: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + database


@pytest.fixture
def scratch_database(e2e_docker_compose: Endpoints, e2e_worker: Worker) -> Iterator[str]:
    """A database of this worker's own (extensions are per database, not per schema)."""
    if e2e_docker_compose.backend == "external":
        pytest.skip("the external backend's server is not ours to add extensions to")
    name = f"{e2e_worker.schema}_ext"
    admin = psycopg.connect(e2e_docker_compose.database_url, autocommit=True)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        admin.execute(drop)
        # template1: the native backend's refusal trigger for unloadable extensions lives there.
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template1").format(sql.Identifier(name)))
        yield _url(e2e_docker_compose.database_url, name)
    finally:
        admin.execute(drop)
        admin.close()


def _unloadable_here(
    conn: psycopg.Connection[tuple[object, ...]], backend: str
) -> dict[str, list[str]]:
    """What the native backend found missing on this machine ({} for containers)."""
    if backend != "native":
        return {}
    # pg_config is superuser-only, and the E2E role is none: resolve the binaries as testbed does.
    settings = load_settings()
    bindir = find_postgres(settings, lambda _: None).bindir
    library_dir = pgdata.bundled_library_dir(PgBinaries(bindir, "", ""))
    return extensions.unloadable(bindir, settings.cache_dir, library_dir)


@pytest.mark.heavy
def test_every_official_image_extension_can_be_created(
    scratch_database: str, e2e_docker_compose: Endpoints
) -> None:
    """CREATE EXTENSION of each works or says the fix; under CI nothing may be missing."""
    created, refused, superuser, failed = [], {}, {}, {}
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        missing = _unloadable_here(conn, e2e_docker_compose.backend)
        if os.environ.get("CI") == "true":
            assert not missing, f"CI installs every library extensions need; missing: {missing}"
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions")}
        rows = conn.execute(
            "SELECT name FROM pg_available_extension_versions GROUP BY name "
            "HAVING bool_and(superuser AND NOT trusted)"
        )
        needs_superuser = {row[0] for row in rows}
        absent = sorted(set(OFFICIAL_IMAGE_EXTENSIONS) - available)
        assert not absent, f"extensions of the official image not offered here: {absent}"
        for name in OFFICIAL_IMAGE_EXTENSIONS:
            statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(
                sql.Identifier(name)
            )
            try:
                conn.execute(statement)
                created.append(name)
            except psycopg.Error as exc:
                diag = exc.diag
                text = f"{diag.message_primary} | hint: {diag.message_hint}"
                if name in missing:
                    refused[name] = text
                elif name in needs_superuser:
                    superuser[name] = text
                else:
                    failed[name] = text
        installed = {row[0] for row in conn.execute("SELECT extname FROM pg_extension")}
    assert not failed, f"extensions that should load but did not: {failed}"
    assert set(created) <= installed
    assert set(created) | set(refused) | set(superuser) == set(OFFICIAL_IMAGE_EXTENSIONS)
    assert not set(created) & needs_superuser, "the E2E role must not be a superuser"
    assert {"dblink", "pg_stat_statements", "file_fdw"} <= set(superuser)
    for text in superuser.values():
        assert "needs a superuser" in text, text
        assert "e2e_pg_extensions" in text, text
    for name, text in refused.items():
        # Not loadable here (outside CI only): the refusal names the package to install.
        library = missing[name][0]
        assert "cannot load on this machine" in text, text
        assert "install" in text, text
        assert library in text, text
