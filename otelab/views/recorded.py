"""Figures of recorded stream runs (:func:`otelab.workbench.stream.stream_report`, x = edits so far).

:func:`recorded_figure` draws the curves of :data:`RECORDED` (cut at a scrubbed number of edits)
over :func:`recorded_series`; :func:`retention_figure` draws each run's retention matrix as a
heatmap, batch × checkpoint. The :class:`otelab.views.scrubber.Scrubber` moves both.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from otelab.views.style import DASHES, HEIGHT, PALETTE, empty_note, finish, plain_layout, report_series

if TYPE_CHECKING:
    from otelab.eval.report import Report

__all__ = ["RECORDED", "recorded_series", "recorded_figure", "retention_figure"]

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
        report: :func:`otelab.workbench.stream.stream_report` of one run, or several combined.

    Returns:
        ``{(label, name): (edits, values, lo, hi)}``: ``lo`` / ``hi`` the bootstrap interval
        for ``efficacy``, else None; ``capability_*`` the mean over tasks of
        ``glue/<task>/agreement`` / ``margin``; ``dW`` the Frobenius norm over all edited
        layers, √(Σ_l ‖ΔW_l‖²), after every step (0 before the first).
    """
    raw, out = report_series(report), {}
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


def _recorded_layout(fig: go.Figure, title: str) -> None:
    """The recorded runs' layout: a legend of the runs, x = edits (set by the caller)."""
    plain_layout(fig, title, legend=dict(font=dict(size=10)))
    fig.update_xaxes(rangemode="tozero")


def _colour(r: int) -> dict:
    """Run ``r``'s line: a palette colour, then the next dash once the palette wraps."""
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
    _recorded_layout(fig, "Recorded runs" + (f" up to {upto} edits" if upto is not None else ""))
    fig.update_layout(height=2 * HEIGHT, legend=dict(font=dict(size=10), orientation="h", y=-0.08))
    fig.update_xaxes(title_text="edits", range=[-0.02 * right, 1.03 * right] if right else None)
    for k in (1, 2, 4):   # shares: fixed [0, 1] scale
        fig.update_yaxes(range=[-0.03, 1.03], row=k // 3 + 1, col=k % 3 + 1)
    if upto is not None:
        fig.add_vline(x=upto, line=dict(color="#888", dash="dot", width=1))
    if not fig.data:
        empty_note(fig, "no recorded runs", x=0.5, y=0.5, xref="paper", yref="paper")
    return finish(fig, widget)


def retention_figure(runs: Mapping[str, Mapping[str, Any]], *, upto: Optional[int] = None, cols: int = 3,
                     widget: bool = False):
    """Each run's retention matrix: the share of every batch's edits still written in, at every checkpoint.

    A heatmap of ``run["retention"]["share"]`` per run (rows: batch 1 at the top; columns:
    checkpoints, by edits so far; blank: not yet edited). The colour scale (0 to 1) is shared.

    Arguments:
        runs: ``{label: run}`` (``otelab-stream/1`` dicts, e.g. :func:`otelab.workbench.stream.load_runs`).
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
    _recorded_layout(fig, "Retention: share of each batch still written in" +
            (f" (up to {upto} edits)" if upto is not None else ""))
    fig.update_xaxes(title_text="edits", rangemode="normal", type="category")
    fig.update_layout(height=max(HEIGHT, 300 * rows), coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1,
                                                                      colorbar=dict(title="retained", len=0.8)))
    if not labels:
        empty_note(fig, "no recorded runs", x=0.5, y=0.5, xref="paper", yref="paper")
    return finish(fig, widget)
