"""The column tables printed on the terminal (``info``, ``night``, ``inspect``, a scan's groups).

One layout for all: a header line, a rule of dashes under each column, then one line per row;
cells left-aligned, columns two spaces apart, no trailing spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
               free_last: bool = False) -> list[str]:
    """The lines of a table of ``rows`` (strings, one per column of ``header``).

    ``free_last``: the last column is free text (a status with its reason, of any length): its
    rule is as wide as its heading, however long its cells."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    if free_last:
        widths[-1] = len(header[-1])

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
