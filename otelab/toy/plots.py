"""Plotly figures for the toy (notebooks 01-04), the interactive collapse explorer and recorded curves.

Every function returns a figure (or a widget) and never shows it, so notebooks
decide what to display. plotly and ipywidgets are imported here, not by
:mod:`otelab`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from otelab.toy.world import ToyConfig, ToyTrace, make_world, run_rule

__all__ = ["metric_figure", "collapse_figure", "sweep_figure", "collapse_explorer", "curves_figure"]

LABELS = {
    "preserved_error": "preserved error ‖W_t K0 − V0‖/‖V0‖",
    "edits_error": "error on all edits so far",
    "latest_error": "error on the latest batch",
    "delta_norm": "‖W_t − W0‖_F",
    "cond": "cond(W_t)",
    "ote_distance": "‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖",
    "virtual_ote_distance": "‖W_t + E_t − W_OTE,t‖ / ‖W_OTE,t − W0‖",
    "omitted_norm": "‖S_t C0 P‖ (the term Eq. 3 drops from Eq. 4)",
    "error_norm": "‖E_t‖_F (Algorithm 1's carried error)",
}


def _xy(trace: ToyTrace, metric: str) -> tuple[list, list]:
    """Steps and values, leaving out the steps where the metric was not computed (NaN)."""
    pts = [(s, v) for s, v in zip(trace.steps, getattr(trace, metric)) if v == v]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_figure(traces: Sequence[ToyTrace], metric: str = "preserved_error", *, title: str = "",
                  log_y: bool = False, names: Optional[Sequence[str]] = None, floor: float = 0.0) -> go.Figure:
    """One line per trace of ``metric`` against the step.

    Arguments:
        traces: from :func:`otelab.toy.world.run_rule`; metric: a field of :class:`ToyTrace`.
        title: figure title; log_y: log-scale y axis; names: legend labels (default: rule names).
        floor: values below it are drawn at it (so exact zeros show on a log axis).
    Returns:
        A ``go.Figure``.
    """
    fig = go.Figure()
    for i, tr in enumerate(traces):
        x, y = _xy(tr, metric)
        fig.add_scatter(x=x, y=[max(v, floor) for v in y], mode="lines", name=names[i] if names else tr.rule)
    fig.update_layout(title=title, xaxis_title="step t", yaxis_title=LABELS.get(metric, metric),
                      template="plotly_white", height=380, legend=dict(orientation="h", y=-0.25))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def collapse_figure(nullspace: ToyTrace, full: ToyTrace, *, widget: bool = False):
    """Notebook 01's figure: preserved error (left) and the omitted term (right), Eq. 3 vs Eq. 4.

    Arguments:
        nullspace, full: traces of ``memorize-nullspace`` and ``memorize-full``.
        widget: return a ``go.FigureWidget`` (updatable in place) instead of a ``go.Figure``.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "preserved knowledge error ‖W_t K0 − V0‖/‖V0‖", "omitted term ‖S_t (C0 P + λI)‖"))
    colors = {"Eq. 3 (null-space)": "#d62728", "Eq. 4 (full)": "#1f77b4"}
    for (name, tr) in (("Eq. 3 (null-space)", nullspace), ("Eq. 4 (full)", full)):
        for col, metric in ((1, "preserved_error"), (2, "omitted_norm")):
            x, y = _xy(tr, metric)
            fig.add_scatter(x=x, y=y, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                            line=dict(color=colors[name]), row=1, col=col)
    fig.update_xaxes(title_text="step t")
    fig.update_layout(template="plotly_white", height=380, legend=dict(orientation="h", y=-0.25))
    return go.FigureWidget(fig) if widget else fig


# axis and legend names of collapse_sweep's columns
SWEEP_TITLES = {"n": "batch size n", "threshold": "projector threshold", "null_dims": "null dims",
                "lam": "λ", "T": "steps T", "ratio": "Eq. 3 / Eq. 4 preserved error",
                "nullspace": "Eq. 3 preserved error", "full": "Eq. 4 preserved error", "leak": "leak tr(PC0)/tr(C0)"}


