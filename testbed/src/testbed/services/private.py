"""Private state: a per-user base directory testbed creates 0700 and verifies before trusting
anything in it, and file access that never follows a link another user could plant.

Like OpenSSH's and systemd's runtime dirs: a directory is trusted when it is ours, nobody else
can write it, and no directory on the way to it can be swapped by another user (each is
owned by root or us and not writable by others, unless sticky like /tmp and /dev/shm, where
only an entry's owner may rename it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from testbed.config import default_state_root
from testbed.errors import UnsafePath

MAX_RECORD_BYTES = 1 << 20  # a record or marker is a few KB; anything larger is not ours
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def base_dir() -> Path:
    """The invoking user's base for state dirs and locks (config.default_state_root)."""
    return default_state_root()


def _who(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def problem(path: Path, *, own: bool = True) -> str | None:
    """Why path is not a private directory of ours (None when it is): a symlink, not a
    directory, owned by someone else (root's is fine when own=False), or writable by others."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    owners = {os.geteuid()} if own else {os.geteuid(), 0}
    if st.st_uid not in owners:
        return f"it is owned by {_who(st.st_uid)}, not you"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group or others may write it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def path_problem(path: Path) -> str | None:
    """Why another user could swap a directory on the way to path (None when none can): every
    existing ancestor, as written and as resolved, must be root's or ours and not writable by
    others unless sticky; a symbolic link on the way must be root's or ours (macOS's /tmp)."""
    chain = [
        *reversed(path.parents),
        *reversed(path.parent.resolve().parents),
        path.parent.resolve(),
    ]
    for parent in dict.fromkeys(chain):
        try:
            st = parent.lstat()
        except FileNotFoundError:
            continue  # not there yet: we create it
        if st.st_uid not in (0, os.geteuid()):
            return f"{parent} on the way is owned by {_who(st.st_uid)}"
        if stat.S_ISLNK(st.st_mode):
            continue  # root's or ours, in a directory checked here too; its target is checked
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not st.st_mode & stat.S_ISVTX:
            return f"{parent} on the way may be written by others (mode {st.st_mode & 0o7777:o})"
    return None


def require_private(path: Path, *, what: str, fix: str) -> None:
    """Raise UnsafePath (one line: what, why, fix) unless path is a private directory of ours."""
    why = path_problem(path) or problem(path)
    if why is not None:
        raise UnsafePath(f"refusing the {what} {path}: {why}; {fix}")


def make_private(path: Path, *, what: str, fix: str, traverse_gid: int | None = None) -> Path:
    """Create path 0700 if missing (its parent must exist), then verify it. traverse_gid: also
    let that group enter it (0710; root's servers run as an unprivileged account)."""
    if (why := path_problem(path)) is not None:
        raise UnsafePath(f"refusing the {what} {path}: {why}; {fix}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)  # fails rather than adopt a directory someone else made
    require_private(path, what=what, fix=fix)
    if traverse_gid is not None:
        grant_traverse(path, traverse_gid)
    return path


def grant_traverse(path: Path, gid: int) -> None:
    """Let group gid enter (not list, not write) a private directory of ours: 0710."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_gid != gid:
            os.fchown(fd, -1, gid)
        if stat.S_IMODE(st.st_mode) & 0o777 != 0o710:
            os.fchmod(fd, 0o710)
    finally:
        os.close(fd)


def base(*, traverse_gid: int | None = None) -> Path:
    """The invoking user's base, created 0700 and verified (see base_dir)."""
    return make_private(
        base_dir(),
        what="testbed base directory",
        fix="remove it (another user may have made it) and retry, or set E2E_STATE_DIR to a "
        "directory only you can write",
        traverse_gid=traverse_gid,
    )


def inside(path: Path, directory: Path) -> bool:
    """True when path is directory or below it (lexically: no .., no symlinks resolved)."""
    return ".." not in path.parts and (path == directory or directory in path.parents)


# -- files --------------------------------------------------------------------------------------
def read_bytes(path: Path, limit: int = MAX_RECORD_BYTES) -> bytes | None:
    """A regular file of ours, opened without following a link; None for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file of ours (read_bytes), or None."""
    raw = read_bytes(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_atomic(path: Path, data: str, mode: int = 0o600) -> None:
    """Write path in its (private) directory: a fresh O_EXCL temp file, then rename over it
    (readers never see half a file; a planted link is replaced, never followed)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def open_append(path: Path, mode: int = 0o600) -> int:
    """A log file of ours for appending (created if missing); never through a link."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, mode)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePath(f"refusing to write {path}: it is not a file of yours; remove it")
    return fd


def open_lock(path: Path) -> int:
    """A lock file of ours (created 0600 if missing); never through a link."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePath(f"refusing the lock file {path}: it is not a file of yours; remove it")
    return fd


__all__ = [
    "base",
    "base_dir",
    "grant_traverse",
    "inside",
    "make_private",
    "open_append",
    "open_lock",
    "path_problem",
    "problem",
    "read_bytes",
    "read_json",
    "require_private",
    "write_atomic",
]
