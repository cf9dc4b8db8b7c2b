"""The Docker engine for the compose backend: reuse one that answers; under CI=true, provide one.

    docker-engine.sh check         exit 0 when an engine >= 25 with Compose v2 answers; else say why
    docker-engine.sh ensure        reuse such an engine, or (CI=true only) install and start dockerd
    docker-engine.sh stop          stop the dockerd this tool started, proven by its identity,
                                   unless a run still uses it
    docker-engine.sh run -- CMD..  ensure, run CMD; the last run out stops a daemon this tool
                                   started (runs that overlap share it)

An engine this tool did not start is never stopped. Outside CI nothing is installed or started.
Who started the daemon is decided as testbed decides it for its servers: a recorded process
identity (pid, start time, command line; testbed.services.ownership), never a pid alone.
Env: E2E_ENGINE_DIR (record and log; default /run/testbed-engine), E2E_CACHE_DIR (the .debs).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.errors import UnsafePath
from testbed.services import private
from testbed.services.engine import compose_command, engine_problem, engine_version
from testbed.services.ownership import ProcessIdentity

ROOT = Path(__file__).resolve().parents[1]
MIN_ENGINE = 25
# --iptables=false: leave the host's firewall alone (published 127.0.0.1 ports still work);
# --ip-forward=false: do not switch on net.ipv4.ip_forward. Never --bridge=none: -p is then ignored.
DOCKERD_FLAGS = ["--iptables=false", "--ip6tables=false", "--ip-forward=false"]
DOCKERD_FLAGS += ["--storage-driver=overlay2"]
START_TIMEOUT = 60.0
STOP_GRACE = 30.0  # dockerd stops its containers (10 s each) and containerd before it exits


# Paths follow E2E_ENGINE_DIR / E2E_CACHE_DIR as they are when used, not at import.
def engine_dir() -> Path:
    """Where the record, the log and the users' lock live."""
    return Path(os.environ.get("E2E_ENGINE_DIR", "/run/testbed-engine"))


def record_path() -> Path:
    """{"dockerd": identity, "owner": identity of the run that holds it}."""
    return engine_dir() / "dockerd.json"


def log_path() -> Path:
    return engine_dir() / "dockerd.log"


def users_path() -> Path:
    """Every `run` holds it shared while it uses the engine."""
    return engine_dir() / "users.lock"


def cache_dir() -> Path:
    """Where the engine's .debs are kept."""
    return Path(os.environ.get("E2E_CACHE_DIR", "/var/cache/testbed"))


def say(message: str) -> None:
    """One line on stderr, prefixed like every other tool's output here."""
    print(f"docker-engine: {message}", file=sys.stderr, flush=True)


