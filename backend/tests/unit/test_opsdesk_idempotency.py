"""Idempotency keys: SET NX claim, replay, argument mismatch, release on failure (fake Valkey)."""

from __future__ import annotations

from typing import Any

import pytest

from opsdesk.errors import Conflict, InvalidArgument
from opsdesk.idempotency import IdempotencyStore, fingerprint


class FakeValkey:
    """Just enough of redis.Redis: get / set(ex, nx, xx) / delete, with TTLs recorded."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl: dict[str, int | None] = {}

    def get(self, name: str) -> bytes | None:
        value = self.data.get(name)
        return None if value is None else value.encode()

    def set(
        self, name: str, value: str, *, ex: int | None = None, nx: bool = False, xx: bool = False
    ) -> bool | None:
        if (nx and name in self.data) or (xx and name not in self.data):
            return None
        self.data[name], self.ttl[name] = value, ex
        return True

    def delete(self, *names: str) -> int:
        return sum(self.data.pop(n, None) is not None for n in names)


@pytest.fixture
def valkey() -> FakeValkey:
    """An empty fake Valkey."""
    return FakeValkey()


def counter() -> Any:
    """Return a create() that hands out 101, 102, ... and counts its calls."""
    calls: list[int] = []

    def create() -> int:
        calls.append(100 + len(calls) + 1)
        return calls[-1]

    create.calls = calls  # type: ignore[attr-defined]
    return create


def test_first_call_creates_and_stores_the_id(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey, prefix="gw0:", ttl=60)
    create = counter()
    assert store.run("crm_create_contact", "k-1", "fp", create) == (101, False)
    assert valkey.data["gw0:idem:crm_create_contact:k-1"] == "done:fp:101"
    assert valkey.ttl["gw0:idem:crm_create_contact:k-1"] == 60


def test_retry_returns_the_same_id_and_creates_nothing(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey)
    create = counter()
    store.run("t", "k", "fp", create)
    assert store.run("t", "k", "fp", create) == (101, True)
    assert create.calls == [101]


def test_same_key_other_tool_is_independent(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey)
    store.run("a", "k", "fp", counter())
    assert store.run("b", "k", "fp", counter()) == (101, False)


def test_same_key_with_different_arguments_is_a_conflict(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey)
    store.run("t", "k", fingerprint({"name": "A"}), counter())
    with pytest.raises(Conflict, match="different arguments"):
        store.run("t", "k", fingerprint({"name": "B"}), counter())


def test_failed_create_releases_the_key(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey)

    def boom() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        store.run("t", "k", "fp", boom)
    assert valkey.data == {}
    assert store.run("t", "k", "fp", counter()) == (101, False)


def test_call_in_progress_is_a_conflict_after_waiting(valkey: FakeValkey) -> None:
    store = IdempotencyStore(valkey, wait=0.05, poll=0.01)
    valkey.data["idem:t:k"] = "pending:fp"
    with pytest.raises(Conflict, match="still in progress"):
        store.run("t", "k", "fp", counter())


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon", "ключ"])
def test_malformed_keys_are_refused(valkey: FakeValkey, key: str) -> None:
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        IdempotencyStore(valkey).run("t", key, "fp", counter())


def test_fingerprint_is_order_independent_and_argument_sensitive() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
