"""The binaries' manifest: a tree is trusted only as it was unpacked (every file's sha256, and
its stat stamp for the cheap check), in a cache nobody else can write; tampering, planted files
and links, foreign owners and malformed manifests are refused in one line that says what to do."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.errors import ServicesUnavailable, UnsafePath
from testbed.services import manifest

WHEEL = "a" * 64
NO_MANIFEST = "it has no manifest (unpacked by an older testbed)"
OTHER_WHEEL = "its manifest is for another wheel"
NOBODY = 65534  # another user's uid, for the tests root can run

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")


@pytest.fixture(autouse=True)
def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no tree checked in full yet."""
    monkeypatch.setattr(manifest, "_checked", {})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An unpacked tree (bin/, lib/, a relative link, the completion stamp) and its manifest."""
    root = tmp_path / "pg"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "sub").mkdir(parents=True)
    (root / "bin" / "postgres").write_bytes(b"\x7fELF postgres")
    (root / "bin" / "postgres").chmod(0o755)
    (root / "lib" / "libpq.so.5.16").write_bytes(b"libpq")
    (root / "lib" / "sub" / "data.txt").write_text("data")
    (root / "lib" / "libpq.so.5").symlink_to("libpq.so.5.16")
    (root / ".complete").write_text("")
    manifest.record(root, WHEEL)
    return root


def recorded(tree: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = json.loads((tree / manifest.MANIFEST).read_text())[
        "files"
    ]
    return files


def rewrite_keeping_mtime(path: Path, content: bytes) -> None:
    """What a careful attacker does: same size, the old mtime put back (ctime still moves)."""
    st = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- record ------------------------------------------------------------------------------------
def test_record_lists_every_file_and_link_but_itself_and_the_stamp(tree: Path) -> None:
    data = json.loads((tree / manifest.MANIFEST).read_text())
    assert (data["version"], data["source_sha256"]) == (manifest.VERSION, WHEEL)
    files = data["files"]
    assert sorted(files) == [
        "bin/postgres",
        "lib/libpq.so.5",
        "lib/libpq.so.5.16",
        "lib/sub/data.txt",
    ]
    assert files["lib/libpq.so.5"] == {"link": "libpq.so.5.16"}
    assert files["bin/postgres"]["sha256"] == hashlib.sha256(b"\x7fELF postgres").hexdigest()
    st = os.lstat(tree / "bin" / "postgres")
    assert files["bin/postgres"]["stamp"] == [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
    # Others may read the manifest (the servers' account runs these binaries), never write it.
    assert stat.S_IMODE((tree / manifest.MANIFEST).stat().st_mode) == 0o644


def test_an_untouched_tree_passes(tree: Path) -> None:
    assert manifest.problem(tree, WHEEL) is None
    manifest.verify(tree, WHEEL)


# -- what the full check finds -------------------------------------------------------------------
def test_changed_content_is_found_even_with_the_old_mtime_and_size(tree: Path) -> None:
    rewrite_keeping_mtime(tree / "bin" / "postgres", b"\x7fELF backdoor")
    assert manifest.problem(tree, WHEEL) == "bin/postgres changed after unpacking (sha256 differs)"
    with pytest.raises(ServicesUnavailable) as refused:
        manifest.verify(tree, WHEEL)
    message = str(refused.value)
    assert f"the binaries in {tree} do not match" in message
    assert "bin/postgres changed after unpacking" in message
    assert f"remove {tree} and retry" in message


def test_a_change_deep_in_the_tree_is_found(tree: Path) -> None:
    rewrite_keeping_mtime(tree / "lib" / "sub" / "data.txt", b"DATA")
    assert (
        manifest.problem(tree, WHEEL) == "lib/sub/data.txt changed after unpacking (sha256 differs)"
    )


def test_same_content_with_new_stamps_passes_and_the_stamps_are_renewed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree restored from a CI cache has new inodes and ctimes, and the same bytes."""
    path = tree / "lib" / "libpq.so.5.16"
    path.unlink()
    path.write_bytes(b"libpq")
    before = recorded(tree)["lib/libpq.so.5.16"]
    assert manifest.problem(tree, WHEEL) is None
    after = recorded(tree)["lib/libpq.so.5.16"]
    st = os.lstat(path)
    assert after == {
        "sha256": before["sha256"],
        "stamp": [5, st.st_ino, st.st_mtime_ns, st.st_ctime_ns],
    }
    assert after != before
    # The renewed manifest is the one that passes next time, without hashing again.
    monkeypatch.setattr(manifest, "file_sha256", lambda path: pytest.fail(f"hashed {path} again"))
    assert manifest.problem(tree, WHEEL) is None


