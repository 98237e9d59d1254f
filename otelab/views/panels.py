"""Plotly panels of a sequential-editing run: pure functions ``Report -> go.Figure``, and their table.

The same builders draw the workbench's live panels (as ``go.FigureWidget``, updated
in place with :func:`otelab.views.style.refresh`) and the static figures of ``otelab demo``'s
HTML report. Both loop over :data:`PANELS`, one row per panel (key, title, builder, the inputs
and metrics it needs): adding a panel is one builder and one row. Every builder plots the
metrics it finds in the report and skips the rest; several labelled runs (``Report.combine``)
are overlaid: one colour per metric, one line style per run (solid, dashed, dotted, ...), as
:mod:`otelab.views.style` draws them.

Metric names (as the workbench writes them, see :data:`otelab.workbench.bench.METRICS`):
``efficacy_all``, ``paraphrase_all``, ``efficacy_latest``, ``paraphrase_latest``,
``specificity`` (plain ``efficacy`` / ``paraphrase`` are drawn when the ``_all``
variants are absent), ``glue/<task>/acc``, ``ppl``, ``top1_agreement``,
``latent_drift_edited``, ``latent_drift_unrelated``, ``delta_norm``.

Recorded stream runs have their own two figures in :mod:`otelab.views.recorded`
(:func:`recorded_figure`, :func:`retention_figure`), importable from here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import plotly.graph_objects as go

from otelab.views.recorded import RECORDED, recorded_figure, recorded_series, retention_figure
from otelab.views.style import (DASHES, OFFSET, PALETTE, SPACING, SYMBOLS, add_line, all_steps, colour_key,
                                empty_note, finish, plain_layout, refresh, report_series, run_order, run_styles,
                                run_suffix, session_key, step_layout, style_heading, subplots)

if TYPE_CHECKING:
    from otelab.eval.report import Report
    from otelab.workbench.bench import LatentProjection

__all__ = ["edit_metrics_figure", "capability_figure", "lm_figure", "latent_figure", "delta_figure", "toy_figure",
           "Panel", "PANELS", "build", "all_panels", "refresh", "run_order", "run_styles", "style_heading",
           "session_key", "chance_level", "EDIT_METRICS", "RECORDED", "recorded_series", "recorded_figure",
           "retention_figure", "DASHES", "PALETTE", "OFFSET", "SPACING"]

EDIT_METRICS = (
    ("efficacy_all", "efficacy (all edits)", "#1f77b4"),
    ("paraphrase_all", "paraphrase (all edits)", "#2ca02c"),
    ("efficacy_latest", "efficacy (latest batch)", "#9467bd"),
    ("paraphrase_latest", "paraphrase (latest batch)", "#8c564b"),
    ("specificity", "specificity", "#d62728"),
)
_FALLBACK = {"efficacy_all": "efficacy", "paraphrase_all": "paraphrase"}
PPL_SPAN = 0.05      # the perplexity axis shows at least ±5 % of the unedited level


def edit_metrics_figure(report: "Report", *, widget: bool = False, metrics: Optional[Sequence] = None,
                        order: Optional[Sequence] = None):
    """Panel 1: efficacy and paraphrase (all edits so far and latest batch) and specificity vs step.

    Arguments:
        report: one run or several (``Report.combine``).
        widget: return a ``go.FigureWidget``.
        metrics: ``(name, key text, colour)`` triples; default :data:`EDIT_METRICS`.
        order: the runs in session order (:func:`run_order`): A solid, B dashed.

    Returns:
        The figure: one ``lines+markers`` trace per (run, metric), named ``"<key text> · <run>"``,
        and a two-line key under the plot (sessions; metric colours).
    """
    series, labels = report_series(report), run_order(report, order)
    styles, used = run_styles(labels), []
    fig = go.Figure()
    for label in labels:
        for name, text, colour in (metrics or EDIT_METRICS):
            key = (label, name)
            if key not in series and name in _FALLBACK:
                key = (label, _FALLBACK[name])
            if key not in series:
                continue
            xs, ys = series[key]
            add_line(fig, xs, ys, text + run_suffix(label, labels), colour, styles[label])
            if (text, colour) not in used:
                used.append((text, colour))
    step_layout(fig, "Edit metrics vs step", [session_key(labels), colour_key(used)] if fig.data else [], "score",
            steps=all_steps(series))
    fig.update_yaxes(range=[-0.05, 1.05])
    if not fig.data:
        empty_note(fig, "no edit metrics yet", x=0.5, y=0.5, xref="paper", yref="paper")
    return finish(fig, widget)


def chance_level(task: str) -> float:
    """Accuracy of guessing: 1/4 for MMLU (four options), 1/2 for the binary GLUE-style tasks."""
    return 0.25 if task == "mmlu" else 0.5


def capability_figure(report: "Report", *, widget: bool = False, stat: str = "acc", order: Optional[Sequence] = None,
                      flat: Sequence[str] = ()):
    """Panel 2: general capability per task (``glue/<task>/<stat>``) vs step, chance level dotted.

    When the report holds ``glue/<task>/agreement`` (share of items answered as the unedited
    model answered; :func:`otelab.eval.metrics.capability_scores`) a second plot shows it, with the
    answer margin (``glue/<task>/margin``) on hover: on a small model accuracy often sits at
    chance and cannot move, while agreement and margin do.

    Arguments:
        report: one run or several.
        widget: return a ``go.FigureWidget``.
        stat: ``acc`` (default), ``f1`` or ``mcc``.
        order: the runs in session order (:func:`run_order`).
        flat: tasks whose accuracy cannot move (the unedited model gives every item one answer,
            :meth:`otelab.workbench.bench.Workbench.flat_tasks`); said in a line under the plot.

    Returns:
        The figure: one trace per (run, task) and plot; dotted chance lines for ``acc``.
    """
    series, labels = report_series(report), run_order(report, order)
    styles = run_styles(labels)
    tasks = [m.split("/")[1] for m in report.metrics if m.startswith("glue/") and m.endswith("/" + stat)]
    agree = [t for t in tasks if f"glue/{t}/agreement" in report.metrics]
    fig = subplots((stat if stat != "acc" else "accuracy", "agreement with unedited")) if agree else go.Figure()
    left = dict(row=1, col=1) if agree else {}
    colours = {task: PALETTE[t % len(PALETTE)] for t, task in enumerate(tasks)}
    for label in labels:
        for task in tasks:
            key = (label, f"glue/{task}/{stat}")
            if key in series:
                add_line(fig, *series[key], task + run_suffix(label, labels), colours[task], styles[label], **left)
            key = (label, f"glue/{task}/agreement")
            if task in agree and key in series:
                xs, ys = series[key]
                margin = dict(zip(*series.get((label, f"glue/{task}/margin"), ([], []))))
                add_line(fig, xs, ys, f"{task} agreement" + run_suffix(label, labels), colours[task], styles[label],
                          customdata=[[x, margin.get(x, float("nan"))] for x in xs],
                          hover=", margin %{customdata[1]:.2f}", row=1, col=2)
    key = [session_key(labels), colour_key([(t, colours[t]) for t in tasks])] if fig.data else []
    flat = [t for t in flat if t in tasks]
    if flat:
        key.append(f"accuracy cannot move on {', '.join(flat)} (unedited model: one answer for every item)")
    step_layout(fig, f"General capability ({stat}) vs step", key, steps=all_steps(series))
    fig.update_yaxes(range=[-0.05, 1.05])
    if agree:
        fig.update_yaxes(title_text="share of items", row=1, col=1)
    else:
        fig.update_yaxes(title_text=stat)
    if stat == "acc":
        for level in sorted({chance_level(t) for t in tasks}):
            which = "MMLU" if level == 0.25 else "2 labels"
            fig.add_hline(y=level, line=dict(color="#888", dash="dot", width=1), annotation_text=f"chance ({which})",
                          annotation_position="bottom right", annotation_font=dict(size=10, color="#888"), **left)
    if not fig.data:
        empty_note(fig, "no general-capability scores", x=0.5, y=0.5, xref="paper", yref="paper")
    return finish(fig, widget)


def _ppl_range(values: Sequence[float], unedited: float) -> list[float]:
    """A perplexity axis that shows at least ±:data:`PPL_SPAN` of the unedited level (noise must look small)."""
    lo = min(min(values, default=unedited), unedited * (1 - PPL_SPAN))
    hi = max(max(values, default=unedited), unedited * (1 + PPL_SPAN))
    pad = 0.05 * (hi - lo)
    return [lo - pad, hi + pad]


def lm_figure(report: "Report", *, widget: bool = False, order: Optional[Sequence] = None):
    """Panel 3: perplexity on held-out text (left) and top-1 agreement with the unedited model (right).

    The unedited level is a dotted line in both; the perplexity axis spans at least ±5 % of it.

    Arguments:
        report: one run or several.
        widget: return a ``go.FigureWidget``.
        order: the runs in session order (:func:`run_order`).
        umap_note: what the empty box says without a projection (when one comes, or that none will;
            :meth:`otelab.workbench.bench.Workbench.umap_note`); default: at the next slow evaluation.
    """
    series, labels = report_series(report), run_order(report, order)
    styles = run_styles(labels)
    fig = subplots(("perplexity", "top-1 agreement"))
    for label in labels:
        for col, (name, colour) in enumerate((("ppl", "#ff7f0e"), ("top1_agreement", "#17becf")), start=1):
            if (label, name) in series:
                add_line(fig, *series[(label, name)], name + run_suffix(label, labels), colour, styles[label],
                          row=1, col=col)
    step_layout(fig, "Language-model drift vs step", [session_key(labels)] if fig.data else [], steps=all_steps(series))
    fig.update_yaxes(title_text="perplexity (held-out text)", row=1, col=1)
    fig.update_yaxes(title_text="share of tokens", range=[-0.05, 1.05], row=1, col=2)
    unedited = next((ys[0] for (l, m), (_, ys) in series.items() if m == "ppl_unedited"), None)
    if unedited is None:   # step 0 is the unedited model
        unedited = next((ys[0] for (l, m), (xs, ys) in series.items() if m == "ppl" and xs[0] == 0), None)
    line = dict(color="#888", dash="dot", width=1)
    if unedited is not None:
        ppl = [y for (l, m), (_, ys) in series.items() if m == "ppl" for y in ys]
        fig.add_hline(y=unedited, line=line, annotation_text="unedited", annotation_position="top right",
                      annotation_font=dict(size=10, color="#888"), row=1, col=1)
        fig.update_yaxes(range=_ppl_range(ppl, unedited), row=1, col=1)
    if any(m == "top1_agreement" for _, m in series):
        fig.add_hline(y=1.0, line=line, row=1, col=2)
    if not fig.data:
        empty_note(fig, "no held-out text measured", x=0.5, y=0.5, xref="paper", yref="paper")
    return finish(fig, widget)


def _umap_scatter(fig, projection, labels: list, styles: dict) -> str:
    """The UMAP points (unedited grey, each session in its colour; ★ edited, ○ unrelated) in the left plot.

    Returns:
        The plot's colour key.
    """
    edited = [bool(e) for e in projection.edited]
    after = [l for l in labels if l in projection.after] + [l for l in projection.after if l not in labels]
    for kind, sel, size in (("edited", True, 11), ("unrelated", False, 7)):
        idx = [i for i, e in enumerate(edited) if e == sel]
        if not idx:
            continue
        fig.add_scatter(x=[float(projection.before[i][0]) for i in idx],
                        y=[float(projection.before[i][1]) for i in idx], mode="markers",
                        name=f"before · {kind}", showlegend=False,
                        text=[projection.names[i] for i in idx], hovertemplate="%{text}<extra>unedited</extra>",
                        marker=dict(color="#7f7f7f", size=size, symbol="star" if sel else "circle-open"),
                        row=1, col=1)
        for r, label in enumerate(after):
            pts = projection.after[label]
            fig.add_scatter(x=[float(pts[i][0]) for i in idx], y=[float(pts[i][1]) for i in idx],
                            mode="markers", name=f"after · {kind}" + run_suffix(label, after), showlegend=False,
                            text=[projection.names[i] for i in idx],
                            hovertemplate=f"%{{text}}<extra>after · {label}</extra>",
                            marker=dict(color=PALETTE[(r + 1) % len(PALETTE)], size=size,
                                        symbol="star" if sel else SYMBOLS[r % len(SYMBOLS)],
                                        opacity=0.8), row=1, col=1)
    return ("UMAP: " + colour_key([("unedited", "#7f7f7f")] + [
        (f"after {styles[l]['letter'] if l in styles else l}", PALETTE[(r + 1) % len(PALETTE)])
        for r, l in enumerate(after)]) + "   ★ edited, ○ unrelated subjects")


def latent_figure(report: "Report", projection: Optional["LatentProjection"] = None, *, widget: bool = False,
                  order: Optional[Sequence] = None, umap_note: Optional[str] = None):
    """Panel 4: UMAP of subject hidden states before/after (left) and projection-free drift vs step (right).

    Arguments:
        report: one run or several; drift is ``latent_drift_edited`` / ``latent_drift_unrelated``
            (mean 1 − cos between the unedited and edited states).
        projection: a :class:`otelab.workbench.bench.LatentProjection` (or anything with ``step``,
            ``before [n, 2]``, ``after {label: [n, 2]}``, ``edited [n]``, ``names [n]``); None:
            the left plot is an empty box with ``umap_note``.
        widget: return a ``go.FigureWidget``.
        order: the runs in session order (:func:`run_order`).
    """
    series, labels = report_series(report), run_order(report, order)
    styles = run_styles(labels)
    fig = subplots(("UMAP" + (f", step {projection.step}" if projection is not None else ""),
                     "latent drift 1 − cos"))
    key = []
    if projection is not None:
        key.append(_umap_scatter(fig, projection, labels, styles))
    else:   # an empty box with the note in its middle, no axes to sit on
        empty_note(fig, umap_note or "the UMAP appears at<br>the next slow evaluation", x=0.5, y=0.5, xref="x domain",
                    yref="y domain")
    drift = (("latent_drift_edited", "edited", "#d62728"), ("latent_drift_unrelated", "unrelated", "#1f77b4"))
    for label in labels:
        for name, text, colour in drift:
            if (label, name) in series:
                add_line(fig, *series[(label, name)], f"drift · {text}" + run_suffix(label, labels), colour,
                          styles[label], row=1, col=2)
    if any((l, m) in series for l in labels for m, _, _ in drift):
        key[:0] = [session_key(labels)]
        key.append("drift: " + colour_key([(f"{t} subjects", c) for _, t, c in drift]))
    step_layout(fig, "Latent drift", key, steps=all_steps(series))
    fig.update_yaxes(title_text="1 − cos vs unedited", row=1, col=2)
    if projection is not None:
        fig.update_xaxes(title_text="UMAP 1", rangemode="normal", tick0=None, dtick=None, row=1, col=1)
        fig.update_yaxes(title_text="UMAP 2", row=1, col=1)
    else:
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, row=1, col=1)
    return finish(fig, widget)


def delta_figure(report: "Report", *, widget: bool = False):
    """Panel 5: ‖W − W0‖ (summed over the edited layers) vs step, one line per run (in the report's order).

    Arguments:
        report: one run or several, with ``delta_norm``.
        widget: return a ``go.FigureWidget``.
    """
    fig = go.Figure()
    df = report.to_frame()
    df = df[df["metric"] == "delta_norm"]
    for i, (label, g) in enumerate(df.groupby("label", sort=False)):
        fig.add_scatter(x=g["step"], y=g["value"], mode="lines+markers", name=str(label),
                        line=dict(color=PALETTE[i % len(PALETTE)], dash=DASHES[i % len(DASHES)]))
    plain_layout(fig, "Total weight change ‖W − W0‖_F (sum over edited layers)", xaxis_title="step",
                 yaxis_title="‖W − W0‖_F")
    return finish(fig, widget)


def toy_figure(toy: dict):
    """The toy collapse of ``otelab verify``: preserved error of Eq. 3 vs Eq. 4 (as printed) vs step.

    Arguments:
        toy: ``verify(...)["toy_collapse"]`` (``steps``, ``nullspace_at_steps``, ``full_at_steps``).
    """
    fig = go.Figure()
    fig.add_scatter(x=toy["steps"], y=toy["nullspace_at_steps"], mode="lines+markers",
                    name="Eq. 3 (memorize-nullspace)", line=dict(color="#d62728"))
    fig.add_scatter(x=toy["steps"], y=toy["full_at_steps"], mode="lines+markers",
                    name="Eq. 4 as printed (memorize-full)", line=dict(color="#1f77b4"))
    plain_layout(fig, "Toy collapse: preserved error ‖W_t K0 − V0‖/‖V0‖", height=320, xaxis_title="step",
                 yaxis_title="preserved error")
    return fig


# ----------------------------------------------------------------------------- the table of panels

@dataclass(frozen=True)
class Panel:
    """One row of :data:`PANELS`.

    Attributes:
        key: the figure's name (``WorkbenchUI.figures[key]``, :func:`all_panels`).
        title: the HTML report's heading after the pair's name (``"<pair>: <title>"``).
        builder: ``builder(report, *, widget, **inputs) -> go.Figure``.
        needs: the inputs the builder takes besides the report, by keyword: ``order`` (the runs in
            session order), ``projection`` (a :class:`otelab.workbench.bench.LatentProjection` or None),
            ``flat`` (tasks whose accuracy cannot move), ``umap_note`` (the latent panel's text without a UMAP).
        metrics: the report metrics it draws (``<task>``: any probe task).
        caption: the HTML report's sentence under it, after the pair's line.
        live: one of the workbench's live panels (else only in the HTML report).
    """

    key: str
    title: str
    builder: Callable[..., go.Figure]
    needs: tuple[str, ...]
    metrics: tuple[str, ...]
    caption: str = ""
    live: bool = True


# In display order: the workbench shows the live ones two per row, the HTML report all of them per pair.
PANELS = (
    Panel("edit", "edit metrics", edit_metrics_figure, ("order",),
          tuple(m for m, _, _ in EDIT_METRICS)),
    Panel("capability", "general capability", capability_figure, ("order", "flat"),
          ("glue/<task>/acc", "glue/<task>/agreement", "glue/<task>/margin"),
          caption="Probe accuracy before editing (step 0) and after the last step."),
    Panel("lm", "language-model drift", lm_figure, ("order",), ("ppl", "ppl_unedited", "top1_agreement")),
    Panel("latent", "latent drift", latent_figure, ("order", "projection", "umap_note"),
          ("latent_drift_edited", "latent_drift_unrelated"),
          caption="States at the output of the last edited block, subject's last token."),
    Panel("delta", "weight change", delta_figure, (), ("delta_norm",), live=False),
)


def build(panel: Panel, report: "Report", *, widget: bool = False, **inputs) -> go.Figure:
    """One panel of ``report``: its builder with the inputs it needs (the others are ignored).

    Arguments:
        panel: a row of :data:`PANELS`.
        report: one run or several.
        widget: return a ``go.FigureWidget``.
        **inputs: ``order``, ``projection``, ``flat`` (see :class:`Panel`); a missing one takes the
            builder's default.

    Returns:
        The figure.
    """
    return panel.builder(report, widget=widget, **{k: inputs[k] for k in panel.needs if k in inputs})


def all_panels(report: "Report", projection: Optional["LatentProjection"] = None,
               order: Optional[Sequence] = None) -> dict[str, go.Figure]:
    """The live panels as static figures, keyed ``edit``, ``capability``, ``lm``, ``latent`` (:data:`PANELS`).

    Arguments:
        report, projection: see the builders.
        order: the runs in session order (:func:`run_order`): A solid, B dashed.
    """
    return {p.key: build(p, report, projection=projection, order=order) for p in PANELS if p.live}
