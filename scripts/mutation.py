"""make mutation: how many small bugs planted in testbed's modules their own unit tests catch.

Each mutant changes one thing in one module (a comparison, a boolean operator, a constant, a
returned value, a call statement dropped, `not` removed, ...) and the module's own fast unit
tests run against it: a failing run kills the mutant, a passing one lets it survive. Mutants
of message text (strings in exception messages and in functions that only word a message) are
counted apart and excluded from the score: a test asserting every word would only copy them.

Why not mutmut: mutmut 3 copies the source tree into mutants/ and rewrites every function into
a trampoline; with testbed's src layout, its entry-point plugin and tests that import the
modules by name it needs the whole tree copied and ran ~1 s of pytest start-up per mutant.
This runner imports pytest and the module once, then forks one child per mutant that
re-executes the mutated module in place and runs the tests in-process (~0.1-0.3 s a mutant).

    python scripts/mutation.py                  every target
    python scripts/mutation.py guard breaker    these targets
    python scripts/mutation.py --list           the targets and their tests

Survivors are printed with the explanation recorded in scripts/mutation-explained.txt
("<target> <function>: <before> -> <after>  # why"); exit 1 when a target scores below
its threshold or a survivor is unexplained.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPLAINED = Path(__file__).with_name("mutation-explained.txt")
THRESHOLD = 80.0


@dataclass(frozen=True)
class Target:
    """A module to mutate and the unit tests that should catch its mutants."""

    name: str
    module: str
    tests: tuple[str, ...]


_UNIT = "testbed/tests/unit"
TARGETS = {
    t.name: t
    for t in (
        Target("guard", "testbed.guard", (f"{_UNIT}/test_guard.py",)),
        Target("breaker", "testbed.run.breaker", (f"{_UNIT}/test_breaker.py",)),
        Target("schema", "testbed.isolation.schema", (f"{_UNIT}/test_schema.py",)),
        Target(
            "ownership",
            "testbed.services.ownership",
            (f"{_UNIT}/test_services_owner.py", f"{_UNIT}/test_services_ownership.py"),
        ),
        Target("lease", "testbed.services.lease", (f"{_UNIT}/test_services_lease.py",)),
    )
}

# Functions whose strings only word a message (a mutant there changes text, not behaviour).
MESSAGE_FUNCTIONS = {"message", "describe", "_reason", "_refuse"}

_CMP_SWAPS: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
}
_BIN_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
}


@dataclass
class Mutant:
    """One planted change: where, what, and what came of it."""

    index: int  # position of the node in ast.walk order
    variant: int
    line: int
    function: str
    before: str
    after: str
    message: bool
    outcome: str = ""
    seconds: float = 0.0

    def key(self, target: str) -> str:
        """Stable across edits elsewhere in the module (no line number)."""
        return f"{target} {self.function}: {self.before} -> {self.after}"


@dataclass
class _Context:
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)
    functions: dict[ast.AST, str] = field(default_factory=dict)
    skipped: set[ast.AST] = field(default_factory=set)
    messages: set[ast.AST] = field(default_factory=set)


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _context(tree: ast.Module) -> _Context:
    ctx = _Context()

    def visit(node: ast.AST, function: str, skip: bool, message: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            function = f"{function}.{node.name}" if function else node.name
            message = message or node.name in MESSAGE_FUNCTIONS
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ctx.skipped.add(body[0])  # the docstring
        if isinstance(node, ast.Raise):
            message = True
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip = True
        if isinstance(node, ast.Import | ast.ImportFrom | ast.AnnAssign | ast.arg):
            skip = (
                True  # imports; annotations are strings under `from __future__ import annotations`
            )
        if node in ctx.skipped:
            skip = True
        ctx.functions[node] = function or "<module>"
        if skip:
            ctx.skipped.add(node)
        if message:
            ctx.messages.add(node)
        for name, value in ast.iter_fields(node):
            if name in ("returns", "annotation", "decorator_list", "type_comment"):
                continue
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    ctx.parents[child] = node
                    visit(child, function, skip, message)

    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        ctx.skipped.add(body[0])
    visit(tree, "", False, False)
    return ctx


def _variants(node: ast.AST, ctx: _Context) -> list[ast.AST | None]:
    """The replacements of node (None: the node's statement becomes `pass`)."""
    out: list[ast.AST | None] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for new in _CMP_SWAPS.get(type(op), ()):
                mutant = copy.deepcopy(node)
                mutant.ops[i] = new()
                out.append(mutant)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_SWAPS:
        if not (isinstance(node.op, ast.BitOr) and _in_isinstance(node, ctx)):
            out.append(ast.BinOp(node.left, _BIN_SWAPS[type(node.op)](), node.right))
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BIN_SWAPS:
        out.append(ast.AugAssign(node.target, _BIN_SWAPS[type(node.op)](), node.value))
    elif isinstance(node, ast.BoolOp):
        out.append(ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append(node.operand)
    elif isinstance(node, ast.Constant) and not isinstance(ctx.parents.get(node), ast.JoinedStr):
        value = node.value
        if isinstance(value, bool):
            out.append(ast.Constant(not value))
        elif isinstance(value, int | float):
            out.append(ast.Constant(value + 1))
            if value != 0:
                out.append(ast.Constant(0))
        elif isinstance(value, str):
            out.append(ast.Constant(f"XX{value}XX"))
        elif value is None and isinstance(ctx.parents.get(node), ast.keyword | ast.Return):
            pass
    elif isinstance(node, ast.JoinedStr):
        out.append(ast.JoinedStr([ast.Constant("XX"), *node.values]))
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append(ast.Return(ast.Constant(None)))
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        out.append(None)
    elif isinstance(node, ast.Break):
        out.append(ast.Continue())
    elif isinstance(node, ast.Continue):
        out.append(ast.Break())
    elif isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
        pass  # the constant itself is mutated
    return out


def _in_isinstance(node: ast.AST, ctx: _Context) -> bool:
    # `int | float` in isinstance(): a union of types, not a bitwise or.
    while node in ctx.parents:
        node = ctx.parents[node]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id == "isinstance"
    return False


def _is_message(node: ast.AST, ctx: _Context) -> bool:
    return node in ctx.messages and isinstance(node, ast.Constant | ast.JoinedStr)


def mutants(source: str) -> list[Mutant]:
    """Every mutant of the module's source, in a stable order."""
    tree = ast.parse(source)
    ctx = _context(tree)
    found = []
    for index, node in enumerate(ast.walk(tree)):
        if node in ctx.skipped or node not in ctx.functions:  # not visited: annotations
            continue
        for variant, new in enumerate(_variants(node, ctx)):
            found.append(
                Mutant(
                    index,
                    variant,
                    getattr(node, "lineno", 0),
                    ctx.functions.get(node, "<module>"),
                    _short(node),
                    "pass" if new is None else _short(new),
                    _is_message(node, ctx),
                )
            )
    return found


def mutated_source(source: str, mutant: Mutant) -> ast.Module:
    """The module's tree with the one change of mutant applied."""
    tree = ast.parse(source)
    ctx = _context(tree)
    node = list(ast.walk(tree))[mutant.index]
    new = _variants(node, ctx)[mutant.variant]
    parent = ctx.parents[node]
    replacement = ast.Pass() if new is None else new
    for name, value in ast.iter_fields(parent):
        if isinstance(value, list):
            for i, child in enumerate(value):
                if child is node:
                    value[i] = replacement
        elif value is node:
            setattr(parent, name, replacement)
    return ast.fix_missing_locations(tree)


# Third-party plugins the unit tests do without: each costs start-up in every child.
_PYTEST_ARGS = (
    "-q",
    "-p",
    "no:randomly",
    "-p",
    "no:cacheprovider",
    *("-p", "no:xdist", "-p", "no:xdist.looponfail", "-p", "no:pytest-split"),
    *("-p", "no:anyio", "-p", "no:hypothesispytest", "-p", "no:faker"),
)


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _rebind(module_name: str, old: dict[str, object]) -> None:
    """Point names imported from the module elsewhere (`from testbed.guard import x`, in the
    tests and in other modules) at the mutant's objects."""
    new = sys.modules[module_name].__dict__
    swaps = {id(v): (v, new[k]) for k, v in old.items() if k in new and new[k] is not v}
    for name, other in list(sys.modules.items()):
        if name == module_name or other is None:
            continue
        space = getattr(other, "__dict__", None)
        if not isinstance(space, dict):
            continue
        for key, value in list(space.items()):
            swap = swaps.get(id(value))
            if swap is not None and swap[0] is value:
                space[key] = swap[1]


def _run_child(module_name: str, tree: ast.Module | None, tests: tuple[str, ...]) -> int:
    """In the forked child: put the mutant in place, run the tests, return pytest's code."""
    import pytest

    module = sys.modules[module_name]
    if tree is not None:
        old = dict(module.__dict__)
        code = compile(tree, module.__file__ or module_name, "exec")
        try:
            exec(code, module.__dict__)  # noqa: S102 -- the mutant replaces the module's names
        except Exception:
            return 3
        _rebind(module_name, old)
    _quiet()
    return int(pytest.main([*tests, "-x", *_PYTEST_ARGS]))


def _warm(tests: tuple[str, ...]) -> None:
    """Collect once in this process: every child inherits the imported, rewritten test modules."""
    import pytest

    saved = os.dup(1), os.dup(2)
    _quiet()
    try:
        pytest.main([*tests, "--collect-only", *_PYTEST_ARGS])
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)


def _run(module_name: str, tree: ast.Module | None, tests: tuple[str, ...], timeout: float) -> str:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _run_child(module_name, tree, tests)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "survived" if code == 0 else "killed"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.005)


