"""The panels' shared look: run order and line styles, the key under a plot, layouts, in-place refresh.

Every figure of :mod:`otelab.views.panels` and :mod:`otelab.views.recorded` is drawn with these:
one colour per metric (:data:`PALETTE`), one line style per run in session order (A solid, B
dashed, ...: :func:`run_styles`), a title at the top left, the ``plotly_white`` template.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from otelab.eval.report import Report

__all__ = ["DASHES", "DASH_WORDS", "DASH_GLYPHS", "SYMBOLS", "PALETTE", "HEIGHT", "OFFSET", "SPACING",
           "run_order", "run_styles", "style_heading", "session_key", "report_series", "colour_key", "run_suffix",
           "add_line", "step_layout", "title_dict", "plain_layout", "subplots", "empty_note", "finish", "all_steps",
           "refresh"]

DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
DASH_WORDS = {"solid": "solid", "dash": "dashed", "dot": "dotted", "dashdot": "dash-dotted", "longdash": "long-dashed"}
DASH_GLYPHS = {"solid": "——", "dash": "- -", "dot": "···", "dashdot": "-·-", "longdash": "— —"}
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
HEIGHT = 340
OFFSET = 0.12        # steps: session B's markers sit this far right of A's, so equal curves stay visible
SPACING = 0.2        # between side-by-side plots: the right one's tick labels and y title fit
SUBTITLE_FONT = 12
KEY_FONT = 11
KEY_TOP = 48         # px under the plot area where the key starts (below the x axis title)
KEY_LINE = 15        # px per key line


def report_series(report: "Report") -> dict:
    """``{(label, metric): (steps, values)}`` without NaN values, steps ascending."""
    out: dict = {}
    if not len(report):
        return out
    df = report.to_frame()
    for label, step, metric, v in zip(df["label"], df["step"], df["metric"], df["value"]):
        if math.isnan(v):
            continue
        xs, ys = out.setdefault((label, metric), ([], []))
        xs.append(int(step))
        ys.append(float(v))
    return out


def run_order(report: "Report", order: Optional[Sequence] = None) -> list:
    """The report's runs in session order: ``order`` first, then any other run (alphabetically).

    Arguments:
        report: one run or several.
        order: run labels, session A first (the workbench's tracks); None: alphabetical.

    Returns:
        The labels; the first is drawn solid, the second dashed (:func:`run_styles`).

    Raises:
        ValueError: ``order`` names a run the report does not hold.
    """
    labels = report.labels
    if order is None:
        return labels
    order = list(order)
    bad = [l for l in order if l not in labels]
    if bad:
        raise ValueError(f"order names run {bad[0]!r}, which the report does not hold (runs: {labels})")
    return order + [l for l in labels if l not in order]


def run_styles(labels: Sequence) -> dict:
    """One look per run, tied to its session position (never to its name).

    Arguments:
        labels: the runs in session order (:func:`run_order`).

    Returns:
        ``{label: {"letter": "A", "dash": "solid", "symbol": "circle", "offset": 0.0}}``; the
        second run is ``"B"``, dashed, with its markers :data:`OFFSET` steps to the right (so
        that two sessions with equal values stay visible), and so on.
    """
    return {label: dict(letter=chr(ord("A") + r), dash=DASHES[r % len(DASHES)], symbol=SYMBOLS[r % len(SYMBOLS)],
                        offset=OFFSET * r) for r, label in enumerate(labels)}


def style_heading(labels: Sequence) -> str:
    """``"solid: MEMIT aligned, dashed: MEMIT naive"``: the line style of each run, from :func:`run_styles`."""
    return ", ".join(f"{DASH_WORDS[s['dash']]}: {label}" for label, s in run_styles(labels).items())


def session_key(labels: Sequence) -> str:
    """The one-line key of the sessions: ``"—— A: MEMIT aligned   - - B: MEMIT naive (markers +0.12 step)"``.

    Arguments:
        labels: the runs in session order.

    Returns:
        The key ("" for a single unlabelled run).
    """
    styles = run_styles(labels)
    if len(labels) == 1 and labels[0] is None:
        return ""
    parts = [f"{DASH_GLYPHS[s['dash']]} {s['letter']}: {label}" + (f" (markers +{s['offset']:g} step)"
                                                                     if s["offset"] else "")
             for label, s in styles.items()]
    return "   ".join(parts)


def colour_key(items: Sequence[tuple[str, str]]) -> str:
    """``■ name`` per ``(name, colour)``, each square in its colour (plotly annotation HTML)."""
    return "   ".join(f'<span style="color:{c}">■</span> {t}' for t, c in items)


def run_suffix(label, labels) -> str:
    """``" · <run>"`` after a trace's name when several runs share the figure, else ``""``."""
    return "" if len(labels) <= 1 or label is None else f" · {label}"


def add_line(fig: go.Figure, xs, ys, name: str, colour: str, style: dict, customdata=None, hover: str = "",
             **where) -> None:
    """A run's curve: the session's dash, symbol and marker offset, the metric's colour, the true step on hover."""
    fig.add_scatter(x=[x + style["offset"] for x in xs], y=ys, mode="lines+markers", name=name, showlegend=False,
                    customdata=customdata if customdata is not None else xs,
                    line=dict(color=colour, dash=style["dash"]), marker=dict(symbol=style["symbol"], size=7),
                    hovertemplate=f"{name}<br>step %{{customdata{'[0]' if customdata is not None else ''}}}: "
                                  f"%{{y:.4g}}{hover}<extra></extra>", **where)


def _dtick(steps: Sequence[int]) -> int:
    """Integer step ticks, at most about ten of them."""
    return max(1, math.ceil(max(steps, default=0) / 10))


def step_layout(fig: go.Figure, title: str, key: Sequence[str] = (), y_title: str = "",
                steps: Sequence[int] = ()) -> None:
    """Title, size, integer step ticks and the key lines under the plot (no legend: the key replaces it)."""
    key = [k for k in key if k]
    fig.update_layout(title=title_dict(title), template="plotly_white", height=HEIGHT,
                      margin=dict(l=60, r=15, t=45, b=KEY_TOP + KEY_LINE * len(key)), showlegend=False)
    fig.update_xaxes(title_text="step", rangemode="tozero", tick0=0, dtick=_dtick(steps))
    if y_title:
        fig.update_yaxes(title_text=y_title)
    for i, line in enumerate(key):   # under the axis title, in pixels (the plot height varies, the text does not)
        fig.add_annotation(text=line, showarrow=False, xref="paper", yref="paper", x=0, xanchor="left", y=0,
                           yanchor="top", yshift=-(KEY_TOP - 6 + KEY_LINE * i), font=dict(size=KEY_FONT, color="#333"),
                           align="left")


def title_dict(text: str) -> dict:
    """Every figure's title: at the top left, 14 px."""
    return dict(text=text, x=0.01, font=dict(size=14))


def plain_layout(fig: go.Figure, title: str, *, height: int = HEIGHT, **more) -> None:
    """The layout of a figure with a legend (recorded runs, the demo's own figures): title, template, size, margins.

    Arguments:
        fig: the figure (changed in place).
        title: its title.
        height: in px.
        **more: further ``update_layout`` settings (``legend``, ``xaxis_title``, ...), set in the same call.
    """
    fig.update_layout(title=title_dict(title), template="plotly_white", height=height,
                      margin=dict(l=55, r=15, t=45, b=40), **more)


def subplots(titles: Sequence[str]) -> go.Figure:
    """1 × n subplots with short, small titles and room between them for the right plot's y axis."""
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=list(titles), horizontal_spacing=SPACING)
    fig.update_annotations(font_size=SUBTITLE_FONT)
    return fig


