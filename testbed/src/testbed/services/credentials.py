"""Per-instance credentials: generated passwords kept in 0600 files of the state dir, the URLs
that carry them, and PostgreSQL SCRAM verifiers (so no plaintext password reaches the server).

Each start of the services generates new passwords: the app role's (in every URL testbed prints
or exports), the bootstrap superuser's (only testbed uses it: untrusted extensions, event
triggers) and Valkey's. Nothing in the cached template data dir or the compose file carries one.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from testbed.errors import ServicesUnavailable

PG_APP_FILE = "pg-app.password"
PG_ADMIN_FILE = "pg-admin.password"
VALKEY_FILE = "valkey.password"
FILES = (PG_APP_FILE, PG_ADMIN_FILE, VALKEY_FILE)
# The passwords are 256-bit random tokens: key stretching protects guessable passwords only, so
# a low iteration count costs no security and keeps each new connection's SCRAM exchange cheap.
SCRAM_ITERATIONS = 128


def admin_role(role: str) -> str:
    """The bootstrap superuser's name: the app role's plus `_admin` (keeps 'e2e' for the guard)."""
    return f"{role}_admin"


def new_password() -> str:
    """A fresh URL-safe password (no quoting needed in a URL or a config file)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credentials:
    """The passwords of one instance."""

    pg_app: str
    pg_admin: str
    valkey: str

    @classmethod
    def generate(cls) -> Credentials:
        """New passwords for a new instance."""
        return cls(new_password(), new_password(), new_password())

    def save(self, state_dir: Path) -> None:
        """Write each password to its own 0600 file (created, never followed or reused)."""
        for name, value in zip(FILES, (self.pg_app, self.pg_admin, self.valkey), strict=True):
            write_secret(state_dir / name, value)

    @classmethod
    def load(cls, state_dir: Path) -> Credentials | None:
        """The saved passwords, or None when any is missing or unreadable."""
        try:
            values = [read_secret(state_dir / name) for name in FILES]
        except OSError:
            return None
        return cls(*values) if all(values) else None


def write_secret(path: Path, value: str) -> None:
    """Create path 0600 with value; an existing file (or symlink) there is replaced, never
    written through."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ServicesUnavailable(
            f"cannot write {path}: {exc.strerror or exc}; choose a private E2E_STATE_DIR"
        ) from None
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")


def read_secret(path: Path) -> str:
    """The password in path (not following a symlink)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd) as handle:
        return handle.read().strip()


def scram_verifier(password: str, *, iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier for password (what ALTER ROLE ... PASSWORD stores).

    Sending the verifier instead of the password keeps the plaintext out of the server's
    statement log and its memory. The passwords are ASCII, so SASLprep leaves them unchanged.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def postgres_url(role: str, password: str | None, port: int, database: str) -> str:
    """libpq URL on 127.0.0.1 (the password, if any, in the userinfo)."""
    auth = f"{role}:{quote(password, safe='')}" if password else role
    return f"postgresql://{auth}@127.0.0.1:{port}/{database}"


def socket_url(role: str, socket_dir: Path, port: int, database: str) -> str:
    """libpq URL over the server's unix socket (peer authentication, no password)."""
    return f"postgresql://{role}@/{database}?host={quote(str(socket_dir), safe='/')}&port={port}"


def redis_url(password: str | None, port: int, db: int = 0) -> str:
    """redis URL on 127.0.0.1 (the password, if any, in the userinfo, with no user)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/{db}"
