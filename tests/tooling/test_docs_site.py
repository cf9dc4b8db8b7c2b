"""`make lint` builds the manual strictly and keeps the README a front door.

Like the other validator tests: copy the files into a temp dir, break them one way, and run the
same `scripts/lint.sh <check>` with LINT_ROOT pointing at the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from testbed.config import OPTIONS

ROOT = Path(__file__).resolve().parents[2]

LINT = ROOT / "scripts" / "lint.sh"


def copy_docs(tmp: Path) -> Path:
    """A copy of the README, mkdocs.yml and docs/ in tmp."""
    shutil.copytree(ROOT / "docs", tmp / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", tmp / "mkdocs.yml")
    shutil.copy2(ROOT / "README.md", tmp / "README.md")
    return tmp


def lint(check: str, root: Path) -> tuple[int, str]:
    """Run one lint.sh check against root; return (exit code, output)."""
    proc = subprocess.run(
        [str(LINT), check],
        capture_output=True,
        text=True,
        env={**os.environ, "LINT_ROOT": str(root)},
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_docs_build_fails_on_a_broken_anchor(tmp_path: Path) -> None:
    """A link to a heading that does not exist fails the strict build, naming the link."""
    root = copy_docs(tmp_path)
    with (root / "docs" / "index.md").open("a") as page:
        page.write("\nSee [the settings](services.md#no-such-heading).\n")
    rc, out = lint("docs", root)
    assert rc != 0, out
    assert "FAIL  docs" in out
    assert "no-such-heading" in out


def test_docs_build_fails_on_a_page_missing_from_nav(tmp_path: Path) -> None:
    """A page nobody can reach from the navigation is an error, not a silent orphan."""
    root = copy_docs(tmp_path)
    (root / "docs" / "orphan.md").write_text("# Orphan\n")
    rc, out = lint("docs", root)
    assert rc != 0, out
    assert "orphan.md" in out


def test_readme_check_refuses_a_long_readme_and_dead_links(tmp_path: Path) -> None:
    """The README stays at most 8 KB, and every docs/ page it links to exists."""
    root = copy_docs(tmp_path)
    rc, out = lint("readme", root)
    assert rc == 0, out
    readme = root / "README.md"
    original = readme.read_text()
    readme.write_text(original + "x" * 8192)
    rc, out = lint("readme", root)
    assert rc != 0
    assert "8192" in out
    readme.write_text(original + "\n[gone](docs/gone.md)\n")
    rc, out = lint("readme", root)
    assert rc != 0
    assert "docs/gone.md" in out


def listed_pages() -> tuple[set[str], set[str]]:
    """(pages the README links as docs/NAME.md, pages in mkdocs.yml's nav)."""
    readme = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", (ROOT / "README.md").read_text()))
    nav = set(
        re.findall(r"^\s+- [^:\n]+: ([\w-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    )
    return readme, nav


def test_every_docs_page_is_in_the_readme_and_the_nav() -> None:
    """A new page gets a line in the README's list and a place in the site's navigation."""
    pages = {page.name for page in (ROOT / "docs").glob("*.md")}
    readme, nav = listed_pages()
    assert pages - readme == set(), f"README.md does not link these docs pages: {pages - readme}"
    assert pages - nav == set(), f"mkdocs.yml's nav lacks these docs pages: {pages - nav}"
    assert readme - pages == set(), f"README.md links missing docs pages: {readme - pages}"
    assert nav - pages == set(), f"mkdocs.yml's nav names missing pages: {nav - pages}"


def test_settings_are_tabled_once() -> None:
    """Only the generated table in harness.md has a row per setting; no page repeats it."""
    names = {opt.env for opt in OPTIONS} | {opt.ini for opt in OPTIONS}
    copies = [
        f"{page.name}: {line.strip()[:60]}"
        for page in sorted((ROOT / "docs").glob("*.md"))
        if page.name != "harness.md"
        for line in page.read_text().splitlines()
        if (cell := re.match(r"\|\s*`([\w]+)`", line)) and cell.group(1) in names
    ]
    assert not copies, "settings tabled outside docs/harness.md's generated table:\n" + "\n".join(
        copies
    )
