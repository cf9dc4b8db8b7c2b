"""Settings: each option declared once; precedence overrides > env > ini > defaults."""

from __future__ import annotations

import os
import re
import tempfile
import types
from pathlib import Path

import pytest

from testbed import config
from testbed.config import OPTIONS, Settings, default_state_root, load_settings, project_name
from testbed.config.inifile import find_ini, ini_values
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
    # Settings is the OPTIONS table plus two derived fields, and repeats no default.
    settings_fields = Settings.__dataclass_fields__.values()
    assert [f.name for f in settings_fields] == [*names, "checkout", "project"]
    assert all(f.default is f.default_factory for f in settings_fields)  # both MISSING


def test_defaults() -> None:
    s = load_settings({})
    assert (s.backend, s.pg_port, s.redis_port) == ("auto", 5433, 6380)
    assert s.database_url is None
    assert s.redis_url is None
    assert s.wait_timeout == 30.0
    assert s.seed is None
    assert s.keep is False
    assert s.require_services is False
    assert s.project_name == "testbed"
    assert s.project.startswith("testbed-e2e-")
    assert len(s.project) == len("testbed-e2e-") + 8
    assert s.state_dir == default_state_root() / s.project
    assert s.compose_file == s.checkout / "docker-compose-e2e.yml"
    assert (s.metadata, s.schema_setup, s.channel_format) == (None, None, "{prefix}{name}")
    assert (s.database_url_env, s.redis_url_env) == ((), ())
    assert s.session_options == {"expire_on_commit": False}
    assert s.dirs == ("e2e",)


def test_project_name_derives_role_database_state_dir_and_compose_project() -> None:
    s = load_settings({"E2E_PROJECT_NAME": "shop-api"})
    assert (s.pg_role, s.pg_database) == ("shop_api_e2e", "shop_api_e2e")
    assert s.project == project_name(s.checkout, "shop-api")
    assert s.project.startswith("shop-api-e2e-")
    assert s.state_dir.name == s.docker_label == s.project
    # An explicit state dir wins over the derived one; the project name is unchanged.
    assert load_settings({}, project_name="shop", state_dir="/tmp/x").state_dir == Path("/tmp/x")


@pytest.mark.parametrize("name", ["Shop", "9lives", "a b", "", "x" * 41, "shop;drop"])
def test_bad_project_name_says_what_is_allowed(name: str) -> None:
    with pytest.raises(UsageError, match=r"E2E_PROJECT_NAME: invalid project name.*lowercase"):
        load_settings({"E2E_PROJECT_NAME": name})


def test_app_settings_are_parsed() -> None:
    s = load_settings(
        {},
        ini={
            "metadata": "shop.models:Base.metadata",
            "schema_setup": "shop.migrate.upgrade",
            "channel_format": "{prefix}shop.{name}",
            "database_url_env": "DATABASE_URL, SHOP_DB_URL",
            "redis_url_env": "REDIS_URL",
            "session_options": "expire_on_commit=true autoflush=false",
            "dirs": "e2e, functional",
        },
    )
    assert s.dirs == ("e2e", "functional")
    assert s.metadata == "shop.models:Base.metadata"
    assert s.schema_setup == "shop.migrate.upgrade"
    assert s.channel_format == "{prefix}shop.{name}"
    assert s.database_url_env == ("DATABASE_URL", "SHOP_DB_URL")
    assert s.redis_url_env == ("REDIS_URL",)
    assert s.session_options == {"expire_on_commit": True, "autoflush": False}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("metadata", "not a path!", "module:attribute"),
        ("metadata", "models", "module:attribute"),
        ("channel_format", "{name}", "{prefix} and {name}"),
        ("channel_format", "{prefix}{name}{other}", "{prefix} and {name}"),
        ("database_url_env", "DATABASE-URL", "environment variable name"),
        ("session_options", "expire_on_commit", "name=true|false"),
        ("session_options", "bind=x", "expire_on_commit, autoflush"),
        ("dirs", "tests/e2e", "without slashes"),
    ],
)
def test_bad_app_settings_name_the_ini_key(key: str, value: str, message: str) -> None:
    with pytest.raises(UsageError, match=rf"ini e2e_{key}: .*{re.escape(message)}"):
        load_settings({}, ini={key: value})


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


