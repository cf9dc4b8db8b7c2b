"""`python -m testbed env|status|down` from this repository's root sees opsdesk's E2E settings,
as `pytest backend/tests/e2e` does (it saw no ini file there and looked at project "testbed")."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import __main__ as cli
from testbed.config.inifile import find_ini

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", [".", "backend", "backend/tests/e2e", "testbed/tests"])
def test_the_cli_finds_opsdesk_settings_anywhere_in_the_checkout(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT / where)
    for name in ("E2E_INIFILE", "E2E_PROJECT_NAME", "E2E_COMMAND", "E2E_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    assert find_ini(Path.cwd()) == ROOT / "backend" / "pyproject.toml"
    settings = cli.settings_from_args(cli.parser().parse_args(["env"]))
    assert (settings.project_name, settings.command) == ("opsdesk", "make")
    assert settings.checkout == ROOT
