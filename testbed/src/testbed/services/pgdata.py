"""PostgreSQL data dirs: an initialised template in the cache, copied per start; server flags."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from testbed.errors import ServicesUnavailable
from testbed.services.binaries import PgBinaries, Say, cache_lock
from testbed.services.credentials import admin_role, postgres_url
from testbed.services.extensions import superuser_refusal_sql
from testbed.services.procs import RunAs, chown, run_as_kwargs, server_env

MAX_CONNECTIONS = 300  # xdist workers x (app pool + harness pool) with headroom
# Durability is worthless for throwaway test data; these make writes RAM-speed.
SPEED_FLAGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_LOCALES = ("C.UTF-8", "C")  # C.UTF-8: Unicode-aware lower()/ILIKE like the compose image


def template_dir(cache_dir: Path, pg: PgBinaries, run_as: RunAs | None, role: str) -> Path:
    """Cache path of the template for this PostgreSQL version, owner and E2E role (`scram`: the
    layout with a bootstrap superuser and no trust; older templates are never reused)."""
    uid = run_as.uid if run_as else os.geteuid()
    return cache_dir / f"pgdata-template-{pg.version}-uid{uid}-{role}-scram2"


def _run(
    argv: list[str],
    run_as: RunAs | None,
    cwd: Path,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]  # run_as kwargs
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=server_env(),
        timeout=120,
        check=False,
        **run_as_kwargs(run_as),
    )


def _initdb(pg: PgBinaries, data: Path, run_as: RunAs | None, cwd: Path, role: str) -> None:
    for locale in _LOCALES:
        proc = _run(
            [
                str(pg.initdb),
                "-D",
                str(data),
                "-U",
                admin_role(role),
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                f"--locale={locale}",
                "--no-sync",
                "--no-instructions",
            ],
            run_as,
            cwd,
        )
        if proc.returncode == 0:
            return
        shutil.rmtree(data, ignore_errors=True)
    raise ServicesUnavailable(
        f"initdb failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
        f"  try: remove {cwd.parent} and retry, or set E2E_PG_BIN"
    )


def _create_database(
    pg: PgBinaries, data: Path, run_as: RunAs | None, cwd: Path, role: str
) -> None:
    # Single-user mode: no port, no socket, nothing to clean up if we are interrupted.
    proc = _run(
        [
            str(pg.postgres),
            "--single",
            "-D",
            str(data),
            "-F",
            "-j",  # a statement ends at ";" and an empty line: the trigger's body spans lines
            "-c",
            "exit_on_error=on",
            "template1",
        ],
        run_as,
        cwd,
        # The app role is no superuser: it owns its database (schemas, tables, trusted
        # extensions) and may create scratch databases. It has no password in the template;
        # each start sets new ones (set_passwords). The refusal of extensions that need a
        # superuser goes into template1 first, so the database (and every scratch database)
        # inherits it, once per template instead of at every start.
        stdin="".join(
            f"{statement};\n\n"
            for statement in (
                *superuser_refusal_sql(),
                f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEROLE CREATEDB NOREPLICATION',
                f'CREATE DATABASE "{role}" OWNER "{role}"',  # database named like the role
            )
        ),
    )
    if proc.returncode != 0 or "ERROR" in proc.stderr:
        raise ServicesUnavailable(f"creating database {role} failed:\n{proc.stderr[-2000:]}")


def hba_conf(role: str) -> str:
    """pg_hba.conf: SCRAM over TCP for every role; over the socket only the bootstrap
    superuser, and only for testbed's own OS user (peer, mapped in pg_ident.conf)."""
    admin = admin_role(role)
    return (
        "# Written by testbed. The socket sits in a directory only the servers' account can\n"
        "# enter (and root); on it, only testbed's own OS user may log in, as the bootstrap role.\n"
        f'local all "{admin}" peer map=testbed\n'
        "# Everyone else: the per-instance passwords, on 127.0.0.1 only.\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )


def ident_conf(role: str, os_user: str | None = None) -> str:
    """pg_ident.conf: the OS user testbed runs as may log in as the bootstrap role."""
    user = os_user or pwd.getpwuid(os.geteuid()).pw_name
    return f'testbed "{user}" "{admin_role(role)}"\n'


def _write_auth_files(data: Path, role: str, run_as: RunAs | None) -> None:
    for name, text in (("pg_hba.conf", hba_conf(role)), ("pg_ident.conf", ident_conf(role))):
        path = data / name
        path.write_text(text)
        path.chmod(0o600)
        chown(path, run_as)


# Files without which a copied data dir cannot start; a cache damaged by a full disk, a crash
# or a hand edit is rebuilt instead of failing every start with the same error.
_TEMPLATE_FILES = ("PG_VERSION", "global/pg_control", "global/pg_filenode.map", "pg_hba.conf")


def template_problem(template: Path) -> str | None:
    """Why the cached template cannot be used (a missing file), or None when it looks whole."""
    if not template.is_dir():
        return "missing"
    for name in _TEMPLATE_FILES:
        if not (template / name).is_file():
            return f"{name} is missing"
    if not any((template / "base").glob("*/PG_VERSION")):
        return "base/ holds no database"
    return None


def ensure_template(
    cache_dir: Path, pg: PgBinaries, run_as: RunAs | None, say: Say, role: str
) -> Path:
    """The initialised template data dir (role and database `role`); initdb only the first time,
    and again when the cached one is damaged."""
    final = template_dir(cache_dir, pg, run_as, role)
    if template_problem(final) is None:
        return final
    with cache_lock(cache_dir):
        problem = template_problem(final)
        if problem is None:
            return final
        if problem != "missing":
            say(f"the cached PostgreSQL template {final} is damaged ({problem}): rebuilding it")
        started = time.monotonic()
        say(f"initialising a PostgreSQL {pg.version} template data dir (once per version)…")
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".initdb-"))
        try:
            work.chmod(0o755)
            chown(work, run_as)
            data = work / "data"
            _initdb(pg, data, run_as, work, role)
            _create_database(pg, data, run_as, work, role)
            _write_auth_files(data, role, run_as)
            shutil.rmtree(final, ignore_errors=True)
            data.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"  template ready in {time.monotonic() - started:.2f} s: {final}")
    return final