def test_an_added_file_is_refused(tree: Path) -> None:
    (tree / "bin" / "pg_ctl").write_text("#!/bin/sh\n")
    assert manifest.problem(tree, WHEEL) == "bin/pg_ctl was added after unpacking"


def test_an_added_empty_directory_is_not_a_file(tree: Path) -> None:
    (tree / "share").mkdir()
    assert manifest.problem(tree, WHEEL) is None


def test_a_planted_link_is_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "evil").write_text("x")
    (tree / "bin" / "initdb").symlink_to(tmp_path / "evil")
    assert manifest.problem(tree, WHEEL) == "bin/initdb was added after unpacking"


def test_a_missing_file_is_refused(tree: Path) -> None:
    (tree / "lib" / "sub" / "data.txt").unlink()
    assert manifest.problem(tree, WHEEL) == "lib/sub/data.txt is missing"


def test_a_file_swapped_for_a_link_to_the_same_bytes_is_refused(tree: Path, tmp_path: Path) -> None:
    """The link's target is not in the tree: it could change whenever its owner likes."""
    outside = tmp_path / "postgres"
    outside.write_bytes((tree / "bin" / "postgres").read_bytes())
    (tree / "bin" / "postgres").unlink()
    (tree / "bin" / "postgres").symlink_to(outside)
    assert manifest.problem(tree, WHEEL) == "bin/postgres changed after unpacking (sha256 differs)"


def test_a_file_swapped_for_a_fifo_is_refused_without_opening_it(tree: Path) -> None:
    """Reading a FIFO would hang every start: its type alone refuses it."""
    (tree / "lib" / "libpq.so.5.16").unlink()
    os.mkfifo(tree / "lib" / "libpq.so.5.16", 0o644)
    assert (
        manifest.problem(tree, WHEEL)
        == "lib/libpq.so.5.16 changed after unpacking (sha256 differs)"
    )


def test_a_retargeted_link_is_refused(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "libpq").write_bytes(b"libpq")
    (tree / "lib" / "libpq.so.5").unlink()
    (tree / "lib" / "libpq.so.5").symlink_to(tmp_path / "libpq")
    assert manifest.problem(tree, WHEEL) == "lib/libpq.so.5 changed after unpacking"


def test_a_link_swapped_for_a_file_of_the_targets_bytes_is_refused(tree: Path) -> None:
    (tree / "lib" / "libpq.so.5").unlink()
    (tree / "lib" / "libpq.so.5").write_bytes(b"libpq")
    assert manifest.problem(tree, WHEEL) == "lib/libpq.so.5 changed after unpacking"


def test_a_link_replaced_by_the_same_link_passes(tree: Path) -> None:
    (tree / "lib" / "libpq.so.5").unlink()
    (tree / "lib" / "libpq.so.5").symlink_to("libpq.so.5.16")
    assert manifest.problem(tree, WHEEL) is None


def test_a_file_writable_by_others_is_refused_before_it_is_read(tree: Path) -> None:
    (tree / "bin" / "postgres").chmod(0o775)
    with pytest.raises(UnsafePath) as refused:
        manifest.problem(tree, WHEEL)
    message = str(refused.value)
    assert f"{tree / 'bin' / 'postgres'} may be written by another user" in message
    assert f"remove {tree} and retry" in message


def test_a_directory_writable_by_others_is_refused(tree: Path) -> None:
    (tree / "lib" / "sub").chmod(0o777)
    with pytest.raises(UnsafePath, match="sub may be written by another user"):
        manifest.problem(tree, WHEEL)


@as_root
def test_a_file_of_another_user_is_refused(tree: Path) -> None:
    os.lchown(tree / "lib" / "libpq.so.5.16", NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match=r"libpq\.so\.5\.16 may be written by another user"):
        manifest.problem(tree, WHEEL)


@as_root
def test_a_link_of_another_user_is_refused(tree: Path) -> None:
    os.lchown(tree / "lib" / "libpq.so.5", NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match=r"libpq\.so\.5 may be written by another user"):
        manifest.problem(tree, WHEEL)


