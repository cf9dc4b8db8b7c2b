"""testbed's import graph: no module imports itself through others, and the rooms keep to their
floors (the pytest face on top, configuration and errors at the bottom); testbed's tests import
nothing of opsdesk."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "testbed" / "src"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """testbed's runtime imports (annotations-only imports under TYPE_CHECKING are not cycles)."""
    import sys

    sys.path.insert(0, str(SRC))
    try:
        return grimp.build_graph("testbed", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(str(SRC))


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    """A cycle means two rooms share one job: split the concern, don't hide the import."""
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a graph with a -> b -> a has one cycle."""
    fake = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        fake.add_module(name)
    fake.add_import(importer="pkg.a", imported="pkg.b")
    fake.add_import(importer="pkg.b", imported="pkg.a")
    fake.add_import(importer="pkg.c", imported="pkg.a")
    assert cycles(fake) == [["pkg.a", "pkg.b"]]


LOWER_ROOMS = ["testbed.services", "testbed.config", "testbed.errors"]


@pytest.mark.parametrize("lower", LOWER_ROOMS)
def test_lower_rooms_never_import_the_pytest_face(graph: grimp.ImportGraph, lower: str) -> None:
    """Services, configuration and errors work without pytest's plugin (the CLI uses them)."""
    for upper in ("testbed.plugin", "testbed.fixtures", "testbed.run"):
        chain = graph.find_shortest_chain(importer=lower, imported=upper, as_packages=True)
        assert chain is None, f"{lower} reaches {upper}: {' -> '.join(chain or ())}"


TESTBED_TESTS = SRC.parent / "tests"


def app_imports(root: Path, app: str = "opsdesk") -> list[str]:
    """`file:line module` for every import of the app (any submodule, at any depth) under root."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name == app or name.startswith(f"{app}."):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_testbeds_tests_import_nothing_of_opsdesk() -> None:
    """testbed's tests travel with its distribution: they test it through their own tiny app."""
    assert app_imports(TESTBED_TESTS) == []


def test_the_app_import_finder_finds_nested_imports(tmp_path: Path) -> None:
    """The check above can fail: imports inside functions and of submodules count; names don't."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_x.py").write_text(
        "import opsdesk_like\nNAME = 'opsdesk'\n\n\ndef f():\n    from opsdesk.crm import service\n"
    )
    (tmp_path / "test_y.py").write_text("import json, opsdesk\n")
    assert app_imports(tmp_path) == ["sub/test_x.py:6 opsdesk.crm", "test_y.py:1 opsdesk"]
