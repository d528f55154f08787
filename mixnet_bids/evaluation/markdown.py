"""Markdown tables, as the results documents and the benchmarks write them."""

from __future__ import annotations

from typing import Sequence


def row(cells: Sequence[object]) -> str:
    """One table row: ``| a | b |``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table with a header line; cells are written as ``str`` gives them."""
    return "\n".join([row(header), row(["---"] * len(header)), *map(row, rows)])
