"""Binaries you can trust: the cache they live in, and a manifest of every unpacked file.

The cache is trusted only when nobody but us (or root) can write it or a directory on the way
to it. At unpack time every file's sha256 is recorded with its size, inode, mtime and ctime;
before the binaries run, every file is compared by those (no hashing: any write or chmod moves
ctime, which no user can set back), and only when they differ (a tree restored from a CI cache
or a backup gets new ctimes) is every sha256 checked again, and the stamps renewed if it passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from testbed.errors import ServicesUnavailable, UnsafePath
from testbed.services import private

MANIFEST = ".manifest.json"
VERSION = 1


def check_cache(path: Path) -> None:
    """Refuse (one line) a cache another user could write: binaries in it run as us (as root)."""
    why = private.path_problem(path)
    if why is None and (path.exists() or path.is_symlink()):
        why = private.problem(path, own=False)
    if why is not None:
        raise UnsafePath(
            f"refusing the binary cache {path}: {why}, and its binaries would run as you; use "
            "a directory only you can write (E2E_CACHE_DIR), or remove it to fetch them anew"
        )


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks (a wheel, a server binary)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _files(tree: Path) -> dict[str, os.stat_result]:
    """Every entry under tree but the manifest and the stamp, by relative path; refuses one
    another user may write. (Plain strings and os.lstat: this runs before every start.)"""
    found: dict[str, os.stat_result] = {}
    me, top = os.geteuid(), str(tree)
    cut = len(top) + 1
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if st.st_uid not in (0, me) or (others_write and not stat.S_ISLNK(st.st_mode)):
                raise UnsafePath(
                    f"refusing the binaries in {tree}: {path} may be written by another user; "
                    f"remove {tree} and retry (it is fetched again)"
                )
            if not stat.S_ISDIR(st.st_mode):
                found[path[cut:]] = st
    found.pop(MANIFEST, None)
    found.pop(".complete", None)
    return found


def record(tree: Path, source_sha256: str) -> None:
    """Write the manifest of an unpacked tree (the wheel's sha256 and each file's)."""
    files: dict[str, Any] = {}
    for rel, st in sorted(_files(tree).items()):
        path = tree / rel
        if stat.S_ISLNK(st.st_mode):
            files[rel] = {"link": os.readlink(path)}
        else:
            files[rel] = {"sha256": file_sha256(path), "stamp": _stamp(st)}
    data = {"version": VERSION, "source_sha256": source_sha256, "files": files}
    private.write_atomic(tree / MANIFEST, json.dumps(data, indent=1) + "\n", mode=0o644)


def problem(tree: Path, source_sha256: str) -> str | None:
    """Why the tree is not what was unpacked from the pinned wheel (None when it is)."""
    data = private.read_json(tree / MANIFEST) if (tree / MANIFEST).exists() else None
    if data is None:
        return "it has no manifest (unpacked by an older testbed)"
    recorded = data.get("files")
    if data.get("source_sha256") != source_sha256 or not isinstance(recorded, dict):
        return "its manifest is for another wheel"
    files = _files(tree)
    if extra := sorted(set(files) - set(recorded)):
        return f"{extra[0]} was added after unpacking"
    if missing := sorted(set(recorded) - set(files)):
        return f"{missing[0]} is missing"
    moved = [rel for rel, st in files.items() if not _same(tree / rel, st, recorded[rel])]
    if not moved:
        return None
    for rel in sorted(moved):  # touched since recorded: only the content decides
        want = recorded[rel]
        st = files[rel]
        if not isinstance(want, dict):  # a malformed entry vouches for nothing
            return f"{rel} changed after unpacking (its manifest entry is malformed)"
        if "link" in want:
            if not stat.S_ISLNK(st.st_mode) or os.readlink(tree / rel) != want["link"]:
                return f"{rel} changed after unpacking"
        elif not stat.S_ISREG(st.st_mode) or file_sha256(tree / rel) != want.get("sha256"):
            return f"{rel} changed after unpacking (sha256 differs)"
    record(tree, source_sha256)  # same content, new stamps (e.g. restored from a CI cache)
    return None


def _same(path: Path, st: os.stat_result, want: object) -> bool:
    if not isinstance(want, dict):
        return False
    if "link" in want:
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == want["link"]
    return stat.S_ISREG(st.st_mode) and want.get("stamp") == _stamp(st)


# Trees this process checked in full, by path: their manifest's stamp and bin/ entries then. A
# later start in the same process (a suite's, `up` after `down`) re-checks only what runs: bin/.
_checked: dict[str, tuple[list[int], dict[str, Any]]] = {}


def _bin_unchanged(tree: Path) -> bool:
    seen = _checked.get(str(tree))
    try:
        if seen is None or seen[0] != _stamp(os.lstat(tree / MANIFEST)):
            return False
        entries = list(os.scandir(tree / "bin"))
        if {e.name for e in entries} != set(seen[1]):
            return False
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if st.st_uid not in (0, os.geteuid()) or not _same(
                Path(entry.path), st, seen[1][entry.name]
            ):
                return False
    except OSError:
        return False
    return True


def _remember(tree: Path) -> None:
    data = private.read_json(tree / MANIFEST) or {}
    files = data.get("files") or {}
    bins = {
        rel.removeprefix("bin/"): want
        for rel, want in files.items()
        if rel.count("/") == 1 and rel.startswith("bin/")
    }
    _checked[str(tree)] = (_stamp(os.lstat(tree / MANIFEST)), bins)


def verify(tree: Path, source_sha256: str) -> None:
    """Raise ServicesUnavailable (one line) unless the tree matches its manifest: every file
    the first time in a process, its bin/ after that."""
    if _bin_unchanged(tree):  # checked in full by this process, against this same manifest
        return
    why = problem(tree, source_sha256)
    if why is not None:
        raise ServicesUnavailable(
            f"the binaries in {tree} do not match what was unpacked from the pinned wheel: {why}; "
            f"remove {tree} and retry (they are fetched again)"
        )
    _remember(tree)


__all__ = ["MANIFEST", "check_cache", "problem", "record", "verify"]
