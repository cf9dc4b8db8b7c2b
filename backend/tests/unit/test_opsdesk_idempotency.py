"""Idempotency store without services: the Valkey lease (a fake) around records (a dict)."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session

from opsdesk import idempotency
from opsdesk.creation import Creation
from opsdesk.errors import Conflict, InvalidArgument
from opsdesk.idempotency import IdempotencyStore, fingerprint


class FakeValkey:
    """Just enough of redis.Redis: get / set(px, nx) / delete, with TTLs recorded."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl_ms: dict[str, int | None] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("Valkey is down")

    def get(self, name: str) -> bytes | None:
        self._check()
        value = self.data.get(name)
        return None if value is None else value.encode()

    def set(self, name: str, value: str, *, px: int | None = None, nx: bool = False) -> bool | None:
        self._check()
        if nx and name in self.data:
            return None
        self.data[name], self.ttl_ms[name] = value, px
        return True

    def delete(self, *names: str) -> int:
        self._check()
        return sum(self.data.pop(n, None) is not None for n in names)


class FakeSession:
    """Stands in for a Session: only ``info`` is used by Creation.watch."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}


def fake_session() -> Session:
    """A FakeSession, typed as what the store takes."""
    return cast(Session, FakeSession())


class Store(IdempotencyStore):
    """The store with its PostgreSQL records in a dict."""

    def __init__(self, redis: FakeValkey, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self.records: dict[tuple[str, str], tuple[str, int]] = {}

    def find(self, session: Any, creation: Creation) -> int | None:
        assert creation.key is not None
        found = self.records.get((creation.tool, creation.key))
        if found is None:
            return None
        if found[0] != creation.fingerprint:
            raise Conflict("this idempotency_key was already used with different arguments")
        return found[1]


def creation(key: str = "k-1", fp: str = "fp") -> Creation:
    """A create of crm_create_contact with ``key``."""
    return Creation("crm_create_contact", object, key=key, fingerprint=fp)


def maker(store: Store, made: Creation, new_id: int = 101) -> Callable[[], int]:
    """A make() that 'commits' ``new_id`` with its record, as the real Session events would."""

    def make() -> int:
        made.object_id, made.committed = new_id, True
        assert made.key is not None
        store.records[(made.tool, made.key)] = (made.fingerprint, new_id)
        return new_id

    return make


@pytest.fixture
def valkey() -> FakeValkey:
    """An empty fake Valkey."""
    return FakeValkey()


def test_first_call_creates_under_a_short_lease_and_releases_it(valkey: FakeValkey) -> None:
    store = Store(valkey, prefix="gw0:", lease=2.5)
    seen: dict[str, Any] = {}
    made = creation()

    def make() -> int:
        seen.update(valkey.data)
        seen["ttl"] = valkey.ttl_ms["gw0:idem:crm_create_contact:k-1"]
        return maker(store, made)()

    assert store.run(fake_session(), made, make) == (101, False)
    assert seen == {"gw0:idem:crm_create_contact:k-1": "pending:fp", "ttl": 2500}
    assert valkey.data == {}


def test_a_recorded_key_replays_without_valkey(valkey: FakeValkey) -> None:
    store = Store(valkey)
    store.records[("crm_create_contact", "k-1")] = ("fp", 7)
    valkey.down = True
    assert store.run(fake_session(), creation(), lambda: 1 / 0) == (7, True)


def test_same_key_with_different_arguments_is_a_conflict(valkey: FakeValkey) -> None:
    store = Store(valkey)
    store.records[("crm_create_contact", "k-1")] = (fingerprint({"name": "A"}), 7)
    with pytest.raises(Conflict, match="different arguments"):
        store.run(fake_session(), creation(fp=fingerprint({"name": "B"})), lambda: 1)


def test_a_lease_held_for_other_arguments_is_a_conflict(valkey: FakeValkey) -> None:
    valkey.data["idem:crm_create_contact:k-1"] = "pending:other"
    with pytest.raises(Conflict, match="different arguments"):
        Store(valkey).run(fake_session(), creation(), lambda: 1)


def test_a_held_lease_is_waited_for_until_the_record_appears(valkey: FakeValkey) -> None:
    store = Store(valkey, wait=2.0, poll=0.01)
    valkey.data["idem:crm_create_contact:k-1"] = "pending:fp"
    polls: list[int] = []
    original = store.find

    def find_on_third_poll(session: Any, creation: Creation) -> int | None:
        polls.append(1)
        if len(polls) == 3:
            store.records[("crm_create_contact", "k-1")] = ("fp", 55)
        return original(session, creation)

    store.find = find_on_third_poll  # type: ignore[method-assign,assignment]
    assert store.run(fake_session(), creation(), lambda: 1 / 0) == (55, True)
    assert valkey.data == {"idem:crm_create_contact:k-1": "pending:fp"}  # not ours to release


def test_a_lease_nobody_finishes_is_in_progress_after_waiting(valkey: FakeValkey) -> None:
    valkey.data["idem:crm_create_contact:k-1"] = "pending:fp"
    started = time.monotonic()
    with pytest.raises(Conflict, match="still in progress"):
        Store(valkey, wait=0.05, poll=0.01).run(fake_session(), creation(), lambda: 1)
    assert time.monotonic() - started < 1.0


def test_a_create_that_fails_before_commit_frees_the_key(valkey: FakeValkey) -> None:
    store = Store(valkey)

    def fail() -> int:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        store.run(fake_session(), creation(), fail)
    assert valkey.data == {}
    made = creation()
    assert store.run(fake_session(), made, maker(store, made)) == (101, False)


def test_a_create_refused_because_a_racer_recorded_the_key_replays_the_racer(
    valkey: FakeValkey,
) -> None:
    store = Store(valkey)

    def lose_the_race() -> int:
        store.records[("crm_create_contact", "k-1")] = ("fp", 9)  # the other call committed
        raise Conflict("idempotency_key 'k-1' was just used by another call")

    assert store.run(fake_session(), creation(), lose_the_race) == (9, True)


def test_a_failure_after_commit_is_raised_for_the_app_to_name_the_object(
    valkey: FakeValkey,
) -> None:
    store = Store(valkey)
    made = creation()

    def commit_then_fail() -> int:
        maker(store, made)()
        raise RuntimeError("after commit")

    with pytest.raises(RuntimeError, match="after commit"):
        store.run(fake_session(), made, commit_then_fail)
    assert (made.object_id, made.committed) == (101, True)


def test_valkey_failing_after_the_commit_does_not_fail_the_call(valkey: FakeValkey) -> None:
    store = Store(valkey)
    made = creation()

    def commit_then_lose_valkey() -> int:
        new_id = maker(store, made)()
        valkey.down = True
        return new_id

    assert store.run(fake_session(), made, commit_then_lose_valkey) == (101, False)
    assert store.run(fake_session(), creation(), lambda: 1 / 0) == (101, True)


def test_an_expired_lease_is_not_released_as_it_may_be_another_calls(
    valkey: FakeValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]  # the store's clock: the call outlives its lease without waiting for it
    clock = types.SimpleNamespace(monotonic=lambda: now[0], sleep=time.sleep)
    monkeypatch.setattr(idempotency, "time", clock)
    store = Store(valkey, lease=0.01)
    made = creation()

    def slow() -> int:
        now[0] += 0.03
        valkey.data["idem:crm_create_contact:k-1"] = "pending:fp"  # a later call's lease
        return maker(store, made)()

    assert store.run(fake_session(), made, slow) == (101, False)
    assert valkey.data == {"idem:crm_create_contact:k-1": "pending:fp"}


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon", "ключ"])
def test_malformed_keys_are_refused(valkey: FakeValkey, key: str) -> None:
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        Store(valkey).run(fake_session(), creation(key=key), lambda: 1)


def test_fingerprint_is_order_independent_and_argument_sensitive() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
