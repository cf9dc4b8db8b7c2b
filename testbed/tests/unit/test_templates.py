"""The schema cache's key and store: every input counts, and nobody else's file is trusted."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from testbed.isolation import templates


@pytest.fixture
def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package `shopmig` with a hook and a migration script; yields the package dir."""
    package = tmp_path / "shopmig"
    (package / "versions").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrate.py").write_text("def upgrade(engine):\n    pass\n")
    (package / "versions" / "0001.py").write_text("STEP = 'CREATE TABLE a (id int)'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield package
    for name in [m for m in sys.modules if m.startswith("shopmig")]:
        del sys.modules[name]


def _digest(metadata: MetaData | None = None, inputs: list[Path] | None = None) -> str | None:
    from shopmig.migrate import upgrade  # type: ignore[import-not-found]

    return templates.inputs_digest(metadata, upgrade, inputs or [], "16")


def test_a_changed_migration_script_changes_the_digest(hook: Path) -> None:
    before = _digest()
    assert before == _digest()  # stable for the same inputs
    (hook / "versions" / "0001.py").write_text("STEP = 'CREATE TABLE a (id int, b int)'\n")
    assert _digest() != before
    (hook / "versions" / "0002.py").write_text("STEP = 'CREATE TABLE c (id int)'\n")
    assert _digest() not in (before, None)


def test_bytecode_caches_do_not_count(hook: Path) -> None:
    before = _digest()
    (hook / "__pycache__").mkdir()
    (hook / "__pycache__" / "migrate.cpython-311.pyc").write_bytes(b"\x00")
    assert _digest() == before


def test_metadata_ddl_and_extra_inputs_count(hook: Path, tmp_path: Path) -> None:
    metadata = MetaData()
    Table("rooms", metadata, Column("id", Integer, primary_key=True))
    base = _digest(metadata)
    Table("guests", metadata, Column("id", Integer, primary_key=True))
    assert _digest(metadata) != base
    outside = tmp_path / "alembic"
    outside.mkdir()
    (outside / "0001.py").write_text("x = 1\n")
    with_inputs = _digest(metadata, [outside])
    (outside / "0001.py").write_text("x = 2\n")
    assert _digest(metadata, [outside]) != with_inputs


def test_the_server_major_counts(hook: Path) -> None:
    from shopmig.migrate import upgrade

    assert templates.inputs_digest(None, upgrade, [], "16") != templates.inputs_digest(
        None, upgrade, [], "17"
    )


def test_store_and_load(tmp_path: Path) -> None:
    cache = templates.TemplateCache(tmp_path / "schemas")
    assert cache.load("d1") is None
    cache.store("d1", templates.Template("fp", frozenset({"alembic_version"}), "CREATE x;\n"))
    assert cache.load("d1") == templates.Template(
        "fp", frozenset({"alembic_version"}), "CREATE x;\n"
    )
    assert (tmp_path / "schemas").stat().st_mode & 0o777 == 0o700


def test_a_dump_another_user_could_write_is_refused(tmp_path: Path) -> None:
    cache = templates.TemplateCache(tmp_path / "schemas")
    cache.store("d1", templates.Template("fp", frozenset(), "CREATE x;\n"))
    cache.path("d1").chmod(0o666)
    with pytest.raises(templates.UntrustedCache, match="not private"):
        cache.load("d1")


def test_old_dumps_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "KEEP", 2)
    cache = templates.TemplateCache(tmp_path / "schemas")
    for n in range(3):
        cache.store(f"d{n}", templates.Template("fp", frozenset(), ""))
    assert sorted(p.name for p in (tmp_path / "schemas").glob("*.sql")) == ["d1.sql", "d2.sql"]


def test_no_pg_dump_of_the_server_major_means_no_cache(tmp_path: Path) -> None:
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.4'\n")
    old.chmod(0o755)
    assert templates.find_pg_dump([old], "16") is None
    assert templates.find_pg_dump([old], "15") == old
