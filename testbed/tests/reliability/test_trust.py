"""Trust on a shared machine (docs/security.md lists each case): an unprivileged local account
(`nobody`) attacks a root invocation through state, records and the binary cache, and a second
project shares a state dir, ports or a Valkey with the first. Each case failed before testbed
kept its state private, checked its binaries and kept one project per instance.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rel_sandbox import PYTEST, Sandbox, payload_suite, server_pids, wait_for

from testbed.services.ownership import ProcessIdentity

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="attacks a root invocation (run as root)"),
]
NOBODY = pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def as_nobody(script: str, stdin: str = "") -> None:
    """Run a shell script as the unprivileged `nobody` account (the attacker)."""
    proc = subprocess.run(
        ["su", "nobody", "-s", "/bin/sh", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, f"nobody's script failed: {proc.stderr}"


def nobody_writes(path: Path, content: str) -> None:
    """`nobody` creates path (and its directory) with content."""
    q = shlex.quote
    as_nobody(f"mkdir -p {q(str(path.parent))} && cat > {q(str(path))}", stdin=content)


def one_error(code: int, out: str, *needles: str) -> str:
    """The run failed with exactly one `error:` line holding each needle; return that line."""
    assert code not in (0, None), out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], out
    return errors[0]


@pytest.fixture
def world_writable(sandbox: Sandbox) -> Sandbox:
    """The sandbox's root as /dev/shm is: sticky and writable by everyone."""
    sandbox.root.chmod(0o1777)
    return sandbox


@pytest.fixture
def root_decoy() -> Iterator[subprocess.Popen[bytes]]:
    """A root process that looks like a server by its command line."""
    code = "import time; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code, "postgres"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


# 1 -- forged records ---------------------------------------------------------------------------
def test_forged_record_beside_the_state_dir_makes_root_kill_delete_or_write_nothing(
    world_writable: Sandbox, root_decoy: subprocess.Popen[bytes]
) -> None:
    box = world_writable
    cache = box.root / "cache"
    cache.mkdir(mode=0o755)
    victim_dir = box.root / "victim"  # root's, empty: only `created` could make root remove it
    victim_dir.mkdir(mode=0o700)
    escaped = box.root / "escaped"  # where a project of ../.. would put root's lock file
    identity = ProcessIdentity.of(root_decoy.pid)  # pid, start time, cmdline: /proc shows all
    assert identity is not None
    forged = box.root / "evil-e2e-00000000"
    project = os.path.relpath(escaped, cache / "locks")
    record = {
        "backend": "native",
        "project": project,
        "checkout": "/nonexistent-checkout",
        "state_dir": str(forged),
        "pg_port": box.pg_port,
        "redis_port": box.redis_port,
        "processes": {"postgres": identity.to_json()},
        "leases": [],
    }
    nobody_writes(forged / "state.json", json.dumps(record))
    marker = {"project": project, "created": [str(victim_dir)]}
    nobody_writes(forged / ".testbed-state", json.dumps(marker))
    code, out = box.testbed("reap", E2E_CACHE_DIR=str(cache))
    assert code == 0, out
    assert root_decoy.poll() is None, f"root's reap stopped a process a forged record named:\n{out}"
    assert victim_dir.is_dir(), "root's reap removed a directory a forged record named"
    assert not Path(f"{escaped}.lock").exists(), "root wrote outside its cache for a record"
    assert (forged / "state.json").exists(), "root's reap deleted another user's files"


# 2 -- adoptable dirs and planted links -----------------------------------------------------------
def test_a_state_dir_another_user_made_is_refused_and_never_written(
    world_writable: Sandbox,
) -> None:
    box = world_writable
    theirs = box.root / "theirs"
    as_nobody(f"mkdir {shlex.quote(str(theirs))}")  # empty: an older testbed adopted it
    victim = box.root / "victim.txt"
    victim.write_text("root's own file\n")
    victim.chmod(0o600)
    try:
        code, out = box.testbed("up", E2E_STATE_DIR=str(theirs))
        one_error(code, out, str(theirs), "owned by nobody", "E2E_STATE_DIR")
        # Had it been adopted, nobody could plant a link where root writes next.
        link = theirs / "state.json.tmp"
        as_nobody(f"ln -sf {shlex.quote(str(victim))} {shlex.quote(str(link))}")
        code, out = box.testbed("up", E2E_STATE_DIR=str(theirs))
        assert code != 0, out
        assert victim.read_text() == "root's own file\n", "root wrote through nobody's link"
        assert [p.name for p in theirs.iterdir()] == ["state.json.tmp"], "root wrote in it"
    finally:
        box.testbed("down", E2E_STATE_DIR=str(theirs))


