"""Settings: each option declared once; precedence overrides > env > ini > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config import OPTIONS, Settings, load_settings, project_name
from testbed.errors import UsageError

REQUIRED = {
    "backend",
    "pg_port",
    "redis_port",
    "database_url",
    "redis_url",
    "pg_bin",
    "valkey_bin",
    "cache_dir",
    "state_dir",
    "wait_timeout",
    "seed",
    "keep",
    "require_services",
}


def test_options_cover_the_contract_and_are_declared_once() -> None:
    names = [o.name for o in OPTIONS]
    assert set(names) >= REQUIRED
    for attr in ("name", "env", "ini", "flag"):
        values = [getattr(o, attr) for o in OPTIONS]
        assert len(values) == len(set(values)), attr
    assert all(o.env.startswith("E2E_") and o.flag.startswith("--e2e-") for o in OPTIONS)
    assert all(o.help for o in OPTIONS)
    assert set(names) <= {f.name for f in Settings.__dataclass_fields__.values()}


def test_defaults() -> None:
    s = load_settings({})
    assert (s.backend, s.pg_port, s.redis_port) == ("auto", 5433, 6380)
    assert s.database_url is None
    assert s.redis_url is None
    assert s.wait_timeout == 30.0
    assert s.seed is None
    assert s.keep is False
    assert s.require_services is False
    assert s.project.startswith("opsdesk-e2e-")
    assert len(s.project) == len("opsdesk-e2e-") + 8
    assert s.state_dir.name == s.project
    assert s.compose_file == s.checkout / "docker-compose-e2e.yml"


def test_env_vars_are_parsed() -> None:
    s = load_settings(
        {
            "E2E_BACKEND": "Native",
            "E2E_PG_PORT": "15433",
            "E2E_REDIS_PORT": "16380",
            "E2E_WAIT_TIMEOUT": "2.5",
            "E2E_SEED": "42",
            "E2E_KEEP": "yes",
            "E2E_CACHE_DIR": "/tmp/c",
            "E2E_STATE_DIR": "/tmp/s",
            "E2E_PG_BIN": "/opt/pg/bin",
            "E2E_DATABASE_URL": "postgresql://opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e",
        }
    )
    assert (s.backend, s.pg_port, s.redis_port, s.wait_timeout) == ("native", 15433, 16380, 2.5)
    assert (s.seed, s.keep) == (42, True)
    assert (s.cache_dir, s.state_dir, s.pg_bin) == (
        Path("/tmp/c"),
        Path("/tmp/s"),
        Path("/opt/pg/bin"),
    )
    assert s.database_url is not None
    assert s.database_url.endswith("/opsdesk_e2e")


def test_precedence_overrides_beat_env_beat_ini_beat_defaults() -> None:
    env = {"E2E_PG_PORT": "6000"}
    assert load_settings(env).pg_port == 6000
    assert load_settings(env, pg_port="7000").pg_port == 7000
    assert load_settings(env, pg_port=7001).pg_port == 7001
    assert load_settings(env, ini={"pg_port": "8000"}).pg_port == 6000
    assert load_settings({}, ini={"pg_port": "8000"}).pg_port == 8000
    assert load_settings({}, ini={"pg_port": "8000"}, pg_port=None).pg_port == 8000


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"E2E_BACKEND.*'podman'.*auto, native, docker, external"):
        load_settings({"E2E_BACKEND": "podman"})


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_bad_port_is_a_usage_error_naming_the_variable(value: str) -> None:
    with pytest.raises(UsageError, match="E2E_REDIS_PORT"):
        load_settings({"E2E_REDIS_PORT": value})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "false"}, False),
        ({"CI": "true", "E2E_REQUIRE_SERVICES": "0"}, False),
        ({"E2E_REQUIRE_SERVICES": "on"}, True),
    ],
)
def test_require_services_follows_ci(env: dict[str, str], expected: bool) -> None:
    assert load_settings(env).require_services is expected


def test_bad_values() -> None:
    with pytest.raises(UsageError, match="boolean"):
        load_settings({"E2E_KEEP": "maybe"})
    with pytest.raises(UsageError, match="timeout"):
        load_settings({"E2E_WAIT_TIMEOUT": "0"})
    with pytest.raises(UsageError, match="seed"):
        load_settings({"E2E_SEED": "abc"})
    with pytest.raises(UsageError, match="unknown testbed setting"):
        load_settings({}, pg_prot=1)


def test_project_name_is_stable_and_differs_per_checkout(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert project_name(a) == project_name(a)
    assert project_name(a) != project_name(b)
    s = load_settings({}, checkout=a)
    assert s.project == project_name(a)
    assert s.checkout == a.resolve()
    assert load_settings({}, project="custom").project == "custom"
