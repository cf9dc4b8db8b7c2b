"""Reproducible test data: per-test seeds, cheap seeded value pools, and unique identities.

Content (names, text, amounts, dates) is a pure function of (run seed, test id), so
`--e2e-seed N` replays it exactly. Faker costs 10-80 us per call, so Faker only fills
small pools, the same for every run; rows pick from them with a seeded random.Random
(~0.3 us a pick). Importing Faker and filling the pools costs 0.25-0.3 s of CPU, in every xdist
worker, so the pools are kept in the user's cache dir once made (one file per Faker version).
Identities (emails, codes, numbers) embed a UUID5 of (run seed, test id, counter): test ids
are unique within a run, so two workers never collide; a fresh run gets a fresh random seed,
so reruns and shared external services don't collide either.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    # Faker is imported only when pools are made or a test asks for its Faker (~0.2 s of CPU).
    from faker import Faker

T = TypeVar("T")

# Fixed namespace for identity UUIDs (uuid5 of the project name): stable across releases.
IDENTITY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "testbed.e2e")
POOL_SIZE = 400
LOCALE = "en_US"
POOLS_FORMAT = 1  # bump when what a pool file holds changes
# A fixed "now" keeps dates replayable: datetime.now() would differ between replays.
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

_POOL_PROVIDERS = (
    "first_name",
    "last_name",
    "company",
    "domain_word",
    "word",
    "sentence",
    "paragraph",
    "catch_phrase",
    "job",
    "phone_number",
    "city",
)


def stable_int(*parts: object, bits: int = 63) -> int:
    """A stable non-negative int from the parts (sha256; unlike hash(), same in every process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


def test_seed(run_seed: int, nodeid: str) -> int:
    """The Faker/random seed of one test: a function of the run seed and the test id only."""
    return stable_int(run_seed, nodeid)


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


Pools = dict[str, tuple[str, ...]]


@cache
def pools(cache_dir: Path | None = None) -> Pools:
    """Faker-made value pools, the same for every run seed (a test's seeded random picks from
    them). Made once per process; with a cache dir, once per Faker version and user: later
    processes read them back (a few ms instead of 0.25-0.3 s). A cache file that is not ours,
    not private or not whole is never used: the pools are made again."""
    if cache_dir is None:
        return make_pools()
    from importlib.metadata import version

    path = cache_dir / "data-pools" / f"faker-{version('faker')}-{LOCALE}-{POOL_SIZE}.json"
    found = _read_pools(path)
    if found is not None:
        return found
    made = make_pools()
    _write_pools(path, made)
    return made


def make_pools() -> Pools:
    """The pools, from Faker with a fixed seed."""
    from faker import Faker

    faker = Faker(LOCALE)
    faker.seed_instance(stable_int("pools"))
    return {
        name: tuple(getattr(faker, name)() for _ in range(POOL_SIZE)) for name in _POOL_PROVIDERS
    }


def _read_pools(path: Path) -> Pools | None:
    from testbed.errors import UnsafePath
    from testbed.services import private

    try:
        private.require_private(path.parent, what="data pool cache", fix="")
    except (OSError, UnsafePath):  # not private, or a file where a directory should be
        return None
    data = private.read_json(path)  # ours, a regular file, not followed through a link
    if data is None or data.get("format") != POOLS_FORMAT:
        return None
    found = data.get("pools")
    if not isinstance(found, dict) or set(found) != set(_POOL_PROVIDERS):
        return None
    if not all(
        isinstance(values, list)
        and len(values) == POOL_SIZE
        and all(isinstance(v, str) for v in values)
        for values in found.values()
    ):
        return None
    return {name: tuple(found[name]) for name in _POOL_PROVIDERS}


def _write_pools(path: Path, made: Pools) -> None:
    """Keep the pools for the next process; a cache dir we cannot use only costs that."""
    from testbed.errors import UnsafePath
    from testbed.services import private

    try:
        if private.path_problem(path.parent) is not None:
            return  # another user could swap a directory on the way: create nothing through it
        path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        private.make_private(path.parent, what="data pool cache", fix="")
        payload = {"format": POOLS_FORMAT, "pools": {k: list(v) for k, v in made.items()}}
        private.write_atomic(path, json.dumps(payload))
    except (OSError, UnsafePath):
        pass


class DataContext:
    """Seeded generators for one test: the same (run seed, test id) gives the same values."""

    def __init__(self, run_seed: int, nodeid: str, *, cache_dir: Path | None = None) -> None:
        self.run_seed = run_seed
        self.nodeid = nodeid
        self.seed = test_seed(run_seed, nodeid)
        self.rng = random.Random(self.seed)
        self._pools = pools(cache_dir)
        self._namespace = uuid.uuid5(IDENTITY_NAMESPACE, f"{run_seed}:{nodeid}")
        self._counter = itertools.count(1)
        self._faker: Faker | None = None

    @property
    def faker(self) -> Faker:
        """A Faker seeded for this test, for the rare value no pool has (slower: ~50 us a call)."""
        if self._faker is None:
            from faker import Faker

            self._faker = Faker(LOCALE)
            self._faker.seed_instance(self.seed)
        return self._faker

    # Identities ---------------------------------------------------------------------------
    def uid(self) -> uuid.UUID:
        """A fresh UUID unique to this seed, test and call (uuid5 of the test's namespace)."""
        return uuid.UUID(bytes=self._uid_bytes())

    def token(self) -> str:
        """A fresh 32-hex-char unique token (the uid without dashes)."""
        return self._uid_bytes().hex()

    def _uid_bytes(self) -> bytes:
        """The next uid's 16 bytes, as uuid.uuid5 makes them (SHA-1 of the namespace and the
        counter, version 5, RFC 4122 variant), without building a UUID: a token or an email
        costs a third of what it did through uuid5(...).hex."""
        digest = bytearray(
            hashlib.sha1(
                self._namespace.bytes + str(next(self._counter)).encode(), usedforsecurity=False
            ).digest()[:16]
        )
        digest[6] = (digest[6] & 0x0F) | 0x50
        digest[8] = (digest[8] & 0x3F) | 0x80
        return bytes(digest)

    def email(self, name: str | None = None, *, domain: str = "example.test") -> str:
        """A unique email whose local part starts with a readable slug of the name."""
        base = slug(name) if name else self.pick("first_name").lower()
        return f"{base}.{self.token()}@{domain}"

    def code(self, prefix: str, length: int = 12) -> str:
        """A unique short code such as INV-3f2a9c0d1b2e (length hex chars of a fresh uid)."""
        return f"{prefix}{self.token()[:length]}"

    # Content ------------------------------------------------------------------------------
    def pick(self, pool: str) -> str:
        """One value from a Faker pool (first_name, last_name, company, word, sentence, ...)."""
        return self.rng.choice(self._pools[pool])

    def name(self) -> str:
        """A person's full name."""
        return f"{self.pick('first_name')} {self.pick('last_name')}"

    def words(self, k: int) -> list[str]:
        """k words (with repetition) from the word pool."""
        return self.rng.choices(self._pools["word"], k=k)

    def sentence(self) -> str:
        """A sentence."""
        return self.pick("sentence")

    def text(self, sentences: int = 3) -> str:
        """A paragraph of `sentences` sentences."""
        return " ".join(self.rng.choices(self._pools["sentence"], k=sentences))

    def choice(self, options: tuple[T, ...] | list[T]) -> T:
        """One of the options."""
        return self.rng.choice(options)

    def integer(self, low: int, high: int) -> int:
        """An int in [low, high]."""
        return self.rng.randint(low, high)

    def money(self, low: int = 1, high: int = 10_000) -> Decimal:
        """A Decimal amount with two places in [low, high] (never a float)."""
        return Decimal(self.rng.randint(low * 100, high * 100)).scaleb(-2)

    def moment(self, *, days_before: int = 30, days_after: int = 30) -> datetime:
        """A UTC datetime around the fixed EPOCH (replayable, unlike now())."""
        minutes = self.rng.randint(-days_before * 1440, days_after * 1440)
        return EPOCH + timedelta(minutes=minutes)


@lru_cache(maxsize=65536)
def slug(text: str) -> str:
    """Lowercase ASCII letters/digits joined by dots: 'Ada Lovelace' -> 'ada.lovelace'."""
    out = "".join(ch if ch.isascii() and ch.isalnum() else " " for ch in text.lower())
    return ".".join(out.split()) or "x"
