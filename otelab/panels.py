"""Plotly panels of a sequential-editing run: pure functions ``Report -> go.Figure``.

The same builders draw the workbench's live panels (as ``go.FigureWidget``, updated
in place with :func:`refresh`) and the static figures of ``otelab demo``'s HTML
report. Every builder plots the metrics it finds in the report and skips the rest;
several labelled runs (``Report.combine``) are overlaid: one colour per metric,
one line style per run (solid, dashed, dotted, ...).

Metric names (as the workbench writes them, see :data:`otelab.workbench.METRICS`):
``efficacy_all``, ``paraphrase_all``, ``efficacy_latest``, ``paraphrase_latest``,
``specificity`` (plain ``efficacy`` / ``paraphrase`` are drawn when the ``_all``
variants are absent), ``glue/<task>/acc``, ``ppl``, ``top1_agreement``,
``latent_drift_edited``, ``latent_drift_unrelated``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from otelab.report import Report
    from otelab.workbench import LatentProjection

__all__ = ["edit_metrics_figure", "capability_figure", "lm_figure", "latent_figure", "all_panels", "refresh",
           "EDIT_METRICS"]

EDIT_METRICS = (
    ("efficacy_all", "efficacy (all edits)", "#1f77b4"),
    ("paraphrase_all", "paraphrase (all edits)", "#2ca02c"),
    ("efficacy_latest", "efficacy (latest batch)", "#9467bd"),
    ("paraphrase_latest", "paraphrase (latest batch)", "#8c564b"),
    ("specificity", "specificity", "#d62728"),
)
_FALLBACK = {"efficacy_all": "efficacy", "paraphrase_all": "paraphrase"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
HEIGHT = 340


def _series(report: "Report") -> dict:
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


def _run_name(label, labels) -> str:
    return "" if len(labels) <= 1 or label is None else f" · {label}"


def _layout(fig: go.Figure, title: str, y_title: str = "", **kw) -> None:
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), template="plotly_white", height=HEIGHT,
                      margin=dict(l=55, r=15, t=45, b=40), legend=dict(font=dict(size=10)), **kw)
    fig.update_xaxes(title_text="step", rangemode="tozero")
    if y_title:
        fig.update_yaxes(title_text=y_title)


def _empty_note(fig: go.Figure, text: str, **where) -> None:
    fig.add_annotation(text=text, showarrow=False, font=dict(color="#888"), **where)


def _finish(fig: go.Figure, widget: bool):
    return go.FigureWidget(fig) if widget else fig


def edit_metrics_figure(report: "Report", *, widget: bool = False, metrics: Optional[Sequence] = None):
    """Panel 1: efficacy and paraphrase (all edits so far and latest batch) and specificity vs step.

    Arguments:
        report: one run or several (``Report.combine``).
        widget: return a ``go.FigureWidget``.
        metrics: ``(name, legend text, colour)`` triples; default :data:`EDIT_METRICS`.

    Returns:
        The figure: one ``lines+markers`` trace per (run, metric), named ``"<legend text> · <run>"``.
    """
    series, labels = _series(report), report.labels
    fig = go.Figure()
    for r, label in enumerate(labels):
        for name, text, colour in (metrics or EDIT_METRICS):
            key = (label, name)
            if key not in series and name in _FALLBACK:
                key = (label, _FALLBACK[name])
            if key not in series:
                continue
            xs, ys = series[key]
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=text + _run_name(label, labels),
                            legendgroup=name, line=dict(color=colour, dash=DASHES[r % len(DASHES)]),
                            marker=dict(symbol=SYMBOLS[r % len(SYMBOLS)], size=7))
    _layout(fig, "Edit metrics vs step", "score", yaxis=dict(range=[-0.05, 1.05]))
    if not fig.data:
        _empty_note(fig, "no edit metrics yet", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


def capability_figure(report: "Report", *, widget: bool = False, stat: str = "acc"):
    """Panel 2: general capability per task (``glue/<task>/<stat>``) vs step.

    Arguments:
        report: one run or several.
        widget: return a ``go.FigureWidget``.
        stat: ``acc`` (default), ``f1`` or ``mcc``.
    """
    series, labels = _series(report), report.labels
    tasks = [m.split("/")[1] for m in report.metrics if m.startswith("glue/") and m.endswith("/" + stat)]
    fig = go.Figure()
    for r, label in enumerate(labels):
        for t, task in enumerate(tasks):
            key = (label, f"glue/{task}/{stat}")
            if key not in series:
                continue
            xs, ys = series[key]
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=task + _run_name(label, labels),
                            legendgroup=task, line=dict(color=PALETTE[t % len(PALETTE)], dash=DASHES[r % len(DASHES)]),
                            marker=dict(symbol=SYMBOLS[r % len(SYMBOLS)], size=7))
    _layout(fig, f"General capability ({stat}) vs step", stat, yaxis=dict(range=[-0.05, 1.05]))
    if not fig.data:
        _empty_note(fig, "no general-capability scores", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


def lm_figure(report: "Report", *, widget: bool = False):
    """Panel 3: perplexity on held-out text (left) and top-1 agreement with the unedited model (right)."""
    series, labels = _series(report), report.labels
    fig = make_subplots(rows=1, cols=2, subplot_titles=("perplexity", "top-1 agreement with the unedited model"),
                        horizontal_spacing=0.12)
    for r, label in enumerate(labels):
        for col, (name, colour) in enumerate((("ppl", "#ff7f0e"), ("top1_agreement", "#17becf")), start=1):
            if (label, name) not in series:
                continue
            xs, ys = series[(label, name)]
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=name + _run_name(label, labels),
                            legendgroup=str(label), line=dict(color=colour, dash=DASHES[r % len(DASHES)]),
                            marker=dict(symbol=SYMBOLS[r % len(SYMBOLS)], size=7), row=1, col=col)
    _layout(fig, "Language-model drift vs step")
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=2)
    if not fig.data:
        _empty_note(fig, "no held-out text measured", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


def latent_figure(report: "Report", projection: Optional["LatentProjection"] = None, *, widget: bool = False):
    """Panel 4: UMAP of subject hidden states before/after (left) and projection-free drift vs step (right).

    Arguments:
        report: one run or several; drift is ``latent_drift_edited`` / ``latent_drift_unrelated``
            (mean 1 − cos between the unedited and edited states).
        projection: a :class:`otelab.workbench.LatentProjection` (or anything with ``step``,
            ``before [n, 2]``, ``after {label: [n, 2]}``, ``edited [n]``, ``names [n]``); None: left empty.
        widget: return a ``go.FigureWidget``.
    """
    series, labels = _series(report), report.labels
    left = "UMAP of subject states" + (f" (step {projection.step})" if projection is not None else "")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(left, "latent drift 1 − cos (no projection)"),
                        horizontal_spacing=0.12)
    if projection is not None:
        edited = [bool(e) for e in projection.edited]
        for kind, sel, size in (("edited", True, 11), ("unrelated", False, 7)):
            idx = [i for i, e in enumerate(edited) if e == sel]
            if not idx:
                continue
            fig.add_scatter(x=[float(projection.before[i][0]) for i in idx],
                            y=[float(projection.before[i][1]) for i in idx], mode="markers",
                            name=f"before · {kind}", legendgroup="before",
                            text=[projection.names[i] for i in idx], hovertemplate="%{text}<extra>before</extra>",
                            marker=dict(color="#7f7f7f", size=size, symbol="star" if sel else "circle-open"),
                            row=1, col=1)
            for r, (label, pts) in enumerate(projection.after.items()):
                fig.add_scatter(x=[float(pts[i][0]) for i in idx], y=[float(pts[i][1]) for i in idx],
                                mode="markers", name=f"after · {kind}" + _run_name(label, list(projection.after)),
                                legendgroup=str(label), text=[projection.names[i] for i in idx],
                                hovertemplate="%{text}<extra>after</extra>",
                                marker=dict(color=PALETTE[(r + 1) % len(PALETTE)], size=size,
                                            symbol="star" if sel else SYMBOLS[r % len(SYMBOLS)],
                                            opacity=0.8), row=1, col=1)
    else:
        _empty_note(fig, "UMAP appears at the next slow evaluation", x=0.22, y=0.5, xref="paper", yref="paper")
    for r, label in enumerate(labels):
        for name, text, colour in (("latent_drift_edited", "edited", "#d62728"),
                                   ("latent_drift_unrelated", "unrelated", "#1f77b4")):
            if (label, name) not in series:
                continue
            xs, ys = series[(label, name)]
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"drift · {text}" + _run_name(label, labels),
                            legendgroup=name, line=dict(color=colour, dash=DASHES[r % len(DASHES)]),
                            marker=dict(symbol=SYMBOLS[r % len(SYMBOLS)], size=7), row=1, col=2)
    _layout(fig, "Latent drift")
    fig.update_xaxes(title_text="UMAP 1", rangemode="normal", row=1, col=1)
    fig.update_yaxes(title_text="UMAP 2", row=1, col=1)
    return _finish(fig, widget)


def all_panels(report: "Report", projection: Optional["LatentProjection"] = None) -> dict[str, go.Figure]:
    """The four panels as static figures, keyed ``edit``, ``capability``, ``lm``, ``latent`` (for HTML reports)."""
    return {"edit": edit_metrics_figure(report), "capability": capability_figure(report),
            "lm": lm_figure(report), "latent": latent_figure(report, projection)}


def refresh(target: go.FigureWidget, new: go.Figure) -> None:
    """Make ``target`` show ``new`` in place (the widget and its view stay; only changed data is sent).

    When the traces line up (same count, types and names) each trace is updated;
    otherwise the traces are replaced. The layout (titles, annotations) follows ``new``.
    """
    same = len(target.data) == len(new.data) and all(
        a.type == b.type and a.name == b.name for a, b in zip(target.data, new.data))
    if not same:
        target.data = ()
    with target.batch_update():
        if same:
            for a, b in zip(target.data, new.data):
                a.update(b.to_plotly_json(), overwrite=True)
        else:
            target.add_traces(list(new.data))
        target.layout.annotations = new.layout.annotations
        target.layout.title = new.layout.title
