"""Numbers and tables for people: the one place the project turns values into report text.

Every report (quality, benchmark, readiness) shows a missing number the same way ("—"), so a reader
never wonders whether "n/a", "–" and "—" mean different things. NaN counts as missing: a percentile of
no samples is not a number anyone should read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "—"


def fmt(x: float | None, digits: int = 2) -> str:
    """`x` with `digits` decimals, or "—" when there is no number."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x:.{digits}f}"


def md_cell(text: object, limit: int | None = None) -> str:
    """A value that cannot break a markdown table: no pipe, no newline, optionally cut to `limit` characters."""
    flat = " ".join(str(text).split()).replace("|", "/")
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; cells are escaped with `md_cell`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
