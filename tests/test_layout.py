"""The house's shape: imports go one way between lort's packages, and the methods need no
compiled core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "python" / "lort"


def _node(module: str) -> str:
    """The package (lort.stage2) or top-level module (lort.config) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> set[str]:
    """Every lort module ``path`` imports, at any depth (functions included: an import inside
    a function is still an edge), except under ``if TYPE_CHECKING``."""
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for n in nodes:
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                visit(n.orelse)
                continue
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("lort"):
                out.add(n.module)
            elif isinstance(n, ast.Import):
                out.update(a.name for a in n.names if a.name.startswith("lort"))
            for child in ast.iter_child_nodes(n):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text()).body)
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        name = _node(".".join(["lort", *rel.parts]).removesuffix(".__init__"))
        edges = {_node(m) for m in _imports(path)} - {name, "lort._core", "lort"}
        graph.setdefault(name, set()).update(edges)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in list(graph):
        if v not in index:
            connect(v)
    return found


def test_no_package_imports_another_that_imports_it_back() -> None:
    graph = _graph()
    assert {"lort.stage1", "lort.stage2", "lort.run", "lort.experiments", "lort.deploy"} <= set(
        graph
    )
    assert _cycles(graph) == []


def test_the_stages_import_downwards() -> None:
    graph = _graph()
    above = {"lort.run", "lort.experiments", "lort.deploy", "lort.cli", "lort.api"}
    for low in ("lort.data", "lort.models", "lort.methods", "lort.stage1", "lort.stage2"):
        assert not graph[low] & above, (low, graph[low] & above)
    assert "lort.stage2" not in graph["lort.stage1"]


def test_the_methods_import_without_the_compiled_core() -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'lort._core': raise ImportError('no core')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lort.methods, lort.stage1.losses\n"
        "print('lort._core' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
