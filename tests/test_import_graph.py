"""bot/ imports form no cycle, counting the imports made only for type checking; no module of bot/
is longer than a reader takes in (issue 11: split by what the parts are for, past 400 lines); no
module of tests/ imports a test module (issue 11: what tests share lives in a helper module, like
tests/follow_helpers.py, that the test modules import); tests/conftest.py and its plugins import
no module of bot/ when loaded (pytest-xdist's main process loads them and runs no test)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import bot

ROOT = Path(bot.__file__).parent
TESTS = Path(__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache  # parsing bot/ takes a third of a second; two tests read the graph
def import_graph() -> dict[str, set[str]]:
    """Module → the bot modules it imports, wherever the import stands (TYPE_CHECKING too)."""
    modules = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    graph[name].add(submodule if submodule in modules else node.module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_type_checking_imports() -> None:
    graph = import_graph()
    assert "bot.calls.models" in graph["bot.calls.service"]
    assert "bot.calls.messages" in graph["bot.calls.service"]  # `from bot.calls import messages`


def test_bot_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


MAX_MODULE_LINES = 400


def test_no_module_of_bot_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT.parent)): lines
        for path in ROOT.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def named_test_module(module: str) -> str | None:
    """`test_x` for tests.test_x (or anything inside it), else None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tests" and parts[1:2] and parts[1].startswith("test_") else None


def imported_test_modules(source: str) -> set[str]:
    """The test modules (tests/test_*.py) that a module of tests/ imports, however the import is
    spelled and wherever it stands."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:  # `..` leaves tests/
            module = ".".join(filter(None, ["tests" if node.level else "", node.module or ""]))
            if module == "tests":  # `from tests import test_x`: the names are modules
                modules += [f"tests.{alias.name}" for alias in node.names]
            else:
                modules.append(module)
    return {name for module in modules if (name := named_test_module(module))}


def test_the_finder_sees_every_spelling_of_importing_a_test_module() -> None:
    source = """
import tests.test_a
import tests.test_b as b
from tests.test_c import helper
from tests.test_d.inner import helper as other
from tests import test_e, follow_helpers
from . import test_f
from .test_g import helper
from tests.follow_helpers import test_looking_helper
from tests import conftest
import test_h
from ..tests.test_i import helper

def later() -> None:
    from tests.test_j import helper
"""
    assert imported_test_modules(source) == {f"test_{x}" for x in "abcdefgj"}


def test_no_module_of_tests_imports_a_test_module() -> None:
    importing = {
        str(path.relative_to(TESTS.parent)): sorted(modules)
        for path in sorted(TESTS.rglob("*.py"))
        if (modules := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    # What two test modules share belongs in a helper module both import (tests/follow_fakes.py,
    # tests/metrics_scrape.py...): a test module's helpers are its own to rename or drop, and a
    # `test_*` name imported into another module is collected and run there a second time.
    assert importing == {}


def imported_at_load(source: str) -> set[str]:
    """The modules a module imports when it is loaded: its top-level imports, not those inside a
    function or under `if TYPE_CHECKING:`."""
    modules: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(source).body)
    return modules


def test_the_xdist_main_process_imports_no_module_of_bot() -> None:
    # pytest-xdist's main process loads tests/conftest.py and its plugins, runs no test, and starts
    # the workers only afterwards: importing the bot there (a quarter CPU-second) delays them all.
    pending = ["tests.conftest"]
    pending += ast.literal_eval(
        next(line for line in (TESTS / "conftest.py").read_text().splitlines()
             if line.startswith("pytest_plugins = ")).partition(" = ")[2])
    loaded: dict[str, set[str]] = {}
    while pending:
        module = pending.pop()
        if module in loaded:
            continue
        path = TESTS.parent.joinpath(*module.split(".")).with_suffix(".py")
        loaded[module] = imported_at_load(path.read_text(encoding="utf-8"))
        pending += [name for name in loaded[module] if name.startswith("tests.")]
    importing = {module: sorted(name for name in names if name.split(".")[0] == "bot")
                 for module, names in loaded.items()}
    assert {module: names for module, names in importing.items() if names} == {}
    assert "tests.database_fixtures" in loaded and "tests.databases" in loaded
