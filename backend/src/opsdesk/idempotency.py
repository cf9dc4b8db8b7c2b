"""Idempotency keys for create tools, kept in Valkey with SET NX + TTL.

Key: ``<prefix>idem:<tool>:<key>``. Value: ``pending:<fingerprint>`` while the first call runs,
then ``done:<fingerprint>:<id>``. A retry with the same key and arguments returns the same id
and creates nothing; the same key with different arguments is a Conflict.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from opsdesk.errors import Conflict, InvalidArgument

KEY_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
_KEY_RE = re.compile(KEY_PATTERN)
DEFAULT_TTL = 24 * 3600


class KeyValueStore(Protocol):
    """The slice of redis.Redis this module uses (a fake fits in unit tests)."""

    def get(self, name: str) -> Any:
        """Return the value or None."""
        ...

    def set(
        self, name: str, value: str, *, ex: int | None = None, nx: bool = False, xx: bool = False
    ) -> Any:
        """Set the value; with nx only if missing, with xx only if present."""
        ...

    def delete(self, *names: str) -> Any:
        """Delete keys."""
        ...


def fingerprint(arguments: dict[str, Any]) -> str:
    """Return a short stable hash of a call's arguments (key excluded by the caller)."""
    raw = json.dumps(arguments, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class IdempotencyStore:
    """Remembers which object a (tool, idempotency key) pair created."""

    def __init__(
        self,
        redis: KeyValueStore,
        *,
        prefix: str = "",
        ttl: int = DEFAULT_TTL,
        wait: float = 5.0,
        poll: float = 0.05,
    ) -> None:
        """Keep keys for ``ttl`` seconds; wait up to ``wait`` s for a concurrent first call."""
        self.redis, self.prefix, self.ttl, self.wait, self.poll = redis, prefix, ttl, wait, poll

    def redis_key(self, tool: str, key: str) -> str:
        """Return the Valkey key for ``key`` used with ``tool``."""
        if not _KEY_RE.fullmatch(key):
            raise InvalidArgument(
                f"idempotency_key {key!r} is not valid: use 1-128 of A-Z a-z 0-9 . _ : -"
            )
        return f"{self.prefix}idem:{tool}:{key}"

    def _read(self, rkey: str, fp: str) -> int | None:
        raw = self.redis.get(rkey)
        if raw is None:
            return None
        value = raw.decode() if isinstance(raw, bytes) else str(raw)
        state, _, rest = value.partition(":")
        stored_fp, _, id_text = rest.partition(":")
        if stored_fp != fp:
            raise Conflict(
                "this idempotency_key was already used with different arguments; "
                "use a new key for a new request"
            )
        return int(id_text) if state == "done" else -1

    def run(self, tool: str, key: str, fp: str, create: Callable[[], int]) -> tuple[int, bool]:
        """Return (id, replayed): the stored id on a repeat, else the id ``create()`` returns."""
        rkey = self.redis_key(tool, key)
        deadline = time.monotonic() + self.wait
        while True:
            if self.redis.set(rkey, f"pending:{fp}", ex=self.ttl, nx=True):
                break  # we own the key: do the work
            found = self._read(rkey, fp)
            if found is not None and found >= 0:
                return found, True
            if found is None:
                continue  # expired or released between SET and GET: try to claim again
            if time.monotonic() >= deadline:
                raise Conflict(
                    f"a call with idempotency_key {key!r} is still in progress; retry shortly"
                )
            time.sleep(self.poll)
        try:
            new_id = create()
        except BaseException:
            # The create failed and committed nothing: free the key so a retry can run.
            self.redis.delete(rkey)
            raise
        self.redis.set(rkey, f"done:{fp}:{new_id}", ex=self.ttl)
        return new_id, False
