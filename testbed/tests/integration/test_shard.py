"""`make e2e SHARD=i/N` splits the E2E suite into N disjoint shards that together are the suite.

Collection only (`pytest --collect-only`), so no services are needed. The split flags below are
the ones scripts/e2e.sh passes when SHARD is set (contract in the README's CI section).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[3] / "backend"
ROOT = BACKEND.parent
E2E = BACKEND / "tests" / "e2e"
DURATIONS = BACKEND / ".test_durations"
NO_TESTS_COLLECTED = 5
# Each module fixture collects a suite a dozen times in a child process (about 10 s of CPU);
# pytest's 120 s default is too short for that beside `make integration`'s other worker on a
# loaded machine, and the child's own 600 s bound stays the limit that matters.
pytestmark = pytest.mark.timeout(600)


def split_flags(group: int, splits: int, durations: Path, seed: str) -> list[str]:
    """pytest-split flags for one shard, plus the shared shuffle seed every shard must use."""
    return [
        f"--splits={splits}",
        f"--group={group}",
        f"--durations-path={durations}",
        "--splitting-algorithm=least_duration",
        f"--randomly-seed={seed}",
    ]


def clean_env() -> dict[str, str]:
    """This process's environment without what the outer pytest run would leak into a child."""
    leaks = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")
    return {k: v for k, v in os.environ.items() if k not in leaks}


# One child process runs `pytest --collect-only -q` once per argument list: a pytest start-up
# with this project's plugins costs ~2 s, a further in-process collection ~0.1 s. Test modules
# are dropped from sys.modules between runs so each collection imports them afresh.
DRIVER = """
import json, sys, pytest

class Recorder:
    def __init__(self):
        self.ids = []
    def pytest_collection_finish(self, session):
        self.ids = [item.nodeid for item in session.items]

target, arglists = sys.argv[1], json.loads(sys.argv[2])
results = []
for args in arglists:
    recorder = Recorder()
    rc = pytest.main(["--collect-only", "-q", target, *args], plugins=[recorder])
    results.append([int(rc), recorder.ids])
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(target):
            del sys.modules[name]
print("@@collected@@" + json.dumps(results))
"""


