"""No password reaches a log or an error: URLs are redacted everywhere we print them."""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_sandbox import PYTEST, Sandbox, free_port, payload_suite

SECRET = "Hunter2-S3cret-pw"


def _assert_clean(text: str, where: str, *secrets: str) -> None:
    for secret in (SECRET, *secrets):
        assert secret not in text, f"the password leaked into {where}:\n{text[-3000:]}"


@pytest.mark.parametrize("style", ["userinfo", "query"])
def test_unreachable_external_url_errors_are_redacted(sandbox: Sandbox, style: str) -> None:
    port = free_port()
    url = (
        f"postgresql://opsdesk_e2e:{SECRET}@127.0.0.1:{port}/opsdesk_e2e"
        if style == "userinfo"
        else f"postgresql://127.0.0.1:{port}/opsdesk_e2e?user=opsdesk_e2e&password={SECRET}"
    )
    env = {
        "E2E_BACKEND": "external",
        "E2E_DATABASE_URL": url,
        "E2E_WAIT_TIMEOUT": "1",
        "E2E_REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
    }
    for command in ("up", "status"):
        code, out = sandbox.testbed(command, **env)
        assert code != 0, out
        _assert_clean(out, f"`testbed {command}`")
        assert "***" in out, out


def test_foreign_url_refusal_is_redacted(sandbox: Sandbox) -> None:
    code, out = sandbox.testbed(
        "up",
        E2E_BACKEND="external",
        E2E_DATABASE_URL=f"postgresql://postgres:{SECRET}@127.0.0.1:5432/postgres",
        E2E_REDIS_URL=f"redis://:{SECRET}@127.0.0.1:6379/0",
    )
    assert code == 1, out
    assert "refusing" in out, out
    _assert_clean(out, "the refusal")


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_a_full_run_with_a_password_url_prints_no_password(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    code, out = sandbox.testbed("up")
    assert code == 0, out
    # The services' own per-instance passwords (read from their 0600 files, so no command's
    # output in the sandbox holds them): the run works only with them in the URLs.
    pg_pw = (sandbox.state_dir / "pg-app.password").read_text().strip()
    vk_pw = (sandbox.state_dir / "valkey.password").read_text().strip()
    env = sandbox.env(
        E2E_BACKEND="external",
        REL_TESTS="4",
        E2E_DATABASE_URL=f"postgresql://opsdesk_e2e:{pg_pw}@127.0.0.1:{sandbox.pg_port}/opsdesk_e2e",
        E2E_REDIS_URL=f"redis://:{vk_pw}@127.0.0.1:{sandbox.redis_port}/0",
    )
    suite = payload_suite(tmp_path)
    code, out = sandbox.run(
        [str(PYTEST), str(suite), "-n", "2", "-v", "-rA", "-p", "no:randomly"],
        env=env,
        cwd=tmp_path,
    )
    assert code == 0, out[-3000:]
    assert "opsdesk_e2e:***@" in out, "the header should show the redacted URL"
    _assert_clean(out, "the pytest output", pg_pw, vk_pw)
    # A run whose services then vanish fails with errors that carry the URL: still redacted.
    sandbox.testbed("down")
    code, out = sandbox.run(
        [str(PYTEST), str(suite), "-n", "2", "-p", "no:randomly", "--e2e-require-services"],
        env={**env, "E2E_WAIT_TIMEOUT": "2"},
        cwd=tmp_path,
    )
    assert code != 0, out[-3000:]
    _assert_clean(out, "the failing run's output", pg_pw, vk_pw)
    for log in sandbox.root.rglob("*.log"):
        _assert_clean(log.read_text(errors="replace"), str(log), pg_pw, vk_pw)
