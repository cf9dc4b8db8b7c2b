"""The settings table in docs/harness.md is the one generated from OPTIONS."""

from __future__ import annotations

from pathlib import Path

from testbed.config import OPTIONS
from testbed.config.optionsdoc import END, START, markdown_table

HARNESS_DOC = Path(__file__).resolve().parents[2] / "docs" / "harness.md"


def test_docs_table_matches_options() -> None:
    text = HARNESS_DOC.read_text()
    assert START in text, f"{HARNESS_DOC} lost its options table's start marker"
    assert END in text, f"{HARNESS_DOC} lost its options table's end marker"
    shown = text[text.index(START) : text.index(END) + len(END)]
    assert shown == markdown_table(), (
        "docs/harness.md's options table differs from testbed.config.OPTIONS; regenerate it "
        "with `python -m testbed.config.optionsdoc` and paste it between the markers"
    )


def test_table_has_a_row_per_option_with_its_names_and_default() -> None:
    rows = markdown_table().splitlines()[3:-1]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        assert row.startswith(f"| `{opt.ini}` | `{opt.env}` | `{opt.flag}` |")
        assert opt.describe_default().replace("|", "\\|") in row