def collect_many(target: Path, *arglists: list[str]) -> list[tuple[int, list[str]]]:
    """Collect target once per argument list; return (exit code, node ids) for each."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(target), json.dumps(arglists)],
        cwd=BACKEND,
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
        check=False,
    )
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@collected@@")]
    if proc.returncode != 0 or not marker:
        pytest.fail(
            f"collecting {target} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    results = [(rc, ids) for rc, ids in json.loads(marker[0].removeprefix("@@collected@@"))]
    for args, (rc, _) in zip(arglists, results, strict=True):
        if rc not in (0, NO_TESTS_COLLECTED):
            pytest.fail(f"pytest --collect-only {target} {' '.join(args)} exited {rc}")
    return results


def shard_arglists(
    splits_list: list[int], durations: Path, seed: str, *extra: str
) -> list[list[str]]:
    """Argument lists of every shard of every N in splits_list, in order."""
    return [
        [*extra, *split_flags(group, splits, durations, seed)]
        for splits in splits_list
        for group in range(1, splits + 1)
    ]


def assert_partitions(
    full: list[str], splits_list: list[int], shards: list[tuple[int, list[str]]]
) -> None:
    """For each N, the N shards (in shard_arglists order) are disjoint and cover full."""
    assert full, "the suite collected no tests"
    assert len(full) == len(set(full)), "the suite itself has duplicate node ids"
    assert len(shards) == sum(splits_list)
    for splits in splits_list:
        mine, shards = shards[:splits], shards[splits:]
        seen: dict[str, int] = {}
        for group, (rc, ids) in enumerate(mine, start=1):
            assert rc == (0 if ids else NO_TESTS_COLLECTED), f"shard {group}/{splits} exited {rc}"
            for node in ids:
                assert node not in seen, f"{node} is in shards {seen[node]} and {group} of {splits}"
                seen[node] = group
        assert sorted(seen) == sorted(full), (
            f"shards of {splits} miss {sorted(set(full) - set(seen))[:5]} "
            f"or add {sorted(set(seen) - set(full))[:5]}"
        )


# The real suite: collected once in one child process (a collection imports the whole app),
# in full and as every shard of N = 2 and 3 (CI runs 3).
E2E_SPLITS = [2, 3]
E2E_SEED = "20251125"


@pytest.fixture(scope="module")
def e2e_runs() -> list[tuple[int, list[str]]]:
    """(exit code, node ids) of the full E2E collection, then of each shard."""
    return collect_many(E2E, [], *shard_arglists(E2E_SPLITS, DURATIONS, E2E_SEED))


def test_shards_partition_the_e2e_suite(e2e_runs: list[tuple[int, list[str]]]) -> None:
    """The real suite with the committed durations, N = 2 and 3: each test in one shard."""
    (_, full), *shards = e2e_runs
    assert_partitions(full, E2E_SPLITS, shards)


# The dummy suite tests pytest-split + pytest-randomly alone; the real suite above covers testbed.
NO_HARNESS = ("-p", "no:testbed")
DUMMY_FILES = {
    # Same function names in different files and classes: the ties pytest-split breaks by order.
    "test_alpha.py": """
        import pytest
        def test_create(): pass
        def test_update(): pass
        @pytest.mark.parametrize("n", range(2))
        def test_many(n): pass
    """,
    "test_beta.py": """
        def test_create(): pass
        class TestThing:
            def test_create(self): pass
    """,
    "sub/test_gamma.py": """
        def test_slow(): pass
    """,
}
DUMMY_SPLITS = [2, 9]
DUMMY_SEEDS = ["1", "987654"]


@pytest.fixture(scope="module")
def dummy_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[int, list[str]]]]:
    """A 7-test suite with name ties and partial timings, collected in one child process.

    Keys: "full"; each seed (its shards of DUMMY_SPLITS); "mixed" (the two halves of a split
    whose shards were shuffled with different seeds, pytest-split's default algorithm).
    """
    tmp_path = tmp_path_factory.mktemp("shard")
    suite = tmp_path / "suite"
    for name, body in DUMMY_FILES.items():
        (suite / name).parent.mkdir(parents=True, exist_ok=True)
        (suite / name).write_text(textwrap.dedent(body))
    durations = tmp_path / "durations.json"
    # Timings for the first five tests in file order only: the rest are unknown to pytest-split.
    names = ["test_alpha.py::test_create", "test_alpha.py::test_update"]
    names += [f"test_alpha.py::test_many[{n}]" for n in range(2)] + ["test_beta.py::test_create"]
    durations.write_text(json.dumps(dict.fromkeys(names, 0.5)))
    mixed = [*NO_HARNESS, "--splits=2", f"--durations-path={durations}"]
    arglists = [list(NO_HARNESS)]
    for seed in DUMMY_SEEDS:
        arglists += shard_arglists(DUMMY_SPLITS, durations, seed, *NO_HARNESS)
    arglists += [
        [*mixed, "--group=1", "--randomly-seed=1"],
        [*mixed, "--group=2", "--randomly-seed=2"],
    ]
    results = collect_many(suite, *arglists)
    out = {"full": results[:1]}
    rest = results[1:]
    for seed in DUMMY_SEEDS:
        out[seed], rest = rest[: sum(DUMMY_SPLITS)], rest[sum(DUMMY_SPLITS) :]
    out["mixed"] = rest
    return out


@pytest.mark.parametrize("seed", DUMMY_SEEDS)
def test_shards_partition_a_suite_with_name_ties(
    dummy_runs: dict[str, list[tuple[int, list[str]]]], seed: str
) -> None:
    """Shuffled order, name ties, unknown timings, more shards than tests: still a partition."""
    [(_, full)] = dummy_runs["full"]
    assert len(full) == 7
    assert_partitions(full, DUMMY_SPLITS, dummy_runs[seed])


def test_shards_that_shuffle_differently_do_not_partition(
    dummy_runs: dict[str, list[tuple[int, list[str]]]],
) -> None:
    """Negative control: why e2e.sh must give every shard the same seed.

    With pytest-split's default algorithm and a different pytest-randomly seed per shard,
    the two halves of this suite overlap and miss tests, so the check above has teeth.
    """
    [(_, full)] = dummy_runs["full"]
    (_, first), (_, second) = dummy_runs["mixed"]
    assert set(first) & set(second) or set(full) - set(first) - set(second)


def test_committed_durations_match_the_suite(e2e_runs: list[tuple[int, list[str]]]) -> None:
    """backend/.test_durations is {nodeid: seconds} in the ids pytest uses for the E2E suite."""
    data = json.loads(DURATIONS.read_text())
    assert isinstance(data, dict)
    assert data, "backend/.test_durations is empty; regenerate it with --store-durations"
    assert all(isinstance(v, int | float) and v >= 0 for v in data.values())
    (_, full), *_ = e2e_runs
    known = set(data) & set(full)
    assert len(known) >= len(full) // 2, (
        f"only {len(known)} of {len(full)} E2E tests have a timing; regenerate with "
        '`make e2e PYTEST_ARGS="--store-durations --clean-durations"`'
    )


def run_e2e_sh(shard: str, pytest_args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/e2e.sh as `make e2e` would, with SHARD and PYTEST_ARGS set."""
    script = ROOT / "scripts" / "e2e.sh"
    if not script.is_file():
        pytest.fail("scripts/e2e.sh is missing")
    env = clean_env() | {
        "N": "0",
        "SHARD": shard,
        "PYTEST_ARGS": pytest_args,
        "E2E_VENV": str(Path(sys.prefix)),
    }
    return subprocess.run(
        [str(script)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_an_empty_shard_is_not_a_failure() -> None:
    """A shard left empty (here by a selection that matches nothing) exits 0 through e2e.sh."""
    proc = run_e2e_sh("2/2", "--collect-only -k no_test_is_named_like_this")
    assert proc.returncode == 0, f"e2e.sh exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def test_a_malformed_shard_is_a_usage_error() -> None:
    """SHARD must be i/N with 1 <= i <= N; anything else fails before any service starts."""
    proc = run_e2e_sh("4/3", "--collect-only")
    assert proc.returncode != 0
