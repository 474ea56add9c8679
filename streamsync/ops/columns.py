"""Aligned text tables for command output (`resync`, `replay`)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int | None = None) -> str:
    """Columns padded to their widest cell; columns from `numeric_from` on are right-aligned."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def cell(i: int, text: str) -> str:
        right = numeric_from is not None and i >= numeric_from
        return text.rjust(widths[i]) if right else text.ljust(widths[i])

    return "\n".join("  ".join(cell(i, text) for i, text in enumerate(row)).rstrip() for row in table)
