"""`python -m testbed up|down|status|wait|reap|env`: the E2E services from the command line."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from testbed import report
from testbed.config import OPTIONS, Settings, find_checkout, load_settings
from testbed.config.inifile import find_ini, ini_values
from testbed.errors import HealthTimeout, TestbedError, UsageError
from testbed.guard import redact
from testbed.report import command
from testbed.run.controller import reap_runs
from testbed.services.endpoints import Endpoints
from testbed.services.lifecycle import Hold, acquire, choose
from testbed.services.ownership import RUN, USER

COMMANDS = {
    "up": "start PostgreSQL 16 and Valkey 8 (or reuse healthy ones) and leave them running",
    "down": "stop this checkout's services and remove their data (once no run uses them)",
    "status": "show backend, versions, ports, processes and health (exit 3 when not healthy, "
    "4 when healthy but left by a killed run: the next run or `reap` removes them)",
    "wait": "wait until the services answer (bounded by --wait-timeout)",
    "reap": "remove what dead runs left behind (services nobody uses, their schemas and Redis "
    "databases, deleted checkouts' services, stopped containers)",
    "env": 'print the services\' URLs as shell assignments: eval "$(python -m testbed env)"',
}
_CLI_OPTIONS = tuple(opt.name for opt in OPTIONS if opt.cli)


def parser() -> argparse.ArgumentParser:
    """The command-line parser; flags mirror the E2E_* settings (flags win over env vars)."""
    p = argparse.ArgumentParser(
        prog="python -m testbed",
        description="Run the E2E services (PostgreSQL 16, Valkey 8) of a project using testbed.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "-c",
            "--inifile",
            type=Path,
            default=None,
            metavar="FILE",
            help="the pytest ini file whose e2e_* keys apply (e2e_project_name, ports...); "
            "default: $E2E_INIFILE, else found from the current directory upwards as pytest "
            "finds it",
        )
        for opt in OPTIONS:
            if opt.name in _CLI_OPTIONS:
                cmd.add_argument(
                    f"--{opt.name.replace('_', '-')}",
                    dest=opt.name,
                    default=None,
                    help=f"{opt.help} (env {opt.env})",
                )
        if name == "up":
            cmd.add_argument(
                "--foreground",
                action="store_true",
                help="stay in the foreground; Ctrl-C or SIGTERM takes the services down",
            )
            cmd.add_argument(
                "--owner-pid",
                type=int,
                default=None,
                metavar="PID",
                help="the services belong to this process (e.g. a script's $$): once it is "
                "gone, `reap` or the next run removes them; default: kept until `down`",
            )
    return p


def describe(eps: Endpoints) -> str:
    """One line naming backend, versions and where they answer (password redacted)."""
    return (
        f"{eps.backend}: PostgreSQL {eps.pg_version} at {redact(eps.database_url)}, "
        f"Valkey {eps.redis_version} at {redact(eps.redis_url)}"
    )


def cmd_up(settings: Settings, foreground: bool, owner_pid: int | None = None) -> int:
    """Start or reuse the services under a lease; print how long it took. In the foreground,
    Ctrl-C or SIGTERM at any moment, during the start too, leaves nothing of ours running."""
    if foreground:
        # SIGTERM ends a start as Ctrl-C does (KeyboardInterrupt: the start stops what it has
        # spawned); its default action would kill us mid-start and leave the servers to `reap`.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    hold: Hold | None = None
    try:
        if owner_pid is not None or foreground:
            # A run's lease: the services stop when it ends (or its holder dies and is reaped).
            hold = acquire(settings, kind=RUN, holder_pid=owner_pid)
        else:
            hold = acquire(settings, kind=USER)  # kept until `python -m testbed down`
        verb = "started" if hold.started else "already running, reused"
        took = time.monotonic() - started
        print(f"E2E services {verb} in {took:.2f} s: {describe(hold.endpoints)}", flush=True)
        if not foreground:
            if owner_pid is None:
                print(f"stop them with {command('down')}")
            return 0
        _until_signalled()
    except KeyboardInterrupt:
        if hold is None or not foreground:
            raise  # the start stopped what it had spawned (acquire)
        # A signal that landed after the start and before _until_signalled took the signals
        # over: the same request to end the lease.
    _release(hold)
    return 0


def _until_signalled() -> None:
    """Return on the first SIGINT or SIGTERM (from here on neither raises KeyboardInterrupt)."""
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("running in the foreground; Ctrl-C ends this lease", flush=True)
    while not stop_requested:
        time.sleep(0.2)


def _release(hold: Hold) -> None:
    """End the foreground lease; a second Ctrl-C must not cut the stop short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    if hold.release():
        print("services stopped and their data removed", flush=True)
    else:
        print("left running: someone else still uses them", flush=True)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A signal handler that does nothing (unlike SIG_IGN, not inherited by children)."""


def cmd_wait(settings: Settings) -> int:
    """Poll until the services answer or wait_timeout passes."""
    backend = choose(settings)
    deadline = time.monotonic() + settings.wait_timeout
    while (eps := backend.running()) is None:
        if time.monotonic() > deadline:
            raise HealthTimeout(
                f"the {backend.name} services are not healthy after "
                f"{settings.wait_timeout:g} s; see {command('status')}, then {command('up')}"
            )
        time.sleep(0.1)
    print(f"healthy: {describe(eps)}")
    return 0


def cmd_env(settings: Settings) -> int:
    """Shell assignments for the running services (real URLs: they are meant for eval)."""
    eps = choose(settings).running()
    if eps is None:
        print(
            f"error: the E2E services are not running; start them with {command('up')}",
            file=sys.stderr,
        )
        return 1
    for name, value in (
        ("E2E_DATABASE_URL", eps.database_url),
        ("E2E_REDIS_URL", eps.redis_url),
        ("DATABASE_URL", eps.database_url),
        ("REDIS_URL", eps.redis_url),
    ):
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_reap(settings: Settings) -> int:
    """Reap what dead runs left: services nobody uses, their schemas and Redis databases."""
    from testbed.services import docker
    from testbed.services.native import NativeBackend

    backend = choose(settings)
    removed = backend.reap()
    if backend.name != "native":
        removed += NativeBackend(settings).reap()
    if backend.name != "docker" and docker.engine_answers():
        removed += docker.DockerBackend(settings).reap()
    eps = backend.running()
    if eps is not None:
        removed += reap_runs(eps)
    for item in removed:
        print(f"removed {item}")
    print("nothing to reap" if not removed else f"reaped {len(removed)} item(s)")
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags > env vars > the pytest ini file (--inifile, $E2E_INIFILE, or found) > defaults."""
    overrides = {name: getattr(args, name, None) for name in _CLI_OPTIONS}
    given = args.inifile or (Path(env) if (env := os.environ.get("E2E_INIFILE")) else None)
    if given is not None and not given.is_file():
        raise UsageError(f"ini file {given} (--inifile or E2E_INIFILE): no such file")
    inifile = given or find_ini(Path.cwd())
    # The plugin keys the project on pytest's rootdir (the ini file's directory): so do we.
    checkout = find_checkout(inifile.parent if inifile is not None else Path.cwd())
    settings = load_settings(ini=ini_values(inifile), checkout=checkout, **overrides)
    report.set_command(settings.command)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 usage error, 1 other testbed error)."""
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.command == "up":
            return cmd_up(settings, args.foreground, args.owner_pid)
        if args.command == "down":
            started = time.monotonic()
            backend = choose(settings, recorded_first=True)  # whatever E2E_* the shell holds
            outcome = backend.down()
            print(f"E2E services ({backend.name}): {outcome} ({time.monotonic() - started:.2f} s)")
            return 0
        if args.command == "status":
            status = choose(settings).status()
            print(status.render())
            if not status.healthy:
                return 3
            return 4 if status.orphaned else 0
        if args.command == "wait":
            return cmd_wait(settings)
        if args.command == "env":
            return cmd_env(settings)
        return cmd_reap(settings)
    except UsageError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except TestbedError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a read-only or full disk, a permission: one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check that path and retry", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
