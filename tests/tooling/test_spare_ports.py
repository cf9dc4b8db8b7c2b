"""scripts/spare_ports.py: the ports `make example` runs the example apps on."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "spare_ports.py"


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spare_ports", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configured_ports_come_from_the_environment_else_testbeds_defaults(
    tool: ModuleType,
) -> None:
    assert tool.configured({}) == (5433, 6380)
    assert tool.configured({"E2E_PG_PORT": "", "E2E_REDIS_PORT": ""}) == (5433, 6380)
    assert tool.configured({"E2E_PG_PORT": "15433", "E2E_REDIS_PORT": "16380"}) == (15433, 16380)


def test_free_ports_are_kept(tool: ModuleType) -> None:
    def spare(near: int, avoid: tuple[int, ...] = ()) -> int:
        raise AssertionError("no spare port is needed while both are free")

    assert tool.choose(15433, 16380, free=lambda port: True, spare=spare) == (15433, 16380)


@pytest.mark.parametrize("taken", [15433, 16380])
def test_either_port_taken_moves_both_to_spare_ones(tool: ModuleType, taken: int) -> None:
    asked: list[tuple[int, tuple[int, ...]]] = []

    def spare(near: int, avoid: tuple[int, ...] = ()) -> int:
        asked.append((near, avoid))
        return near + 10

    assert tool.choose(15433, 16380, free=lambda port: port != taken, spare=spare) == (
        15444,
        16391,
    )
    # Each spare port lies above its own, and Valkey's never lands on PostgreSQL's.
    assert asked == [(15434, ()), (16381, (15444,))]


def test_without_spare_ports_the_configured_ones_stay(tool: ModuleType) -> None:
    def spare(near: int, avoid: tuple[int, ...] = ()) -> None:
        return None

    assert tool.choose(15433, 16380, free=lambda port: False, spare=spare) == (15433, 16380)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(pg: int, redis: int) -> subprocess.CompletedProcess[str]:
    env = {"E2E_PG_PORT": str(pg), "E2E_REDIS_PORT": str(redis)}
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=True
    )


def test_the_script_prints_free_ports_as_they_are(tool: ModuleType) -> None:
    pg = tool.spare_port(20000)
    redis = tool.spare_port(21000)
    assert pg is not None
    assert redis is not None
    done = _run(pg, redis)
    assert done.stdout == f"{pg} {redis}\n"
    assert done.stderr == ""


def test_the_script_names_the_spare_ports_it_picks(tool: ModuleType, taken_port: int) -> None:
    redis = tool.spare_port(21000)
    assert redis is not None
    done = _run(taken_port, redis)
    pg_spare, redis_spare = map(int, done.stdout.split())
    assert pg_spare != taken_port
    assert redis_spare not in (redis, pg_spare)
    assert done.stderr == (
        f"examples: the E2E ports {taken_port} and {redis} are not both free; "
        f"running the examples on {pg_spare} and {redis_spare}\n"
    )


@pytest.mark.parametrize("value", ["abc", "0", "-1", "70000"])
def test_a_malformed_port_is_refused_in_testbeds_words(value: str) -> None:
    """What testbed itself says of such a port, not a traceback (or port 0 passed on)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "E2E_PG_PORT": value, "E2E_REDIS_PORT": "21000"},
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"examples: E2E_PG_PORT: invalid port {value!r}: expected a number from 1 to 65535\n"
    )