def test_cli_reads_the_pytest_ini_as_pytest_finds_it(tmp_path: Path) -> None:
    app = tmp_path / "app"
    (app / "tests").mkdir(parents=True)
    (app / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\ne2e_project_name = "shop"\ne2e_pg_port = "15999"\n'
        'e2e_not_ours = "x"\naddopts = "-q"\n'
    )
    found = find_ini(app / "tests")
    assert found == app / "pyproject.toml"
    assert ini_values(found) == {"project_name": "shop", "pg_port": "15999"}
    s = load_settings({}, ini=ini_values(found))
    assert (s.project_name, s.pg_port, s.pg_role) == ("shop", 15999, "shop_e2e")
    # A pytest.ini nearer the start wins, even without testbed keys (pytest's own rule).
    (app / "tests" / "pytest.ini").write_text("[pytest]\n")
    assert find_ini(app / "tests") == app / "tests" / "pytest.ini"
    assert ini_values(app / "tests" / "pytest.ini") == {}


def test_cli_settings_take_the_ini_file_from_flag_env_or_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testbed import __main__ as cli

    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\ne2e_project_name = shop\ne2e_redis_port = 16999\n")
    monkeypatch.delenv("E2E_INIFILE", raising=False)
    monkeypatch.delenv("E2E_PROJECT_NAME", raising=False)
    monkeypatch.delenv("E2E_REDIS_PORT", raising=False)
    monkeypatch.chdir(tmp_path)
    found = cli.settings_from_args(cli.parser().parse_args(["status"]))
    assert (found.project_name, found.redis_port) == ("shop", 16999)
    monkeypatch.chdir(tmp_path.parent)
    elsewhere = cli.settings_from_args(cli.parser().parse_args(["status"]))
    assert elsewhere.project_name != "shop"
    by_flag = cli.settings_from_args(cli.parser().parse_args(["status", "-c", str(ini)]))
    assert by_flag.pg_role == "shop_e2e"
    monkeypatch.setenv("E2E_INIFILE", str(ini))
    by_env = cli.settings_from_args(cli.parser().parse_args(["status", "--redis-port", "17000"]))
    assert (by_env.project_name, by_env.redis_port) == ("shop", 17000)  # the flag wins
    monkeypatch.setenv("E2E_INIFILE", str(tmp_path / "missing.ini"))
    assert cli.main(["status"]) == 2


def test_cli_finds_the_suites_ini_from_the_repository_root(tmp_path: Path) -> None:
    """From a root whose suite lives below it, `[tool.testbed] pytest_ini` in the root's
    pyproject.toml names the ini file: the CLI then sees the project the plugin sees (it looked
    at project "testbed" before), keyed on the same checkout from the root and from below."""
    from testbed import __main__ as cli

    (tmp_path / "pyproject.toml").write_text('[tool.testbed]\npytest_ini = "app/pyproject.toml"\n')
    app = tmp_path / "app"
    (app / "tests").mkdir(parents=True)
    (app / "pyproject.toml").write_text('[tool.pytest.ini_options]\ne2e_project_name = "shop"\n')
    assert find_ini(tmp_path) == app / "pyproject.toml"
    assert find_ini(app / "tests") == app / "pyproject.toml"
    seen = []
    for where in (tmp_path, app / "tests"):
        args = cli.parser().parse_args(["env"])
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(where)
            mp.delenv("E2E_INIFILE", raising=False)
            mp.delenv("E2E_PROJECT_NAME", raising=False)
            mp.delenv("E2E_STATE_DIR", raising=False)
            settings = cli.settings_from_args(args)
        seen.append((settings.project_name, settings.project, settings.state_dir))
    assert seen[0] == seen[1]
    assert seen[0][0] == "shop"
    (tmp_path / "pyproject.toml").write_text('[tool.testbed]\npytest_ini = "gone.toml"\n')
    with pytest.raises(UsageError, match=r"pytest_ini = 'gone\.toml': no such file"):
        find_ini(tmp_path)


@pytest.mark.parametrize(
    ("free_mb", "flags", "chosen"),
    [
        (24000, 0, "shm"),  # a host's tmpfs
        (64, os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC, "tmp"),  # `docker run`'s default
        (64, 0, "tmp"),  # --shm-size too small for the template and the run's growth
        (2048, os.ST_NOEXEC, "tmp"),  # big enough but noexec
    ],
)
def test_state_goes_on_dev_shm_only_when_big_enough_and_exec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_mb: int, flags: int, chosen: str
) -> None:
    real_statvfs = os.statvfs

    def statvfs(path: object) -> object:
        if Path(str(path)) != tmp_path:
            return real_statvfs(str(path))
        return types.SimpleNamespace(f_flag=flags, f_frsize=4096, f_bavail=free_mb * 256)

    monkeypatch.setattr(os, "statvfs", statvfs)
    expected = tmp_path if chosen == "shm" else Path(tempfile.gettempdir())
    assert config.state_filesystem(tmp_path) == expected
    assert config.state_filesystem(tmp_path / "missing") == Path(tempfile.gettempdir())
