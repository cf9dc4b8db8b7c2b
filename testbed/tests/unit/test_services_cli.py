"""`python -m testbed`: exit codes, usage errors, env output."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from testbed import __main__ as cli
from testbed.services.endpoints import Endpoints

EPS = Endpoints(
    "docker",
    "postgresql://opsdesk_e2e:opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e",
    "redis://127.0.0.1:6380/0",
    "16.4",
    "8.0.1",
    64,
)


class Running:
    name = "docker"

    def running(self) -> Endpoints | None:
        return EPS


def test_unknown_backend_is_exit_2_listing_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--backend", "podman"]) == 2
    err = capsys.readouterr().err
    assert "'podman'" in err
    assert "auto, native, docker, external" in err


def test_env_prints_quoted_assignments(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "choose", lambda settings: Running())
    assert cli.main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    parsed = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert parsed == {
        "E2E_DATABASE_URL": EPS.database_url,
        "E2E_REDIS_URL": EPS.redis_url,
        "DATABASE_URL": EPS.database_url,
        "REDIS_URL": EPS.redis_url,
    }


def test_status_and_env_when_nothing_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ini file: testbed's own words, not a repository's make
    monkeypatch.delenv("E2E_INIFILE", raising=False)
    monkeypatch.delenv("E2E_COMMAND", raising=False)
    args = [
        "--backend",
        "native",
        "--state-dir",
        str(tmp_path / "s"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert cli.main(["status", *args]) == 3
    assert "not running" in capsys.readouterr().out
    assert cli.main(["env", *args]) == 1
    assert "start them with `python -m testbed up`" in capsys.readouterr().err
    assert cli.main(["down", *args]) == 0
    assert cli.main(["wait", *args, "--wait-timeout", "0.2"]) == 1
    assert "not healthy after 0.2 s" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process (a new interpreter costs ~0.25 s); the reliability suite runs the module itself.
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m testbed ")
    # Each command starts a line of its own (continuation lines are indented further).
    listed = [line.split()[0] for line in out.splitlines() if re.match(r" {4}\S", line)]
    assert listed == ["up", "down", "status", "wait", "reap", "env"]