def copy_template(template: Path, data: Path) -> None:
    """Copy the template to a fresh data dir, keeping owner and 0700 (cp -a is ~2x copytree)."""
    try:
        _copy(template, data)
    except (OSError, shutil.Error, subprocess.SubprocessError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        size = sum(f.stat().st_size for f in template.rglob("*") if f.is_file()) // 2**20
        raise ServicesUnavailable(
            f"copying the PostgreSQL template ({size} MB) to {data} failed: {_why(exc)}; "
            "free space there or set E2E_STATE_DIR to a directory with room"
        ) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        errors = exc.args[0]
        return str(errors[0][2]) if errors and len(errors[0]) == 3 else "copy failed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _copy(template: Path, data: Path) -> None:
    if shutil.which("cp"):
        proc = subprocess.run(
            ["cp", "-a", str(template), str(data)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            # cp's last line: "cp: error writing '...': No space left on device"
            reason = (proc.stderr.strip().splitlines() or ["cp failed"])[-1].rsplit(": ", 1)[-1]
            raise OSError(0, reason)
        return
    shutil.copytree(template, data, symlinks=True)
    st = template.stat()
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(data):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), st.st_uid, st.st_gid)
        os.chown(data, st.st_uid, st.st_gid)
    data.chmod(0o700)


def server_argv(pg: PgBinaries, data: Path, port: int, socket_dir: Path) -> list[str]:
    """postgres command line: 127.0.0.1 only, socket in our state dir, speed flags."""
    argv = [
        str(pg.postgres),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(socket_dir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_permissions=0700",
        "-c",
        "password_encryption=scram-sha-256",
        "-c",
        f"max_connections={MAX_CONNECTIONS}",
        # DSM segments as files in the data dir (on tmpfs): a killed server's segments go
        # with its data dir instead of piling up as /dev/shm/PostgreSQL.* files.
        "-c",
        "dynamic_shared_memory_type=mmap",
    ]
    for flag in SPEED_FLAGS:
        argv += ["-c", flag]
    return argv


def release_shared_memory(data: Path) -> str | None:
    """Remove the SysV segment a killed postmaster left (from postmaster.pid), if unattached."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        shmid = lines[6].split()[1]  # line 7: "<key> <shmid>"
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except (OSError, IndexError):
        return None
    for row in rows:
        cols = row.split()
        # columns: key shmid perms size cpid lpid nattch ...
        if len(cols) > 6 and cols[1] == shmid and cols[6] == "0" and shutil.which("ipcrm"):
            proc = subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False)
            return f"shared memory segment {shmid}" if proc.returncode == 0 else None
    return None


def bundled_library_dir(pg: PgBinaries) -> Path | None:
    """The install's own lib dir when it carries libpq (a relocatable build), else None.

    Such builds' modules (dblink, postgres_fdw) record their build-time path as RUNPATH; without
    this directory first on the loader path they bind the system's older libpq and fail to load.
    """
    lib = pg.bindir.parent / "lib"
    return lib if any(lib.glob("libpq.so*")) or any(lib.glob("libpq.*.dylib")) else None


def database_url(
    port: int, role: str, *, database: str | None = None, password: str | None = None
) -> str:
    """libpq URL of the native database (named like the role), with the role's password."""
    return postgres_url(role, password, port, database or role)


def set_passwords(admin_url: str, passwords: dict[str, str]) -> None:
    """Give each role (name -> password) its per-instance password, as SCRAM verifiers."""
    import psycopg
    from psycopg import sql

    from testbed.services.credentials import scram_verifier

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        for role, password in passwords.items():
            statement = sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(scram_verifier(password))
            )
            conn.execute(statement)


def create_app_role(admin_url: str, role: str, password: str) -> None:
    """The E2E role of a server whose image made only the superuser (docker): no superuser,
    its password, and ownership of the database named like it (its schema public follows)."""
    import psycopg
    from psycopg import sql

    from testbed.services.credentials import scram_verifier

    name = sql.Identifier(role)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE CREATEDB NOREPLICATION PASSWORD {}"
            ).format(name, sql.Literal(scram_verifier(password)))
        )
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, name))