def test_a_base_or_state_dir_that_is_not_private_is_refused(tmp_path: Path) -> None:
    from testbed.errors import UnsafePath
    from testbed.services import ownership, private

    assert NOBODY is not None
    tmp_path.chmod(0o755)
    cases: dict[str, Callable[[Path], None]] = {
        "owned by nobody": lambda p: (p.mkdir(), os.chown(p, NOBODY.pw_uid, NOBODY.pw_gid)),
        "symbolic link": lambda p: p.symlink_to(tmp_path),
        "others may write": lambda p: (p.mkdir(), p.chmod(0o777)),
    }
    for why, make in cases.items():
        path = tmp_path / why.replace(" ", "-")
        make(path)
        with pytest.raises(UnsafePath, match=why):
            private.make_private(path, what="testbed base directory", fix="remove it")
        with pytest.raises(UnsafePath, match=why):
            ownership.StateDir(path).prepare(project="p")
        assert not (path / ".testbed-state").exists()
    fresh = private.make_private(tmp_path / "fresh", what="base", fix="-")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_records_and_writes_never_follow_a_link(tmp_path: Path) -> None:
    from testbed.services import ownership, private

    state = tmp_path / "state"
    ownership.StateDir(state).prepare(project="p")
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"backend": "native", "project": "p"}))
    (state / "state.json").symlink_to(target)
    assert ownership.read_record(state) == {}  # a link is never read as our record
    private.write_atomic(state / "state.json", "{}\n")
    assert json.loads(target.read_text())["project"] == "p"  # replaced, not written through
    assert not (state / "state.json").is_symlink()


# 4 -- binaries ------------------------------------------------------------------------------------
def test_a_cache_another_user_can_write_never_runs_as_root(world_writable: Sandbox) -> None:
    box = world_writable
    cache = box.root / "cache"
    proof = box.root / "ran-as"
    fake = f"#!/bin/sh\nid -u > {proof}\necho 'postgres (PostgreSQL) 16.15'\n"
    for tree in ("postgresql-16.15.0-linux-x86_64", "postgresql-16.15.0-linux-x86_64-m"):
        for name in ("postgres", "initdb"):
            nobody_writes(cache / tree / "bin" / name, fake)
        nobody_writes(cache / tree / ".complete", "\n")
    as_nobody(f"chmod -R a+x {shlex.quote(str(cache))}")
    code, out = box.testbed("up", E2E_CACHE_DIR=str(cache), PATH="/usr/bin:/bin")
    assert not proof.exists(), f"root ran nobody's binary (as uid {proof.read_text().strip()})"
    one_error(code, out, str(cache), "owned by nobody", "E2E_CACHE_DIR")


def test_a_changed_binary_is_refused_before_it_runs(tmp_path: Path) -> None:
    from testbed.config import load_settings
    from testbed.errors import ServicesUnavailable
    from testbed.services import manifest
    from testbed.services.binaries import PG_PINS, pinned_postgres_tree, platform_key

    if platform_key() not in PG_PINS:
        pytest.skip("no pinned PostgreSQL for this platform")
    pin = PG_PINS[platform_key()]
    tree = pinned_postgres_tree(load_settings({}), platform_key(), say=lambda m: None)
    took: dict[str, list[float]] = {"first in a process": [], "again": []}
    for _ in range(3):
        manifest._checked.clear()  # as a new process would start
        for kind in took:
            began = time.perf_counter()
            manifest.verify(tree, pin.sha256)
            took[kind].append(time.perf_counter() - began)
    for kind, times in took.items():
        print(f"manifest check of {tree.name}, {kind}: {min(times) * 1000:.1f} ms")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    copy = cache / tree.name
    shutil.copytree(tree, copy, symlinks=True)  # new ctimes: the first check hashes every file
    began = time.perf_counter()
    manifest.verify(copy, pin.sha256)
    print(f"manifest check after a restore (every sha256): {time.perf_counter() - began:.2f} s")
    proof = tmp_path / "ran"
    initdb = copy / "bin" / "initdb"
    initdb.write_text(f"#!/bin/sh\ntouch {proof}\n")  # same name, same mode: another program
    with pytest.raises(ServicesUnavailable, match=r"bin/initdb changed after unpacking"):
        manifest.verify(copy, pin.sha256)
    settings = load_settings({"E2E_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin"})
    with pytest.raises(ServicesUnavailable, match="remove"):
        pinned_postgres_tree(settings, platform_key(), say=lambda m: None)
    assert not proof.exists()


