"""One self-contained HTML file: plotly panels, tables and the settings of a run.

plotly.js is embedded inline exactly once, in ``<head>``; every figure is then a
``<div>`` with its own small script (``include_plotlyjs=False``), so the page opens
offline, from a file, in any browser. Nothing is fetched from the network.

The page is built from *sections*, each one of:

- ``("figure", title, fig, caption)``: a plotly figure;
- ``("table", title, rows, caption)``: ``rows`` is a list of dicts (columns from the keys);
- ``("text", title, html, caption)``: trusted HTML written by otelab itself;
- ``("pre", title, text, caption)``: preformatted text (escaped).
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

SECTION_KINDS = ("figure", "table", "text", "pre")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 18px 28px 60px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
.caption { color: #555; font-size: 0.92em; margin: 4px 0 10px; }
table { border-collapse: collapse; font-size: 0.9em; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; }
td.l, th.l { text-align: left; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px 10px; font-size: 0.85em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.tw { overflow-x: auto; }
.panel { margin: 4px 0 18px; }
"""


def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}"
    if isinstance(v, (list, tuple, dict)):
        return html.escape(json.dumps(v, ensure_ascii=False))
    return html.escape(str(v))


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """An HTML table of ``rows`` (dicts); text columns are left-aligned, numbers right-aligned.

    Arguments:
        rows: one dict per row.
        columns: column order (default: keys in first-seen order).
        digits: decimals for floats.
    Returns:
        The ``<table>`` markup.
    """
    if not rows:
        return "<p class='caption'>(no rows)</p>"
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    text_cols = {c for c in cols if any(isinstance(r.get(c), str) for r in rows)}
    head = "".join(f"<th class='{'l' if c in text_cols else ''}'>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join(f"<td class='{'l' if c in text_cols else ''}'>{_cell(r.get(c), digits)}</td>" for c in cols)
        body.append(f"<tr>{cells}</tr>")
    return f"<div class='tw'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _section(kind: str, title: str, content: Any, caption: str, index: int) -> str:
    if kind not in SECTION_KINDS:
        raise ValueError(f"section {index} ({title!r}): kind {kind!r} is not one of {SECTION_KINDS}")
    parts = [f"<h2 id='s{index}'>{html.escape(title)}</h2>"]
    if caption:
        parts.append(f"<p class='caption'>{caption}</p>")
    if kind == "figure":
        if not hasattr(content, "to_html"):
            raise ValueError(f"section {index} ({title!r}): a figure section needs a plotly figure, "
                             f"got {type(content).__name__}")
        div = content.to_html(full_html=False, include_plotlyjs=False, div_id=f"panel-{index}",
                              config={"displaylogo": False, "responsive": True})
        parts.append(f"<div class='panel' data-title='{html.escape(title, quote=True)}'>{div}</div>")
    elif kind == "table":
        parts.append(table_html(list(content)))
    elif kind == "text":
        parts.append(str(content))
    else:
        parts.append(f"<pre>{html.escape(str(content))}</pre>")
    return "\n".join(parts)


def render(title: str, sections: Sequence[tuple], *, subtitle: str = "", settings: Mapping[str, Any] | None = None) -> str:
    """The whole page as a string.

    Arguments:
        title: the ``<h1>`` and the page title.
        sections: ``(kind, title, content, caption)`` tuples (see the module docstring);
            captions are trusted HTML.
        subtitle: a line under the title (escaped).
        settings: shown last, as a two-column table and as JSON (the exact run settings).
    Returns:
        HTML text with plotly.js inlined once.
    """
    from plotly.offline import get_plotlyjs

    body = [f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        body.append(f"<p class='sub'>{html.escape(subtitle)}</p>")
    toc = [f"<li><a href='#s{i}'>{html.escape(s[1])}</a></li>" for i, s in enumerate(sections)]
    if settings is not None:
        toc.append("<li><a href='#settings'>Settings used</a></li>")
    body.append(f"<ul>{''.join(toc)}</ul>")
    for i, sec in enumerate(sections):
        if len(sec) != 4:
            raise ValueError(f"section {i}: expected (kind, title, content, caption), got {len(sec)} items")
        body.append(_section(sec[0], sec[1], sec[2], sec[3], i))
    if settings is not None:
        flat = [{"setting": k, "value": v if isinstance(v, (int, float, str, bool)) or v is None
                 else json.dumps(v, ensure_ascii=False)} for k, v in settings.items()]
        body.append("<h2 id='settings'>Settings used</h2>")
        body.append(table_html(flat, ["setting", "value"], digits=6))
        body.append("<pre class='settings-json'>" + html.escape(json.dumps(settings, indent=1, ensure_ascii=False,
                                                                         default=str)) + "</pre>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write(path: str | Path, title: str, sections: Sequence[tuple], **kw: Any) -> Path:
    """:func:`render` and write the page to ``path`` (atomically; folders created).

    Returns:
        The path written.
    """
    from otelab.cache import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render(title, sections, **kw).encode("utf-8"))
    return path
