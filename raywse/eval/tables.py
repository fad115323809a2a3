"""Markdown tables of the report: one row per embedder, the columns of one split."""

from __future__ import annotations

from raywse.eval.config import RAYWSE
from raywse.eval.summary import _fmt


def embedder_cell(embedder: str) -> str:
    """An embedder's name as a table shows it (raywse in bold)."""
    return f"**{RAYWSE}**" if embedder == RAYWSE else embedder


def markdown_table(metrics: dict, split: str, columns: list[str]) -> list[str]:
    """One row per embedder of ``metrics`` (embedder → split → metric), the ``columns`` of ``split``."""
    lines = [f"| embedder | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for name, scores in metrics.items():
        vals = scores.get(split, {})
        cells = [str(vals.get(c, "n/a")) if c == "queries" else _fmt(vals.get(c)) for c in columns]
        lines.append(f"| {embedder_cell(name)} | {' | '.join(cells)} |")
    return lines


def split_tables(scores: dict, splits: tuple[str, ...], columns: list[str]) -> list[str]:
    """A titled :func:`markdown_table` per split."""
    lines = []
    for split in splits:
        lines += [f"**{split}**", "", *markdown_table(scores, split, columns), ""]
    return lines