def _explanations() -> dict[str, str]:
    found: dict[str, str] = {}
    if not EXPLAINED.is_file():
        return found
    for line in EXPLAINED.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, why = line.partition("  # ")
        found[key.strip()] = why.strip()
    return found


def _score(ms: list[Mutant]) -> tuple[int, int]:
    counted = [m for m in ms if not m.message]
    return sum(m.outcome != "survived" for m in counted), len(counted)


def run_target(target: Target, explained: dict[str, str]) -> tuple[float, list[str]]:
    """Mutate one module; print its survivors; return its score and unexplained survivors."""
    module = importlib.import_module(target.module)
    path = Path(module.__file__ or "")
    source = path.read_text()
    tests = tuple(str(ROOT / t) for t in target.tests)
    started = time.monotonic()
    found = mutants(source)
    _warm(tests)
    if not all(Path(t).is_file() for t in tests):
        print(f"{target.name:10}   0.0 %  0/{len(found)} killed  (no unit tests: {target.tests})")
        return 0.0, []
    if _run(target.module, None, tests, 300) != "survived":
        raise SystemExit(f"mutation: {target.name}: the tests fail without mutants; fix them first")
    baseline = time.monotonic() - started
    timeout = max(10.0, baseline * 5)
    for m in found:
        began = time.monotonic()
        m.outcome = _run(target.module, mutated_source(source, m), tests, timeout)
        m.seconds = time.monotonic() - began
    killed, total = _score(found)
    score = 100.0 * killed / total if total else 100.0
    message = [m for m in found if m.message]
    print(
        f"{target.name:10} {score:5.1f} %  {killed}/{total} killed"
        f"  (+{len(message)} message-text mutants, {sum(x.outcome != 'survived' for x in message)}"
        f" killed, not counted)  {time.monotonic() - started:.0f} s"
    )
    unexplained = []
    for m in found:
        if m.outcome != "survived" or m.message:
            continue
        key = m.key(target.name)
        why = explained.get(key)
        if why is None:
            unexplained.append(key)
        print(f"    survived  line {m.line:4}  {key}" + (f"\n              ({why})" if why else ""))
    return score, unexplained


def _targets(names: list[str]) -> Iterator[Target]:
    for name in names or list(TARGETS):
        if name not in TARGETS:
            raise SystemExit(f"mutation: unknown target {name!r}; valid: {', '.join(TARGETS)}")
        yield TARGETS[name]


def main(argv: list[str] | None = None) -> int:
    """Run the targets given (default all); 1 when a score is low or a survivor unexplained."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"any of: {', '.join(TARGETS)}")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:10} {t.module:30} {' '.join(t.tests)}")
        return 0
    import pytest  # noqa: F401 -- imported once here, so every forked child starts warm

    explained = _explanations()
    failed = False
    for target in _targets(args.targets):
        score, unexplained = run_target(target, explained)
        if score < THRESHOLD:
            print(f"    {target.name}: {score:.1f} % is below {THRESHOLD:g} %")
            failed = True
        if unexplained:
            print(
                f"    {target.name}: {len(unexplained)} survivor(s) unexplained in {EXPLAINED.name}"
            )
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
