"""Seeded test data without a database: replayable content, unique identities, stable ints."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from testbed.data import context
from testbed.data.context import EPOCH, DataContext, pools, slug, stable_int, test_seed

# The other seed test_data_seed.py and test_data_factory.py use.
OTHER_SEED = 1234


def test_stable_int_is_a_sha256_prefix_the_same_in_every_process() -> None:
    assert stable_int("a", 1) == stable_int("a", 1)
    assert stable_int("a", 1) != stable_int("a", 2)
    assert stable_int("a", 1) != stable_int("a1")  # parts are separated, not concatenated
    # sha256-based, unlike hash(): the same in every process and release.
    digest = hashlib.sha256(b"x\x1f7").digest()
    assert stable_int("x", 7) == int.from_bytes(digest[:8], "big") >> 1
    assert 0 <= stable_int("x", bits=8) < 256
    assert stable_int("x", bits=8) == stable_int("x") >> 55
    assert test_seed(7, "t.py::a") == stable_int(7, "t.py::a")


def test_the_same_seed_and_test_give_the_same_content() -> None:
    one, two = DataContext(7, "t.py::a"), DataContext(7, "t.py::a")
    values = [(d.name(), d.sentence(), d.text(2), d.words(3), d.integer(1, 9)) for d in (one, two)]
    assert values[0] == values[1]
    other = DataContext(OTHER_SEED, "t.py::a")
    assert [other.name() for _ in range(5)] != [DataContext(7, "t.py::a").name() for _ in range(5)]
    assert one.seed == test_seed(7, "t.py::a")


def test_identities_are_unique_per_call_test_and_seed_and_replayable() -> None:
    data = DataContext(7, "t.py::a")
    uids = [data.uid() for _ in range(3)]
    assert len(set(uids)) == 3
    assert all(u.version == 5 for u in uids)
    assert DataContext(7, "t.py::a").uid() == uids[0]
    assert DataContext(7, "t.py::b").uid() != uids[0]
    assert DataContext(OTHER_SEED, "t.py::a").uid() != uids[0]
    namespace = uuid.uuid5(context.IDENTITY_NAMESPACE, "7:t.py::a")
    assert uids[0] == uuid.uuid5(namespace, "1")
    assert data.token() == uuid.uuid5(namespace, "4").hex


def test_email_and_code() -> None:
    data = DataContext(7, "t.py::a")
    email = data.email("Ada Lovelace")
    local, domain = email.split("@")
    assert domain == "example.test"
    assert local.startswith("ada.lovelace.")
    assert len(local.rsplit(".", 1)[1]) == 32
    assert data.email(domain="corp.test").endswith("@corp.test")
    assert data.email() != data.email()
    code = data.code("INV-")
    assert code.startswith("INV-")
    assert len(code) == 4 + 12
    assert len(data.code("X", 5)) == 6


def test_money_is_decimal_with_two_places_in_range() -> None:
    data = DataContext(7, "t.py::a")
    amounts = [data.money(1, 3) for _ in range(200)]
    assert all(isinstance(a, Decimal) and a.as_tuple().exponent == -2 for a in amounts)
    assert all(Decimal("1.00") <= a <= Decimal("3.00") for a in amounts)
    assert len(set(amounts)) > 50  # cents vary, not only whole units


def test_moments_stay_around_the_fixed_epoch() -> None:
    data = DataContext(7, "t.py::a")
    moments = [data.moment(days_before=2, days_after=1) for _ in range(200)]
    assert all(EPOCH - timedelta(days=2) <= m <= EPOCH + timedelta(days=1) for m in moments)
    assert min(moments) < EPOCH < max(moments)
    assert all(m.tzinfo is not None for m in moments)


def test_choice_integer_and_pools() -> None:
    data = DataContext(7, "t.py::a")
    assert data.choice(("a", "b")) in ("a", "b")
    assert {data.integer(1, 2) for _ in range(50)} == {1, 2}
    assert data.pick("company") in pools()["company"]
    assert pools() is pools()  # made once per process
    assert len(pools()["word"]) == context.POOL_SIZE
    assert pools()["word"] == context.make_pools()["word"]  # deterministic
    with pytest.raises(KeyError):
        data.pick("no_such_pool")


# -- the pool cache -----------------------------------------------------------------------------
def _cached(cache_dir: Path) -> Path:
    (found,) = (cache_dir / "data-pools").glob("faker-*.json")
    return found


def test_pools_are_kept_in_the_cache_dir_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = pools.__wrapped__(tmp_path)
    assert made == pools()
    expected_name = DataContext(7, "t.py::a").name()
    path = _cached(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data-pools").stat().st_mode & 0o777 == 0o700
    # Read back without Faker: making them again would fail here.
    monkeypatch.setattr(context, "make_pools", lambda: pytest.fail("made again, not read"))
    assert pools.__wrapped__(tmp_path) == made
    assert DataContext(7, "t.py::a", cache_dir=tmp_path).name() == expected_name


@pytest.mark.parametrize(
    "spoil",
    ["not JSON", "a pool short", "an old format", "a link", "group-writable directory"],
)
def test_a_cache_file_that_is_not_whole_or_not_private_is_never_used(
    tmp_path: Path, spoil: str
) -> None:
    pools.__wrapped__(tmp_path)
    path = _cached(tmp_path)
    data = json.loads(path.read_text())
    planted = {k: ["planted"] * context.POOL_SIZE for k in data["pools"]}
    if spoil == "not JSON":
        path.write_text("{")
    elif spoil == "a pool short":
        del planted["city"]
        path.write_text(json.dumps({"format": context.POOLS_FORMAT, "pools": planted}))
    elif spoil == "an old format":
        path.write_text(json.dumps({"format": 0, "pools": planted}))
    elif spoil == "a link":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(json.dumps({"format": context.POOLS_FORMAT, "pools": planted}))
        path.unlink()
        path.symlink_to(elsewhere)
    else:
        path.write_text(json.dumps({"format": context.POOLS_FORMAT, "pools": planted}))
        path.parent.chmod(0o770)
    got = pools.__wrapped__(tmp_path)
    assert got == pools()
    assert "planted" not in got["city"]


def test_an_unusable_cache_dir_only_costs_making_the_pools(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the directory would go
    assert pools.__wrapped__(blocked) == pools()


def test_faker_is_seeded_for_the_test() -> None:
    one, two = DataContext(7, "t.py::a"), DataContext(7, "t.py::a")
    assert one.faker is one.faker
    assert one.faker.iban() == two.faker.iban()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ada Lovelace", "ada.lovelace"),
        ("  O'Brien-Smith  ", "o.brien.smith"),
        ("Zoë", "zo"),
        ("株式会社", "x"),
        ("", "x"),
        ("R2 D2", "r2.d2"),
    ],
)
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_pools_planted_by_another_user_are_never_used(tmp_path: Path) -> None:
    # Another local user owns the cache's data-pools directory and a whole, valid pool file.
    planted = {k: ["planted"] * context.POOL_SIZE for k in pools()}
    pools.__wrapped__(tmp_path)
    path = _cached(tmp_path)
    path.write_text(json.dumps({"format": context.POOLS_FORMAT, "pools": planted}))
    nobody = pwd.getpwnam("nobody")
    for owned in (path, path.parent):
        os.chown(owned, nobody.pw_uid, nobody.pw_gid)
    got = pools.__wrapped__(tmp_path)
    assert got == pools()
    assert path.stat().st_uid == nobody.pw_uid  # not written over either: the directory is theirs


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's directory needs root")
def test_no_directory_is_made_through_another_users_link(tmp_path: Path) -> None:
    # A cache dir below another user's directory: their link on the way must not make a root
    # run create directories where the link points (tried: /tmp/theirs/x -> /etc made /etc/cache).
    theirs, target = tmp_path / "theirs", tmp_path / "target"
    theirs.mkdir()
    target.mkdir()
    (theirs / "x").symlink_to(target)
    nobody = pwd.getpwnam("nobody")
    for owned in (theirs, theirs / "x"):
        os.lchown(owned, nobody.pw_uid, nobody.pw_gid)
    assert pools.__wrapped__(theirs / "x" / "cache") == pools()
    assert list(target.iterdir()) == []