# -- the manifest itself --------------------------------------------------------------------
def test_no_manifest_is_an_older_testbeds_tree(tree: Path) -> None:
    (tree / manifest.MANIFEST).unlink()
    assert manifest.problem(tree, WHEEL) == NO_MANIFEST


def test_a_manifest_of_another_wheel_is_refused(tree: Path) -> None:
    assert manifest.problem(tree, "b" * 64) == OTHER_WHEEL


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", NO_MANIFEST),
        ("[1, 2]", NO_MANIFEST),
        ("x" * (2 << 20), NO_MANIFEST),  # larger than any manifest of ours: not read
        (json.dumps({"source_sha256": WHEEL}), OTHER_WHEEL),  # no files
        (json.dumps({"source_sha256": WHEEL, "files": ["bin/postgres"]}), OTHER_WHEEL),
        (json.dumps({"files": {}}), OTHER_WHEEL),
    ],
    ids=["not-json", "a-list", "too-large", "no-files", "files-a-list", "no-wheel"],
)
def test_a_malformed_manifest_is_refused(tree: Path, content: str, expected: str) -> None:
    (tree / manifest.MANIFEST).write_text(content)
    assert manifest.problem(tree, WHEEL) == expected


@pytest.mark.parametrize("entry", ["x", "link", 5, None, ["sha256"], {"link": 5}, {}])
def test_a_malformed_entry_is_a_changed_file_never_a_crash(tree: Path, entry: object) -> None:
    data = json.loads((tree / manifest.MANIFEST).read_text())
    data["files"]["bin/postgres"] = entry
    (tree / manifest.MANIFEST).write_text(json.dumps(data))
    why = manifest.problem(tree, WHEEL)
    assert why is not None
    assert why.startswith("bin/postgres changed after unpacking"), why


def test_a_manifest_planted_as_a_link_is_not_read(tree: Path, tmp_path: Path) -> None:
    """Only a regular file of ours is read, never through a link someone put there."""
    good = tmp_path / "copy.json"
    good.write_text((tree / manifest.MANIFEST).read_text())
    (tree / manifest.MANIFEST).unlink()
    (tree / manifest.MANIFEST).symlink_to(good)
    assert manifest.problem(tree, WHEEL) == NO_MANIFEST


@as_root
def test_a_manifest_of_another_user_is_not_read(tree: Path) -> None:
    os.chown(tree / manifest.MANIFEST, NOBODY, NOBODY)
    assert manifest.problem(tree, WHEEL) == NO_MANIFEST


def test_a_manifest_naming_files_outside_the_tree_is_no_way_out(tree: Path, tmp_path: Path) -> None:
    """An entry for ../x is never in the tree's own listing: the tree is refused, x is not read."""
    data = json.loads((tree / manifest.MANIFEST).read_text())
    data["files"]["../outside"] = {"sha256": "0" * 64, "stamp": [0, 0, 0, 0]}
    (tree / manifest.MANIFEST).write_text(json.dumps(data))
    (tmp_path / "outside").write_text("x")
    assert manifest.problem(tree, WHEEL) == "../outside is missing"


