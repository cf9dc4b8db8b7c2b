"""Seeded test data without a database: replayable content, unique identities, stable ints."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from testbed.data import context
from testbed.data.context import EPOCH, DataContext, pools, slug, stable_int, test_seed

# The other seed test_data_seed.py and test_data_factory.py use: a seed's Faker pools (0.2-0.5 s)
# are built once per process, for every seed a test names.
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
    assert data.pick("company") in pools(7)["company"]
    assert pools(7) is pools(7)  # built once per process and seed
    assert len(pools(7)["word"]) == context.POOL_SIZE
    assert pools(7)["word"] == pools.__wrapped__(7)["word"]  # deterministic
    with pytest.raises(KeyError):
        data.pick("no_such_pool")


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
