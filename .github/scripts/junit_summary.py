"""Print a Markdown summary of JUnit XML files for $GITHUB_STEP_SUMMARY.

Usage: junit_summary.py TITLE FILE...  Missing files are reported, not fatal, because the
summary step runs with `if: always()` after runs that may have died before writing XML.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def summarize(title: str, paths: list[Path], slowest: int = 5) -> str:
    """Return a Markdown block: totals per file and the slowest test cases."""
    lines = [f"### {title}", ""]
    cases: list[tuple[float, str]] = []
    rows = []
    for path in paths:
        if not path.is_file():
            lines.append(f"- `{path}`: no report (the run ended before pytest wrote it)")
            continue
        # S314: the XML is our own pytest output, not untrusted input.
        root = ET.parse(path).getroot()  # noqa: S314
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            rows.append(
                "| {} | {} | {} | {} | {} | {:.1f}s |".format(
                    path.name,
                    suite.get("tests", "0"),
                    suite.get("failures", "0"),
                    suite.get("errors", "0"),
                    suite.get("skipped", "0"),
                    float(suite.get("time", "0")),
                )
            )
            for case in suite.iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                cases.append((float(case.get("time", "0")), name))
    if rows:
        lines += ["| report | tests | failures | errors | skipped | time |", "|---" * 6 + "|"]
        lines += rows
    if cases:
        lines += ["", f"Slowest {min(slowest, len(cases))}:", ""]
        lines += [f"- {t:.2f}s `{n}`" for t, n in sorted(cases, reverse=True)[:slowest]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Entry point: TITLE FILE..."""
    if len(argv) < 2:
        print("usage: junit_summary.py TITLE FILE...", file=sys.stderr)
        return 2
    sys.stdout.write(summarize(argv[0], [Path(p) for p in argv[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
