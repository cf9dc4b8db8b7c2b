"""The settings table of the docs, generated from OPTIONS: one row per option whose cells survive
Markdown (a | or <name> in a help text stays text). tests/tooling/test_docs_options.py checks that
docs/harness.md holds this very table."""

from __future__ import annotations

import re
import runpy

import pytest

from testbed.config import OPTIONS, Option, optionsdoc, parse_optional_str


def cells(row: str) -> list[str]:
    """A Markdown table row's cells (split on | that is not escaped)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_the_table_sits_between_its_markers_with_a_row_per_option() -> None:
    lines = optionsdoc.markdown_table().splitlines()
    assert lines[0] == optionsdoc.START
    assert lines[-1] == optionsdoc.END
    assert cells(lines[1]) == ["ini key", "env var", "flag", "default", "meaning"]
    assert set(lines[2]) <= {"|", "-"}
    rows = lines[3:-1]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        assert cells(row)[:3] == [f"`{opt.ini}`", f"`{opt.env}`", f"`{opt.flag}`"], row
        assert len(cells(row)) == 5, row


def test_a_row_names_the_option_in_every_form(monkeypatch: pytest.MonkeyPatch) -> None:
    opt = Option("wait_timeout", "seconds to wait", float, default=30.0, cli=True)
    monkeypatch.setattr(optionsdoc, "OPTIONS", [opt])
    row = optionsdoc.markdown_table().splitlines()[3]
    assert cells(row) == [
        "`e2e_wait_timeout`",
        "`E2E_WAIT_TIMEOUT`",
        "`--e2e-wait-timeout`",
        "`30.0`",
        "seconds to wait",
    ]


def test_pipes_and_angle_brackets_stay_text(monkeypatch: pytest.MonkeyPatch) -> None:
    opt = Option(
        "channel_format",
        "name a channel <prefix>|<name>, e.g. a|b",
        parse_optional_str,
        default_text="{prefix}|{name}",
    )
    monkeypatch.setattr(optionsdoc, "OPTIONS", [opt])
    row = optionsdoc.markdown_table().splitlines()[3]
    assert len(cells(row)) == 5
    assert cells(row)[3] == "`{prefix}\\|{name}`"
    assert cells(row)[4] == "name a channel &lt;prefix&gt;\\|&lt;name&gt;, e.g. a\\|b"
    assert "<" not in row


@pytest.mark.parametrize(
    ("default", "shown"), [(None, "(none)"), (True, "true"), (False, "false"), (5, "5")]
)
def test_defaults_as_the_docs_show_them(
    monkeypatch: pytest.MonkeyPatch, default: object, shown: str
) -> None:
    monkeypatch.setattr(optionsdoc, "OPTIONS", [Option("x", "h", str, default=default)])
    assert cells(optionsdoc.markdown_table().splitlines()[3])[3] == f"`{shown}`"


def test_running_the_module_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(optionsdoc.__file__, run_name="__main__")  # python -m testbed.config.optionsdoc
    assert capsys.readouterr().out == optionsdoc.markdown_table() + "\n"