def _log_ticks(values: Sequence[float], most: int = 8) -> list[float]:
    """Tick positions for a log axis: the sampled values themselves when there are few, else 1-2-5 steps.

    plotly's own log ticks label the minor steps with single digits ("9, 1, 2 … 10") and can leave
    the largest sampled value without a label; a sweep has few values, so each gets its own tick.

    Arguments:
        values: the positive x values drawn.
        most: above this many distinct values, 1, 2, 5, 10, 20, … within their range instead.
    Returns:
        Sorted tick positions.
    """
    xs = sorted({float(v) for v in values})
    if len(xs) <= most:
        return xs
    lo, hi = math.floor(math.log10(xs[0])), math.ceil(math.log10(xs[-1]))
    return [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5) if xs[0] <= m * 10.0 ** e <= xs[-1]]


def sweep_figure(df, *, x: str = "n", color: str = "null_dims", y: str = "ratio", title: str = "") -> go.Figure:
    """Lines of ``y`` against ``x`` on a log x axis, one per value of ``color`` (mean over seeds, min-max bars).

    Arguments:
        df: from :func:`otelab.toy.world.collapse_sweep`.
        x, color, y: its columns for the axis, the lines and the values (named by :data:`SWEEP_TITLES`).
        title: figure title.
    Returns:
        A ``go.Figure`` whose x ticks sit at the sampled values (each labelled) when there are
        at most 8 of them, else at 1, 2, 5, 10, 20, …
    """
    fig = go.Figure()
    name = SWEEP_TITLES.get(color, color)
    for key, grp in df.groupby(color, sort=True):
        g = grp.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()
        fig.add_scatter(x=g[x], y=g["mean"], mode="lines+markers", name=f"{name} = {key}",
                        error_y=dict(type="data", symmetric=False, array=g["max"] - g["mean"],
                                     arrayminus=g["mean"] - g["min"]))
    ticks = _log_ticks(df[x])
    fig.update_layout(title=title, xaxis_title=f"{SWEEP_TITLES.get(x, x)} (log scale)",
                      yaxis_title=SWEEP_TITLES.get(y, y), template="plotly_white", height=380)
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return fig


