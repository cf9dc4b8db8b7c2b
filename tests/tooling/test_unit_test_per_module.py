"""Every module of testbed has a unit test that imports it (testbed/tests/unit/test_*.py, read as
ASTs): code without one is changed blind, and the fast loop (`make unit`) never runs it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "testbed" / "src"
UNIT_TESTS = ROOT / "testbed" / "tests" / "unit"

# Modules with nothing of their own to test: package __init__s that hold only a docstring (the
# checked ones below). Their submodules are what the unit tests import. testbed.__main__ is not
# here: test_services_cli.py and test_services_owner.py import it.
NOTHING_TO_TEST = {
    "testbed",  # empty
    "testbed.data",  # docstring only
    "testbed.isolation",  # docstring only
    "testbed.run",  # docstring only
    "testbed.services",  # docstring only (kept empty: one backend never imports the others)
}


def modules(src: Path) -> dict[str, Path]:
    """Every module under src by dotted name (a package by its own name, not `.__init__`)."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(test_file: Path, known: set[str]) -> set[str]:
    """The known modules a file imports anywhere in it: `import a.b` (a.b), `from a.b import c`
    (a.b.c when that is a module, else a.b), `from a import b as c` (a.b)."""
    found = set()
    for node in ast.walk(ast.parse(test_file.read_text(), str(test_file))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found & known


def untested(src: Path, tests: Path, exempt: set[str]) -> list[str]:
    """Modules under src that no test_*.py under tests imports, less the exempt ones."""
    known = set(modules(src))
    covered: set[str] = set()
    for test_file in sorted(tests.rglob("test_*.py")):
        covered |= imported(test_file, known)
    return sorted(known - covered - exempt)


def has_code(path: Path) -> bool:
    """True when the module holds more than a docstring, imports and `__all__`."""
    for i, node in enumerate(ast.parse(path.read_text()).body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign) and ast.unparse(node).startswith("__all__"):
            continue
        return True
    return False


def test_every_module_has_a_unit_test_that_imports_it() -> None:
    missing = untested(SRC, UNIT_TESTS, NOTHING_TO_TEST)
    assert missing == [], (
        f"no test in {UNIT_TESTS.relative_to(ROOT)} imports {', '.join(missing)}: write unit tests "
        "for them (fakes, tmp dirs, monkeypatch; a real server belongs in testbed/tests/e2e)"
    )


def test_the_exempt_modules_exist_and_hold_no_code() -> None:
    """The allow-list cannot hide code: each entry is a module that is only a docstring/imports."""
    found = modules(SRC)
    for name in sorted(NOTHING_TO_TEST):
        assert name in found, f"{name} is exempt but no longer exists; drop it from the list"
        assert not has_code(found[name]), f"{name} has code of its own now: give it unit tests"


def test_the_check_finds_an_untested_module(tmp_path: Path) -> None:
    """The check above can fail: each import form counts, and only for the module it names."""
    src, tests = tmp_path / "src", tmp_path / "tests"
    for rel in ("pkg/__init__.py", "pkg/sub/__init__.py"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text('"""A package."""\n')
    for name in ("a", "b", "c", "d", "e", "untested", "named_only"):
        (src / "pkg" / "sub" / f"{name}.py").write_text("VALUE = 1\n")
    (src / "pkg" / "top.py").write_text("def f() -> None: ...\n")
    (tests / "deep").mkdir(parents=True)
    (tests / "test_one.py").write_text(
        "import pkg.sub.a\nfrom pkg.sub import b\nfrom pkg.sub.c import VALUE as V\n"
    )
    (tests / "deep" / "test_two.py").write_text(
        "def test() -> None:\n    from pkg.sub import d as dee\n    import pkg.top\n"
    )
    (tests / "helper.py").write_text("import pkg.sub.e\n")  # not a test: does not count
    (tests / "test_three.py").write_text("NAME = 'pkg.sub.named_only'\nfrom . import pkg\n")
    (tests / "test_four.py").write_text("from pkg import top as t, NAME\n")  # NAME: from pkg
    assert untested(src, tests, set()) == [
        "pkg.sub",  # `from pkg.sub import b` tests b, not the package
        "pkg.sub.e",
        "pkg.sub.named_only",
        "pkg.sub.untested",
    ]
    assert untested(src, tests, {"pkg", "pkg.sub", "pkg.sub.e"}) == [
        "pkg.sub.named_only",
        "pkg.sub.untested",
    ]


def test_code_in_an_exempt_package_is_found(tmp_path: Path) -> None:
    only_words = tmp_path / "words.py"
    only_words.write_text('"""Doc."""\n\nfrom x import y\n\n__all__ = ["y"]\n')
    assert not has_code(only_words)
    for body in ("X = 1\n", "def f() -> None: ...\n", "import x\nx.setup()\n"):
        (tmp_path / "code.py").write_text(f'"""Doc."""\n{body}')
        assert has_code(tmp_path / "code.py"), body
