"""Unloadable bundled extensions: found with ldd, cached per loader state, refused with the fix."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from testbed.services import extensions


def fake_install(root: Path, modules: dict[str, str]) -> Path:
    """A PostgreSQL install with one control file and one .so per extension; returns bin/."""
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "share" / "extension").mkdir(parents=True)
    for ext, module in modules.items():
        (root / "share" / "extension" / f"{ext}.control").write_text(
            f"comment = 'x'\nmodule_pathname = '$libdir/{module}'\n"
        )
        (root / "lib" / f"{module}.so").write_bytes(b"")
    (root / "share" / "extension" / "intagg.control").write_text("comment = 'sql only'\n")
    return root / "bin"


@pytest.fixture
def fake_ldd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ldd on PATH that reports libossp-uuid.so.16 missing for uuid-ossp.so; counts calls."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    script = bindir / "ldd"
    script.write_text(
        "#!/bin/sh\n"
        f'echo call >> "{tmp_path}/ldd.calls"\n'
        'for f in "$@"; do\n'
        '  echo "$f:"\n'
        '  echo "\tlibc.so.6 => /lib/libc.so.6 (0x1)"\n'
        '  case "$f" in *uuid-ossp.so) echo "\tlibossp-uuid.so.16 => not found";; esac\n'
        "done\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "ldd.calls"


def test_finds_the_extension_whose_library_is_missing(tmp_path: Path, fake_ldd: Path) -> None:
    """Only uuid-ossp is reported, with the library it lacks."""
    bindir = fake_install(tmp_path / "pg", {"uuid-ossp": "uuid-ossp", "citext": "citext"})
    cache = tmp_path / "cache"
    cache.mkdir()
    assert extensions.unloadable(bindir, cache) == {"uuid-ossp": ["libossp-uuid.so.16"]}


def test_answer_is_cached_until_the_loader_changes(
    tmp_path: Path, fake_ldd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ldd runs once; a new LD_LIBRARY_PATH (or ldconfig) makes it run again."""
    bindir = fake_install(tmp_path / "pg", {"uuid-ossp": "uuid-ossp"})
    cache = tmp_path / "cache"
    cache.mkdir()
    first = extensions.unloadable(bindir, cache)
    assert extensions.unloadable(bindir, cache) == first
    assert fake_ldd.read_text().count("call") == 1
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / "elsewhere"))
    extensions.unloadable(bindir, cache)
    assert fake_ldd.read_text().count("call") == 2


def test_refusal_names_the_package_and_matches_quoted_names() -> None:
    """The trigger's check matches CREATE EXTENSION "uuid-ossp" and says what to install."""
    statements = extensions.refusal_sql({"uuid-ossp": ["libossp-uuid.so.16"]})
    function = statements[0]
    assert "apt-get install libossp-uuid16" in function
    assert "uuid\\-ossp" in function  # the name is a regex-escaped literal
    assert any("CREATE EVENT TRIGGER" in s for s in statements)


def test_nothing_missing_installs_nothing() -> None:
    """A machine with every library gets no trigger at all."""
    assert extensions.refusal_sql({}) == []


def test_unknown_library_gets_a_generic_hint() -> None:
    """Libraries without a known package still say what to look for."""
    assert "libfoo.so.1" in extensions.install_hint("libfoo.so.1")
    line = extensions.describe({"uuid-ossp": ["libossp-uuid.so.16"]})
    assert "uuid-ossp" in line
    assert "libossp-uuid16" in line