def collapse_explorer(cfg: Optional[ToyConfig] = None, traces: Optional[tuple[ToyTrace, ToyTrace]] = None):
    """Sliders (steps, batch size, threshold, λ) that re-run notebook 01's toy and redraw in place.

    Arguments:
        cfg: the starting config (default :class:`ToyConfig`).
        traces: ``(memorize-nullspace, memorize-full)`` traces of ``cfg`` already run (saves the first run).
    Returns:
        An ``ipywidgets.VBox``: the sliders, a status line and a ``go.FigureWidget``.
    """
    import ipywidgets as W

    cfg = cfg or ToyConfig()
    style = dict(continuous_update=False, style={"description_width": "120px"},
                 layout=W.Layout(width="420px"))
    steps = W.IntSlider(value=cfg.T, min=10, max=400, step=10, description="steps T", **style)
    batch = W.IntSlider(value=cfg.n, min=1, max=16, description="batch size n", **style)
    thr = W.FloatLogSlider(value=cfg.threshold, base=10, min=-3, max=0, step=0.1,
                           description="threshold", **style)
    lam = W.FloatLogSlider(value=cfg.lam, base=10, min=-4, max=1, step=0.5, description="λ", **style)
    status = W.HTML()

    def compute(c: ToyConfig):
        world = make_world(c)
        every = max(1, c.T // 40)
        ns = run_rule(world, "memorize-nullspace", cond_every=0, ote_every=every)
        full = run_rule(world, "memorize-full", cond_every=0, ote_every=every)
        ratio = ns.preserved_error[-1] / full.preserved_error[-1]
        status.value = (f"{world.null_dims} null dims, batch {c.n}: after {c.T} steps Eq. 3 / Eq. 4 "
                        f"preserved error = {ns.preserved_error[-1]:.3f} / {full.preserved_error[-1]:.3f} "
                        f"= <b>{ratio:.1f}×</b>")
        return ns, full

    if traces is None:
        traces = compute(cfg)
    else:
        status.value = (f"after {cfg.T} steps Eq. 3 / Eq. 4 preserved error = "
                        f"{traces[0].preserved_error[-1]:.3f} / {traces[1].preserved_error[-1]:.3f}")
    fig = collapse_figure(*traces, widget=True)

    def update(_change=None):
        c = replace(cfg, T=steps.value, n=batch.value, threshold=thr.value, lam=lam.value)
        ns, full = compute(c)
        with fig.batch_update():
            # traces were added as (Eq. 3: left, right), (Eq. 4: left, right)
            for i, (tr, metric) in enumerate([(ns, "preserved_error"), (ns, "omitted_norm"),
                                              (full, "preserved_error"), (full, "omitted_norm")]):
                fig.data[i].x, fig.data[i].y = _xy(tr, metric)

    for s in (steps, batch, thr, lam):
        s.observe(update, names="value")
    box = W.VBox([W.HBox([W.VBox([steps, batch]), W.VBox([thr, lam])]), status, fig])
    box.update = update            # for tests and notebooks: re-run with the current slider values
    box.sliders = dict(steps=steps, batch=batch, threshold=thr, lam=lam)
    return box


def curves_figure(df, panels: Sequence[tuple[str, str]], *, cols: int = 3, title: str = "",
                  log_y: Sequence[str] = ("ppl",), height_per_row: int = 300) -> go.Figure:
    """One subplot per metric, one colour per run: recorded curves against the number of edits.

    Arguments:
        df: tidy frame with ``label, edits, metric, value`` (e.g. :func:`otelab.paper.protocol.curves`).
        panels: ``(metric, subplot title)`` pairs, in reading order; metrics absent from ``df``
            keep an empty subplot.
        cols: subplots per row.
        title: figure title.
        log_y: metrics drawn on a log axis when their values span more than a factor of 5
            (a collapsing run's PPL would flatten every other curve).
        height_per_row: pixels per row of subplots.
    Returns:
        A ``go.Figure``; one ``lines+markers`` trace per (run, metric), legend entry once per run.
    """
    rows = max(1, math.ceil(len(panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in panels], horizontal_spacing=0.07,
                        vertical_spacing=0.5 / (rows + 1))
    labels = list(dict.fromkeys(df["label"])) if len(df) else []
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
    dashes = ("solid", "dash", "dot", "dashdot")
    shown = set()
    for k, (metric, _) in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        sub = df[df["metric"] == metric]
        for r, label in enumerate(labels):
            g = sub[sub["label"] == label].sort_values("edits")
            if g.empty:
                continue
            fig.add_scatter(x=g["edits"], y=g["value"], mode="lines+markers", name=str(label), legendgroup=str(label),
                            showlegend=label not in shown,
                            line=dict(color=colours[r % len(colours)], dash=dashes[(r // len(colours)) % len(dashes)]),
                            marker=dict(size=5), row=row, col=col,
                            hovertemplate=f"{label}<br>%{{x}} edits: %{{y:.4g}}<extra></extra>")
            shown.add(label)
        vals = [v for v in sub["value"] if v == v and v > 0]
        if metric in log_y and vals and max(vals) > 5 * min(vals):
            fig.update_yaxes(type="log", row=row, col=col)
    fig.update_xaxes(title_text="edits", rangemode="tozero")
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), template="plotly_white",
                      height=height_per_row * rows + 80, margin=dict(l=55, r=15, t=60, b=40),
                      legend=dict(orientation="h", y=-0.12, font=dict(size=10)))
    return fig
