"""Per-instance credentials, the bootstrap role's access, and the account the servers run as."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import stat
from pathlib import Path

import pytest

from testbed.config.parse import parse_extension_names
from testbed.errors import UsageError
from testbed.guard import redact
from testbed.services import extensions, pgdata, procs
from testbed.services.credentials import (
    FILES,
    Credentials,
    admin_role,
    postgres_url,
    redis_url,
    scram_verifier,
    socket_url,
    write_secret,
)
from testbed.services.native import valkey_argv


def test_each_instance_gets_new_passwords_in_0600_files(tmp_path: Path) -> None:
    first, second = Credentials.generate(), Credentials.generate()
    assert len({first.pg_app, first.pg_admin, first.valkey, second.pg_app}) == 4
    assert len(first.pg_app) >= 40  # 32 random bytes, URL-safe base64
    first.save(tmp_path)
    for name in FILES:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert Credentials.load(tmp_path) == first
    (tmp_path / FILES[0]).unlink()
    assert Credentials.load(tmp_path) is None  # half a set is no set


def test_a_secret_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    link = tmp_path / "pg-app.password"
    link.symlink_to(victim)
    write_secret(link, "s3cret")
    assert victim.read_text() == "keep me\n"
    assert not link.is_symlink()
    assert link.read_text() == "s3cret\n"


def test_scram_verifier_is_what_postgres_checks() -> None:
    """RFC 5802/7677: StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey likewise."""
    verifier = scram_verifier("pw", iterations=7)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt_b64 = params.split(":")
    stored_b64, server_b64 = keys.split(":")
    assert (method, iterations) == ("SCRAM-SHA-256", "7")
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", base64.b64decode(salt_b64), 7)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert base64.b64decode(server_b64) == server_key
    assert scram_verifier("pw") != scram_verifier("pw")  # a fresh salt each time


def test_urls_carry_the_password_and_messages_hide_it() -> None:
    url = postgres_url("shop_e2e", "p4ss-_w0rd", 5433, "shop_e2e")
    assert url == "postgresql://shop_e2e:p4ss-_w0rd@127.0.0.1:5433/shop_e2e"
    assert "p4ss" not in redact(url)
    assert redis_url("v4lk-ey", 6380) == "redis://:v4lk-ey@127.0.0.1:6380/0"
    assert "v4lk" not in redact(redis_url("v4lk-ey", 6380))
    assert redis_url(None, 6380) == "redis://127.0.0.1:6380/0"
    sock = socket_url(admin_role("shop_e2e"), Path("/s/pg/sock"), 5433, "shop_e2e")
    assert sock == "postgresql://shop_e2e_admin@/shop_e2e?host=/s/pg/sock&port=5433"


def test_only_testbeds_os_user_reaches_the_superuser_and_only_over_the_socket() -> None:
    hba = [line.split() for line in pgdata.hba_conf("shop_e2e").splitlines()]
    rules = [line for line in hba if line and not line[0].startswith("#")]
    assert rules == [
        ["local", "all", '"shop_e2e_admin"', "peer", "map=testbed"],
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
    ]
    assert not any("trust" in rule for rule in rules)
    assert pgdata.ident_conf("shop_e2e", "alice") == 'testbed "alice" "shop_e2e_admin"\n'


def test_the_valkey_password_is_never_on_the_command_line(tmp_path: Path) -> None:
    conf = tmp_path / "valkey.conf"
    argv = valkey_argv(Path("/bin/valkey-server"), 6380, tmp_path, conf)
    assert argv[1] == str(conf)  # valkey-server takes the config file first
    assert argv[argv.index("--protected-mode") + 1] == "yes"
    assert not any("requirepass" in a for a in argv)


def test_extensions_that_need_a_superuser_are_refused_with_the_setting() -> None:
    function = extensions.superuser_refusal_sql()[0]
    assert "SET search_path = pg_catalog" in function  # the superuser runs it too
    assert "e2e_pg_extensions (E2E_PG_EXTENSIONS)" in function
    assert "NOT v.trusted" in function
    assert extensions.create_sql(("dblink", "uuid-ossp")) == [
        'CREATE EXTENSION IF NOT EXISTS "dblink" CASCADE',
        'CREATE EXTENSION IF NOT EXISTS "uuid-ossp" CASCADE',
    ]
    assert parse_extension_names("dblink, pg_stat_statements") == ("dblink", "pg_stat_statements")
    with pytest.raises(UsageError, match="invalid extension name"):
        parse_extension_names('dblink"; DROP')


def test_a_normal_user_runs_the_servers_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert procs.server_user() is None


def _entry(name: str, uid: int, shell: str = "/usr/sbin/nologin") -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, uid, "", "/nonexistent", shell))


def test_root_runs_them_as_testbed_svc_created_once(monkeypatch: pytest.MonkeyPatch) -> None:
    accounts = {"postgres": _entry("postgres", 101), "nobody": _entry("nobody", 65534)}
    created: list[str] = []

    def create(name: str) -> None:
        created.append(name)
        accounts[name] = _entry(name, 899)

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: accounts[name])
    monkeypatch.setattr(pwd, "getpwall", lambda: list(accounts.values()))
    monkeypatch.setattr(procs, "_create_account", create)
    said: list[str] = []
    found = procs.server_user(say=said.append)
    assert found == procs.RunAs("testbed-svc", 899, 899)
    assert found.name not in procs.FORBIDDEN_ACCOUNTS
    assert created == ["testbed-svc"]
    assert len(said) == 1
    assert "never root, postgres or nobody" in said[0]
    assert procs.server_user(say=said.append) == found  # reused, not created again
    assert created == ["testbed-svc"]
    assert len(said) == 1


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (_entry("testbed-svc", 0), "uid or gid 0"),
        (_entry("testbed-svc", 899, "/bin/bash"), "login shell /bin/bash"),
        (_entry("testbed-svc", 101), "shares its uid 101 with postgres"),
    ],
)
def test_an_unfit_testbed_svc_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, entry: pwd.struct_passwd, problem: str
) -> None:
    accounts = {"postgres": _entry("postgres", 101), "testbed-svc": entry}
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: accounts[name])
    monkeypatch.setattr(pwd, "getpwall", lambda: list(accounts.values()))
    with pytest.raises(OSError, match=problem) as caught:
        procs.server_user()
    assert "\n" not in str(caught.value)
    assert "userdel testbed-svc" in str(caught.value)


def test_without_useradd_root_is_told_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", lambda name: (_ for _ in ()).throw(KeyError(name)))
    monkeypatch.setattr(procs, "_create_account", lambda name: None)
    with pytest.raises(OSError, match=r"useradd --system .* testbed-svc"):
        procs.server_user()