# -- verify: in full once per process, then only bin/ ----------------------------------------
@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The trees verify() checked in full (by problem())."""
    checked: list[Path] = []
    real = manifest.problem

    def counting(tree: Path, source_sha256: str) -> str | None:
        checked.append(tree)
        return real(tree, source_sha256)

    monkeypatch.setattr(manifest, "problem", counting)
    return checked


def test_a_second_verify_checks_only_bin(tree: Path, full_checks: list[Path]) -> None:
    manifest.verify(tree, WHEEL)
    manifest.verify(tree, WHEEL)
    assert full_checks == [tree]
    # A change outside bin/ is the first check's business: a new process sees it.
    rewrite_keeping_mtime(tree / "lib" / "libpq.so.5.16", b"LIBPQ")
    manifest.verify(tree, WHEEL)
    manifest._checked.clear()
    with pytest.raises(ServicesUnavailable, match=r"libpq\.so\.5\.16 changed after unpacking"):
        manifest.verify(tree, WHEEL)


def test_a_binary_changed_after_the_first_verify_is_refused(
    tree: Path, full_checks: list[Path]
) -> None:
    manifest.verify(tree, WHEEL)
    rewrite_keeping_mtime(tree / "bin" / "postgres", b"\x7fELF backdoor")
    with pytest.raises(ServicesUnavailable, match="bin/postgres changed after unpacking"):
        manifest.verify(tree, WHEEL)
    assert full_checks == [tree, tree]


def test_a_binary_added_after_the_first_verify_is_refused(tree: Path) -> None:
    manifest.verify(tree, WHEEL)
    (tree / "bin" / "psql").write_text("#!/bin/sh\n")
    with pytest.raises(ServicesUnavailable, match="bin/psql was added after unpacking"):
        manifest.verify(tree, WHEEL)


def test_a_binary_removed_after_the_first_verify_is_refused(tree: Path) -> None:
    manifest.verify(tree, WHEEL)
    (tree / "bin" / "postgres").unlink()
    with pytest.raises(ServicesUnavailable, match="bin/postgres is missing"):
        manifest.verify(tree, WHEEL)


def test_a_rewritten_manifest_means_a_full_check_again(tree: Path, full_checks: list[Path]) -> None:
    manifest.verify(tree, WHEEL)
    rewrite_keeping_mtime(tree / "lib" / "libpq.so.5.16", b"LIBPQ")
    manifest.record(tree, WHEEL)  # whoever could write the manifest: not trusted for it
    manifest.verify(tree, WHEEL)
    assert full_checks == [tree, tree]


def test_bin_gone_means_a_full_check_again(tree: Path) -> None:
    manifest.verify(tree, WHEEL)
    for entry in (tree / "bin").iterdir():
        entry.unlink()
    (tree / "bin").rmdir()
    with pytest.raises(ServicesUnavailable, match="bin/postgres is missing"):
        manifest.verify(tree, WHEEL)


def test_a_failed_verify_is_not_remembered(tree: Path, full_checks: list[Path]) -> None:
    (tree / "bin" / "extra").write_text("x")
    for _ in range(2):
        with pytest.raises(ServicesUnavailable, match="bin/extra was added"):
            manifest.verify(tree, WHEEL)
    assert full_checks == [tree, tree]


def test_a_verify_of_another_wheel_is_refused_after_a_good_one(tree: Path) -> None:
    """The fast path is for the same manifest; the pinned wheel is still compared."""
    manifest.verify(tree, WHEEL)
    manifest._checked.clear()
    with pytest.raises(ServicesUnavailable, match="its manifest is for another wheel"):
        manifest.verify(tree, "b" * 64)


@as_root
def test_a_binary_given_to_another_user_after_the_first_verify_is_refused(tree: Path) -> None:
    manifest.verify(tree, WHEEL)
    path = tree / "bin" / "postgres"
    st = path.stat()
    os.chown(path, NOBODY, NOBODY)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(UnsafePath, match="postgres may be written by another user"):
        manifest.verify(tree, WHEEL)


# -- the cache directory ------------------------------------------------------------------------
def test_a_private_cache_or_one_not_made_yet_is_accepted(tmp_path: Path) -> None:
    manifest.check_cache(tmp_path / "not-yet")
    (tmp_path / "cache").mkdir(mode=0o700)
    manifest.check_cache(tmp_path / "cache")


def test_a_cache_others_may_write_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(UnsafePath) as refused:
        manifest.check_cache(cache)
    message = str(refused.value)
    assert f"refusing the binary cache {cache}" in message
    assert "mode 777" in message
    assert "E2E_CACHE_DIR" in message


def test_a_cache_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "cache").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePath, match="symbolic link"):
        manifest.check_cache(tmp_path / "cache")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePath, match="symbolic link"):
        manifest.check_cache(tmp_path / "dangling")


def test_a_cache_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("")
    with pytest.raises(UnsafePath, match="not a directory"):
        manifest.check_cache(tmp_path / "cache")


def test_a_cache_below_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "cache").mkdir(parents=True, mode=0o700)
    shared.chmod(0o777)  # anyone could rename cache away and put theirs in its place
    with pytest.raises(UnsafePath, match=f"{shared} on the way may be written by others"):
        manifest.check_cache(shared / "cache")
    shared.chmod(0o1777)  # sticky, like /tmp: only the owner may rename an entry
    manifest.check_cache(shared / "cache")


@as_root
def test_a_cache_of_another_user_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    with pytest.raises(UnsafePath, match=f"owned by .*uid {NOBODY}"):
        manifest.check_cache(cache)