# 3 -- one project, one instance -----------------------------------------------------------------
def test_a_second_project_in_the_same_state_dir_or_on_the_same_ports_is_refused(
    make_sandbox: Callable[[str], Sandbox],
) -> None:
    first = make_sandbox("first")
    code, out = first.testbed("up")
    assert code == 0, out
    before = server_pids(first.state_dir)
    project = json.loads((first.state_dir / "state.json").read_text())["project"]
    # The same state dir (one `export E2E_STATE_DIR=…` in a profile), another project.
    for command in ("up", "down"):
        code, out = first.testbed(command, E2E_PROJECT_NAME="other")
        one_error(code, out, str(first.state_dir), project, "python -m testbed down")
    # Its own state dir, the first one's ports: the holder is named by its project.
    second = make_sandbox("second")
    second.pg_port, second.redis_port = first.pg_port, first.redis_port
    code, out = second.testbed("up", E2E_PROJECT_NAME="other")
    one_error(code, out, f"port {first.pg_port}", project)
    assert server_pids(first.state_dir) == before, "the first project's services were replaced"
    code, out = first.testbed("status")
    assert code == 0, out


def test_an_external_run_is_not_refused_by_a_native_record(sandbox: Sandbox) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    code, env = sandbox.testbed("env")
    assert code == 0, env
    urls = dict(
        line.removeprefix("export ").split("=", 1)
        for line in env.splitlines()
        if line.startswith("export E2E_")
    )
    code, out = sandbox.testbed(
        "up",
        E2E_BACKEND="external",
        E2E_DATABASE_URL=shlex.split(urls["E2E_DATABASE_URL"])[0],
        E2E_REDIS_URL=shlex.split(urls["E2E_REDIS_URL"])[0],
    )
    assert code == 0, out


def test_two_projects_on_one_valkey_never_free_each_others_databases(
    make_sandbox: Callable[[str], Sandbox], tmp_path: Path
) -> None:
    first, second = make_sandbox("first"), make_sandbox("second")
    for box, name in ((first, "opsdesk"), (second, "other")):
        code, out = box.testbed("up", E2E_PROJECT_NAME=name)
        assert code == 0, out
    urls = {}
    for box, name in ((first, "opsdesk"), (second, "other")):
        code, env = box.testbed("env", E2E_PROJECT_NAME=name)
        assert code == 0, env
        urls[name] = {
            k.removeprefix("export "): shlex.split(v)[0]
            for k, v in (line.split("=", 1) for line in env.splitlines() if "=" in line)
        }
    progress, done = tmp_path / "progress", tmp_path / "b-done"
    progress.mkdir()
    suite_a = payload_suite(tmp_path / "a", "shared_suite.py")
    suite_b = payload_suite(tmp_path / "b", "shared_suite.py")
    argv = [str(PYTEST), "-n", "2", "-p", "no:randomly", "-q", "--timeout", "240"]
    run_a = first.start(
        [*argv, str(suite_a)],
        env=first.env(REL_PROGRESS=str(progress), REL_TESTS="2", REL_WAIT_FOR=str(done)),
        cwd=tmp_path / "a",
        name="project-a",
    )
    # Both of its workers hold a key in their database until the other project's run is over.
    assert wait_for(lambda: len(list(progress.iterdir())) >= 2, 120), run_a.output()
    # Another project, its own PostgreSQL database, the first one's Valkey.
    env_b = second.env(
        E2E_BACKEND="external",
        E2E_PROJECT_NAME="other",
        E2E_DATABASE_URL=urls["other"]["E2E_DATABASE_URL"],
        E2E_REDIS_URL=urls["opsdesk"]["E2E_REDIS_URL"],
        E2E_STATE_DIR=str(second.root / "external-state"),
        REL_TESTS="4",
        REL_SLEEP="0.2",
    )
    code, out_b = second.run([*argv, str(suite_b)], env=env_b, cwd=tmp_path / "b", timeout=240)
    done.touch()
    assert code == 0, out_b
    code = run_a.wait(240)
    assert code == 0, f"the first project's run lost its Valkey databases:\n{run_a.output()}"