def empty_note(fig: go.Figure, text: str, **where) -> None:
    """A grey note where the data would be (``where``: its position, as for ``add_annotation``)."""
    fig.add_annotation(text=text, showarrow=False, font=dict(color="#888"), **where)


def finish(fig: go.Figure, widget: bool):
    """The figure, or a ``go.FigureWidget`` of it when ``widget``."""
    return go.FigureWidget(fig) if widget else fig


def all_steps(series: dict) -> list[int]:
    """Every step of :func:`report_series`' curves (for the tick spacing)."""
    return [x for xs, _ in series.values() for x in xs]


def refresh(target: go.FigureWidget, new: go.Figure) -> None:
    """Make ``target`` show ``new`` in place (the widget and its view stay; only changed data is sent).

    When the traces line up (same count, types and names) each trace is updated and the
    titles, annotations, shapes, margins and the axes' ticks, titles and explicit ranges
    follow ``new`` (an auto-ranged axis keeps the user's zoom); otherwise the traces and the
    layout (but its width) are replaced (e.g. another set of subplots).
    """
    same = len(target.data) == len(new.data) and all(
        a.type == b.type and a.name == b.name for a, b in zip(target.data, new.data))
    if not same:
        target.data = ()
    with target.batch_update():
        if same:
            for a, b in zip(target.data, new.data):
                a.update(b.to_plotly_json(), overwrite=True)
            for name, axis in new.layout.to_plotly_json().items():
                if name.startswith(("xaxis", "yaxis")):   # e.g. the PPL range and the tick step grow with the data
                    target.layout[name].update({k: axis[k] for k in ("dtick", "tick0", "range", "visible", "title")
                                                if k in axis})
        else:
            width = target.layout.width   # set by the widget that shows it
            target.layout = new.layout
            target.layout.width = width
            target.add_traces(list(new.data))
        target.layout.annotations = new.layout.annotations
        target.layout.shapes = new.layout.shapes
        target.layout.title = new.layout.title
        target.layout.margin = new.layout.margin
