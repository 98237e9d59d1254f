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

Recorded stream runs (:func:`otelab.stream.stream_report`, x = edits so far) have their own
two: :func:`recorded_figure` (the curves of :data:`RECORDED`, cut at a scrubbed number of
edits) over :func:`recorded_series`, and :func:`retention_figure` (each run's retention
matrix as a heatmap, batch × checkpoint).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from otelab.report import Report
    from otelab.workbench import LatentProjection

__all__ = ["edit_metrics_figure", "capability_figure", "lm_figure", "latent_figure", "all_panels", "refresh",
           "EDIT_METRICS", "RECORDED", "recorded_series", "recorded_figure", "retention_figure"]

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

    When the traces line up (same count, types and names) each trace is updated and the
    titles, annotations and shapes follow ``new`` (axes keep the user's zoom); otherwise the
    traces and the layout (but its width) are replaced (e.g. another set of subplots).
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
            width = target.layout.width   # set by the widget that shows it
            target.layout = new.layout
            target.layout.width = width
            target.add_traces(list(new.data))
        target.layout.annotations = new.layout.annotations
        target.layout.shapes = new.layout.shapes
        target.layout.title = new.layout.title


# ----------------------------------------------------------------------------- recorded runs

# The scrubber's curves: (name, subplot title). Derived from stream_report's metrics by recorded_series.
RECORDED = (
    ("ppl", "perplexity on held-out text"),
    ("top1_agreement", "top-1 agreement with the unedited model"),
    ("capability_agreement", "capability: agreement with unedited answers"),
    ("capability_margin", "capability: margin (mean over tasks)"),
    ("efficacy", "sample efficacy, 95 % bootstrap CI"),
    ("dW", "‖ΔW‖_F, all edited layers"),
)


def recorded_series(report: "Report") -> dict:
    """The :data:`RECORDED` curves of stream runs, derived once (a scrubber then only cuts them).

    Arguments:
        report: :func:`otelab.stream.stream_report` of one run, or several combined.

    Returns:
        ``{(label, name): (edits, values, lo, hi)}``: ``lo`` / ``hi`` the bootstrap interval
        for ``efficacy``, else None; ``capability_*`` the mean over tasks of
        ``glue/<task>/agreement`` / ``margin``; ``dW`` the Frobenius norm over all edited
        layers, √(Σ_l ‖ΔW_l‖²), after every step (0 before the first).
    """
    raw, out = _series(report), {}
    for label in report.labels:
        def pts(metric):
            xs, ys = raw.get((label, metric), ([], []))
            return dict(zip(xs, ys))

        for name in ("ppl", "top1_agreement"):
            if (label, name) in raw:
                out[(label, name)] = (*raw[(label, name)], None, None)
        if (label, "efficacy") in raw:
            xs, ys = raw[(label, "efficacy")]
            lo, hi = pts("efficacy_lo"), pts("efficacy_hi")
            out[(label, "efficacy")] = (xs, ys, [lo.get(x, y) for x, y in zip(xs, ys)],
                                        [hi.get(x, y) for x, y in zip(xs, ys)])
        groups = {"capability_agreement": "/agreement", "capability_margin": "/margin", "dW": None}
        for name, suffix in groups.items():
            if suffix is None:
                metrics = [m for m in report.metrics if m.startswith("dW/")]
            else:
                metrics = [m for m in report.metrics if m.startswith("glue/") and m.endswith(suffix)]
            per = [pts(m) for m in metrics if (label, m) in raw]
            xs = sorted(set().union(*per)) if per else []
            xs = [x for x in xs if all(x in p for p in per)]   # steps where every task / layer is recorded
            if not xs:
                continue
            ys = [math.sqrt(sum(p[x] ** 2 for p in per)) if suffix is None else sum(p[x] for p in per) / len(per)
                  for x in xs]
            if suffix is None and xs[0] > 0:   # the unedited weights: ΔW = 0 exactly
                xs, ys = [0] + xs, [0.0] + ys
            out[(label, name)] = (xs, ys, None, None)
    return out


def _colour(r: int) -> dict:
    return dict(color=PALETTE[r % len(PALETTE)], dash=DASHES[(r // len(PALETTE)) % len(DASHES)])


def recorded_figure(series: dict, labels: Sequence, *, upto: Optional[int] = None, x_max: Optional[float] = None,
                    widget: bool = False):
    """Every run's :data:`RECORDED` curves up to ``upto`` edits: one subplot per metric, one colour per run.

    Arguments:
        series: :func:`recorded_series`.
        labels: the runs to draw, in legend order.
        upto: draw the points with at most this many edits, and a dotted line there (None: all).
        x_max: the x axis' right end (fixed, so that the curves grow as ``upto`` moves; default the last point).
        widget: return a ``go.FigureWidget``.

    Returns:
        A 2 × 3 figure; one trace per (run, metric) present, even when ``upto`` leaves it empty
        (so that :func:`refresh` updates in place).
    """
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in RECORDED], horizontal_spacing=0.07,
                        vertical_spacing=0.16)
    last, shown = 0, set()
    for k, (name, _) in enumerate(RECORDED):
        row, col = divmod(k, 3)
        for r, label in enumerate(labels):
            if (label, name) not in series:
                continue
            xs, ys, lo, hi = series[(label, name)]
            last = max([last] + list(xs))
            keep = [i for i, x in enumerate(xs) if upto is None or x <= upto]
            err = None
            if lo is not None:
                err = dict(type="data", symmetric=False, array=[hi[i] - ys[i] for i in keep],
                           arrayminus=[ys[i] - lo[i] for i in keep], thickness=1, width=3)
            fig.add_scatter(x=[xs[i] for i in keep], y=[ys[i] for i in keep], mode="lines+markers", name=str(label),
                            legendgroup=str(label), showlegend=label not in shown,
                            line=_colour(r), marker=dict(size=5), error_y=err,
                            hovertemplate=f"{label}<br>%{{x}} edits: %{{y:.4g}}<extra></extra>",
                            row=row + 1, col=col + 1)
            shown.add(label)
    right = x_max if x_max is not None else last
    _layout(fig, "Recorded runs" + (f" up to {upto} edits" if upto is not None else ""))
    fig.update_layout(height=2 * HEIGHT, legend=dict(font=dict(size=10), orientation="h", y=-0.08))
    fig.update_xaxes(title_text="edits", range=[-0.02 * right, 1.03 * right] if right else None)
    for k in (1, 2, 4):   # shares: fixed [0, 1] scale
        fig.update_yaxes(range=[-0.03, 1.03], row=k // 3 + 1, col=k % 3 + 1)
    if upto is not None:
        fig.add_vline(x=upto, line=dict(color="#888", dash="dot", width=1))
    if not fig.data:
        _empty_note(fig, "no recorded runs", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


def retention_figure(runs: Mapping[str, Mapping[str, Any]], *, upto: Optional[int] = None, cols: int = 3,
                     widget: bool = False):
    """Each run's retention matrix: the share of every batch's edits still written in, at every checkpoint.

    A heatmap of ``run["retention"]["share"]`` per run (rows: batch 1 at the top; columns:
    checkpoints, by edits so far; blank: not yet edited). The colour scale (0 to 1) is shared.

    Arguments:
        runs: ``{label: run}`` (``otelab-stream/1`` dicts, e.g. :func:`otelab.stream.load_runs`).
        upto: blank the checkpoints after this many edits (the scrubbed point; None: all).
        cols: subplots per row.
        widget: return a ``go.FigureWidget``.

    Returns:
        The figure: one ``heatmap`` trace per run with a retention matrix (the checkpoint before
        any edit is left out: it has no edited batch).
    """
    labels = list(runs)
    cols = max(1, min(cols, len(labels)))
    rows = max(1, math.ceil(len(labels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(l) for l in labels] or None,
                        horizontal_spacing=0.06, vertical_spacing=0.22 / rows)
    for k, label in enumerate(labels):
        run = runs[label]
        ret, stream = run.get("retention"), run.get("stream", {})
        row, col = k // cols + 1, k % cols + 1
        if not ret or not ret.get("share"):
            fig.add_annotation(text="no retention recorded", showarrow=False, font=dict(color="#888"),
                               x=0.5, y=0.5, xref=f"x{k + 1 if k else ''} domain", yref=f"y{k + 1 if k else ''} domain")
            continue
        bs, n = stream.get("batch_size", 1), len(stream.get("case_ids", [])) or None
        cks = [c for c, s in enumerate(ret["steps"]) if s > 0]
        edits = [min(ret["steps"][c] * bs, n or ret["steps"][c] * bs) for c in cks]   # [n_checkpoints]
        z = [[ret["share"][b][c] if upto is None or e <= upto else None for c, e in zip(cks, edits)]
             for b in range(len(ret["share"]))]                                      # [n_batches][n_checkpoints]
        counts = [[ret["n"][b][c] for c in cks] for b in range(len(ret["share"]))]
        fig.add_heatmap(z=z, x=[str(e) for e in edits], y=[f"batch {b + 1}" for b in range(len(z))],
                        customdata=counts, coloraxis="coloraxis", name=str(label), xgap=1, ygap=1,
                        hovertemplate="%{y}, after %{x} edits: %{z:.2f} retained (%{customdata} scored)"
                                      "<extra>" + str(label) + "</extra>", row=row, col=col)
        fig.update_yaxes(autorange="reversed", row=row, col=col)
    _layout(fig, "Retention: share of each batch still written in" +
            (f" (up to {upto} edits)" if upto is not None else ""))
    fig.update_xaxes(title_text="edits", rangemode="normal", type="category")
    fig.update_layout(height=max(HEIGHT, 300 * rows), coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1,
                                                                      colorbar=dict(title="retained", len=0.8)))
    if not labels:
        _empty_note(fig, "no recorded runs", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)
