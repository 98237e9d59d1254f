"""Plain-text tables (the command line and the demo's printed summary)."""
from __future__ import annotations

from typing import Any, Sequence


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Align a list of dicts as a text table (columns from the first row unless given).

    Arguments:
        rows: one dict per row.
        columns: column order; keys missing in a row print empty.
    Returns:
        The table as a string, header and a rule first.
    """
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])