def problem() -> str | None:
    """None when an engine >= 25 with Compose v2 answers; else what is missing."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    why = engine_problem()
    if why is not None:
        return why
    command, found = compose_command()
    if command is None:
        return f"no Compose v2 ({found})"
    return None


def versions() -> str:
    """'Docker Engine X, Compose Y' of the engine that answers (the Compose testbed would use)."""
    return f"Docker Engine {engine_version()[0]}, Compose {compose_command()[1]}"


def private_dir() -> None:
    """The record's directory: made 0700 if missing, then judged by testbed's own rules (ours,
    no link, nobody else may write it or swap a directory on the way). A 0755 one of ours, as
    an earlier version made, is kept: only its owner could have written what is inside."""
    directory = engine_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        private.make_private(
            directory, what="engine record directory", fix="remove it or set E2E_ENGINE_DIR"
        )
    except UnsafePath as error:
        raise SystemExit(f"docker-engine: {error}") from None


def read_record() -> tuple[ProcessIdentity, ProcessIdentity] | None:
    """(dockerd, owner) as recorded; None when absent or malformed (never trusted). A record in
    a directory others may write is refused: it could name any process (all of it is public)."""
    if not os.path.lexists(engine_dir()):
        return None
    private_dir()
    try:
        fd = os.open(record_path(), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    daemon = ProcessIdentity.from_json(data.get("dockerd"))
    owner = ProcessIdentity.from_json(data.get("owner"))
    return (daemon, owner) if daemon and owner else None


def write_record(daemon: ProcessIdentity) -> None:
    """Record dockerd and this process (its owner), written aside and renamed into place."""
    owner = ProcessIdentity.of(os.getpid())
    assert owner is not None
    private_dir()
    record = record_path()
    tmp = record.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"dockerd": daemon.to_json(), "owner": owner.to_json()}, handle)
    tmp.replace(record)


def is_orphan(found: tuple[ProcessIdentity, ProcessIdentity] | None) -> bool:
    """The recorded daemon runs, and the run that started it (its owner) is gone: it was
    killed, or it left the daemon to runs that still used it."""
    if found is None:
        return False
    daemon, owner = found
    return daemon.alive() and owner.pid != os.getpid() and not owner.alive()


def orphaned() -> bool:
    """The record, as it is now, names an orphaned daemon."""
    return is_orphan(read_record())


def adopt_orphan() -> bool:
    """A daemon whose starter is gone: this run takes it over (the last run out stops it).
    Decided on one read of the record: the daemon judged is the daemon adopted."""
    found = read_record()
    if found is None or not is_orphan(found):
        return False
    daemon = found[0]
    write_record(daemon)
    say(f"adopted dockerd (pid {daemon.pid}) left by an earlier run; the last run out stops it")
    return True


def use_engine() -> int:
    """Say that this run uses the engine, for as long as it runs: a shared lock on the users'
    lock. Taken before the engine is judged, so a run ending now cannot stop a daemon this one
    will reuse."""
    private_dir()
    try:
        fd = private.open_lock(users_path())
    except UnsafePath as error:
        raise SystemExit(f"docker-engine: {error}") from None
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def last_user(fd: int) -> bool:
    """Done with the engine: True when no other run uses it (the shared lock became exclusive)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def install(packages: list[str]) -> None:
    """Debian trixie's engine/compose .debs (root and apt only)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(
            "docker-engine: CI=true and no Docker engine answers, but installing one needs root "
            f"and apt-get; install Docker Engine >= {MIN_ENGINE} with Compose v2 first "
            "(https://docs.docker.com/engine/install/)"
        )
    started = time.monotonic()
    installer = str(ROOT / "scripts" / "engine-install.sh")
    subprocess.run([installer, str(cache_dir()), *packages], check=True)
    say(f"installed {' '.join(packages)} in {time.monotonic() - started:.1f} s")


def start_daemon() -> None:
    """dockerd in its own session (Ctrl-C of the run must not reach it before compose has taken
    its containers down), recorded before anything else can happen."""
    started = time.monotonic()
    private_dir()
    log_file = log_path()
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    proc = subprocess.Popen(
        ["dockerd", *DOCKERD_FLAGS],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    os.close(log)
    daemon = ProcessIdentity.of(proc.pid)
    if daemon is None:
        raise SystemExit(f"docker-engine: dockerd exited at start; see {log_file}")
    write_record(daemon)
    while engine_version(timeout=5)[0] is None:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace").splitlines()[-15:]
            record_path().unlink(missing_ok=True)
            raise SystemExit(
                "docker-engine: dockerd exited at start; its log ends with:\n    "
                + "\n    ".join(tail)
            )
        if time.monotonic() - started > START_TIMEOUT:
            stop_daemon()
            raise SystemExit(
                f"docker-engine: dockerd (pid {proc.pid}) does not answer after "
                f"{START_TIMEOUT:g} s; log: {log_file}"
            )
        time.sleep(0.2)
    # Detached on purpose: the daemon outlives this process until `stop`; drop the handle quietly.
    proc.returncode = 0
    took = time.monotonic() - started
    say(f"started dockerd {engine_version()[0]} (pid {proc.pid}, log {log_file}) in {took:.1f} s")


def stop_daemon() -> None:
    """Stop the dockerd this tool recorded, only while it is provably that process."""
    found = read_record()
    if found is None:
        say("no dockerd recorded as started here; nothing to stop")
        return
    daemon, _ = found
    if not daemon.alive():
        record_path().unlink(missing_ok=True)
        say(f"the recorded dockerd (pid {daemon.pid}) is gone")
        return
    started = time.monotonic()
    os.kill(daemon.pid, signal.SIGTERM)
    while daemon.alive() and time.monotonic() - started < STOP_GRACE:
        time.sleep(0.1)
    if daemon.alive():
        say(f"dockerd (pid {daemon.pid}) ignored SIGTERM for {STOP_GRACE:g} s; SIGKILL")
        os.kill(daemon.pid, signal.SIGKILL)
    record_path().unlink(missing_ok=True)
    say(f"stopped dockerd (pid {daemon.pid}) in {time.monotonic() - started:.1f} s")


def ensure() -> bool:
    """Reuse an engine that answers or (CI=true) provide one; True when this call started (or
    adopted) the daemon, so that `run` stops it afterwards."""
    why = problem()
    if why is None:
        if adopt_orphan():
            return True
        say(f"reusing {versions()} (left running)")
        return False
    if os.environ.get("CI") != "true":
        say(why)
        raise SystemExit(
            f"docker-engine: install Docker Engine >= {MIN_ENGINE} with the Compose v2 plugin "
            "and start it, or use E2E_BACKEND=native"
        )
    version = engine_version()[0] if shutil.which("docker") else None
    if version is not None and engine_problem() is not None:
        raise SystemExit(
            f"docker-engine: {why}; that engine is not this project's to replace: upgrade it, "
            "or use E2E_BACKEND=native"
        )
    packages = [] if shutil.which("docker") else ["docker-cli"]
    if version is None and not _installed_engine_ok():
        packages.append("docker.io")
    if compose_command()[0] is None:
        packages.append("docker-compose")
    if packages:
        install(packages)
    started = False
    if engine_version()[0] is None:
        start_daemon()
        started = True
    why = problem()
    if why is not None:
        raise SystemExit(f"docker-engine: {why}")
    return started


def _installed_engine_ok() -> bool:
    """An installed dockerd new enough to start (`dockerd --version`)."""
    if shutil.which("dockerd") is None:
        return False
    argv = ["dockerd", "--version"]
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    words = out.split()
    major = words[2].split(".")[0] if len(words) > 2 else ""
    return major.isdigit() and int(major) >= MIN_ENGINE


def main(argv: list[str]) -> int:
    """The four commands; `run` passes the command's exit code through."""
    command = argv[0] if argv else ""
    if command == "check":
        why = problem()
        if why is not None:
            say(why)
            return 1
        print(versions())
        return 0
    if command == "ensure":
        ensure()
        return 0
    if command == "stop":
        users = use_engine()
        try:
            if not last_user(users):
                say("dockerd not stopped: a run still uses it (the last one out stops it)")
                return 1
            stop_daemon()
        finally:
            os.close(users)
        return 0
    if command == "run":
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        if not rest:
            say("usage: docker-engine.sh run -- COMMAND...")
            return 2
        users = use_engine()
        started = ensure()
        # SIGTERM ends the command and then us, through the finally below.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            return subprocess.run(rest, check=False).returncode
        except KeyboardInterrupt:
            return 130
        finally:
            # The daemon stops with the last run that used it, whichever started it: one that
            # started it while others still use it leaves it to them (its record is orphaned).
            if last_user(users):
                if started or orphaned():
                    stop_daemon()
            elif started:
                say("dockerd left running: another run still uses it (the last one out stops it)")
            os.close(users)
    print("usage: docker-engine.sh check|ensure|stop|run -- COMMAND...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
