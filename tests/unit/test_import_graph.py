"""The package's modules import each other without cycles, counting the imports written
inside functions too (a lazy import hides a cycle from Python, not from a reader)."""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Module name prefix -> source folder (``workflows/`` installs as ``mixnet_bids.workflows``).
SOURCES = {"mixnet_bids.workflows": ROOT / "workflows", "mixnet_bids": ROOT / "mixnet_bids"}


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.setdefault(".".join((prefix, *parts)), path)
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The package's modules one import statement loads (the named ones, not their
    parents: a package's ``__init__`` importing its own submodules is not a cycle)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return names or ([base] if base in known else [])


@functools.cache
def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _imported(node, module, is_package, set(modules)):
                if target != module:
                    graph.add_edge(module, target)
    return graph


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # a function-level import (the training cache prepares the runtime inside a function)
    assert graph.has_edge("mixnet_bids.training.cache", "mixnet_bids.runtime")
    # the workflows folder is the mixnet_bids.workflows package
    assert "mixnet_bids.workflows.preprocessing" in graph
    assert graph.number_of_edges() > 50


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_imports(module):
    importlib.import_module(module)
