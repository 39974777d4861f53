"""Percentiles and plain-text tables shared by every benchmark's report.

Benchmarks print their numbers as aligned tables on stdout (the suite keeps that
text in results.json), so one percentile definition and one table layout serve them
all and the tables read the same everywhere.
"""
from __future__ import annotations

from collections.abc import Sequence


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence (`fraction` 0.99 for p99)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """Columns as wide as their widest cell, the first `left` left-aligned, the rest right-aligned;
    a rule of dashes under the header."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
                       for i, cell in enumerate(row)).rstrip()
             for row in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
