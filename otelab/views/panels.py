"""Plotly panels of a sequential-editing run: pure functions ``Report -> go.Figure``.

The same builders draw the workbench's live panels (as ``go.FigureWidget``, updated
in place with :func:`refresh`) and the static figures of ``otelab demo``'s HTML
report. Every builder plots the metrics it finds in the report and skips the rest;
several labelled runs (``Report.combine``) are overlaid: one colour per metric,
one line style per run (solid, dashed, dotted, ...).

Metric names (as the workbench writes them, see :data:`otelab.workbench.bench.METRICS`):
``efficacy_all``, ``paraphrase_all``, ``efficacy_latest``, ``paraphrase_latest``,
``specificity`` (plain ``efficacy`` / ``paraphrase`` are drawn when the ``_all``
variants are absent), ``glue/<task>/acc``, ``ppl``, ``top1_agreement``,
``latent_drift_edited``, ``latent_drift_unrelated``.

Recorded stream runs (:func:`otelab.workbench.stream.stream_report`, x = edits so far) have their own
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
    from otelab.eval.report import Report
    from otelab.workbench.bench import LatentProjection

__all__ = ["edit_metrics_figure", "capability_figure", "lm_figure", "latent_figure", "all_panels", "refresh",
           "run_order", "run_styles", "style_heading", "session_key", "chance_level", "EDIT_METRICS", "RECORDED", "recorded_series", "recorded_figure", "retention_figure"]

EDIT_METRICS = (
    ("efficacy_all", "efficacy (all edits)", "#1f77b4"),
    ("paraphrase_all", "paraphrase (all edits)", "#2ca02c"),
    ("efficacy_latest", "efficacy (latest batch)", "#9467bd"),
    ("paraphrase_latest", "paraphrase (latest batch)", "#8c564b"),
    ("specificity", "specificity", "#d62728"),
)
_FALLBACK = {"efficacy_all": "efficacy", "paraphrase_all": "paraphrase"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
DASH_WORDS = {"solid": "solid", "dash": "dashed", "dot": "dotted", "dashdot": "dash-dotted", "longdash": "long-dashed"}
DASH_GLYPHS = {"solid": "——", "dash": "- -", "dot": "···", "dashdot": "-·-", "longdash": "— —"}
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
HEIGHT = 340
OFFSET = 0.12        # steps: session B's markers sit this far right of A's, so equal curves stay visible
PPL_SPAN = 0.05      # the perplexity axis shows at least ±5 % of the unedited level
SPACING = 0.2        # between side-by-side plots: the right one's tick labels and y title fit
SUBTITLE_FONT = 12
KEY_FONT = 11
KEY_TOP = 48         # px under the plot area where the key starts (below the x axis title)
KEY_LINE = 15        # px per key line


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


def _colour_key(items: Sequence[tuple[str, str]]) -> str:
    """``■ name`` per ``(name, colour)``, each square in its colour (plotly annotation HTML)."""
    return "   ".join(f'<span style="color:{c}">■</span> {t}' for t, c in items)


def _run_name(label, labels) -> str:
    return "" if len(labels) <= 1 or label is None else f" · {label}"


def _add_line(fig: go.Figure, xs, ys, name: str, colour: str, style: dict, customdata=None, hover: str = "",
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


def _layout(fig: go.Figure, title: str, key: Sequence[str] = (), y_title: str = "", steps: Sequence[int] = ()) -> None:
    """Title, size, integer step ticks and the key lines under the plot (no legend: the key replaces it)."""
    key = [k for k in key if k]
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), template="plotly_white", height=HEIGHT,
                      margin=dict(l=60, r=15, t=45, b=KEY_TOP + KEY_LINE * len(key)), showlegend=False)
    fig.update_xaxes(title_text="step", rangemode="tozero", tick0=0, dtick=_dtick(steps))
    if y_title:
        fig.update_yaxes(title_text=y_title)
    for i, line in enumerate(key):   # under the axis title, in pixels (the plot height varies, the text does not)
        fig.add_annotation(text=line, showarrow=False, xref="paper", yref="paper", x=0, xanchor="left", y=0,
                           yanchor="top", yshift=-(KEY_TOP - 6 + KEY_LINE * i), font=dict(size=KEY_FONT, color="#333"),
                           align="left")


def _recorded_layout(fig: go.Figure, title: str) -> None:
    """The recorded runs' layout: a legend of the runs, x = edits (set by the caller)."""
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)), template="plotly_white", height=HEIGHT,
                      margin=dict(l=55, r=15, t=45, b=40), legend=dict(font=dict(size=10)))
    fig.update_xaxes(rangemode="tozero")


def _subplots(titles: Sequence[str]) -> go.Figure:
    """1 × n subplots with short, small titles and room between them for the right plot's y axis."""
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=list(titles), horizontal_spacing=SPACING)
    fig.update_annotations(font_size=SUBTITLE_FONT)
    return fig


def _empty_note(fig: go.Figure, text: str, **where) -> None:
    fig.add_annotation(text=text, showarrow=False, font=dict(color="#888"), **where)


def _finish(fig: go.Figure, widget: bool):
    return go.FigureWidget(fig) if widget else fig


def _all_steps(series: dict) -> list[int]:
    return [x for xs, _ in series.values() for x in xs]


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
    series, labels = _series(report), run_order(report, order)
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
            _add_line(fig, xs, ys, text + _run_name(label, labels), colour, styles[label])
            if (text, colour) not in used:
                used.append((text, colour))
    _layout(fig, "Edit metrics vs step", [session_key(labels), _colour_key(used)] if fig.data else [], "score",
            steps=_all_steps(series))
    fig.update_yaxes(range=[-0.05, 1.05])
    if not fig.data:
        _empty_note(fig, "no edit metrics yet", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


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
    series, labels = _series(report), run_order(report, order)
    styles = run_styles(labels)
    tasks = [m.split("/")[1] for m in report.metrics if m.startswith("glue/") and m.endswith("/" + stat)]
    agree = [t for t in tasks if f"glue/{t}/agreement" in report.metrics]
    fig = _subplots((stat if stat != "acc" else "accuracy", "agreement with unedited")) if agree else go.Figure()
    left = dict(row=1, col=1) if agree else {}
    colours = {task: PALETTE[t % len(PALETTE)] for t, task in enumerate(tasks)}
    for label in labels:
        for task in tasks:
            key = (label, f"glue/{task}/{stat}")
            if key in series:
                _add_line(fig, *series[key], task + _run_name(label, labels), colours[task], styles[label], **left)
            key = (label, f"glue/{task}/agreement")
            if task in agree and key in series:
                xs, ys = series[key]
                margin = dict(zip(*series.get((label, f"glue/{task}/margin"), ([], []))))
                _add_line(fig, xs, ys, f"{task} agreement" + _run_name(label, labels), colours[task], styles[label],
                          customdata=[[x, margin.get(x, float("nan"))] for x in xs],
                          hover=", margin %{customdata[1]:.2f}", row=1, col=2)
    key = [session_key(labels), _colour_key([(t, colours[t]) for t in tasks])] if fig.data else []
    flat = [t for t in flat if t in tasks]
    if flat:
        key.append(f"accuracy cannot move on {', '.join(flat)} (unedited model: one answer for every item)")
    _layout(fig, f"General capability ({stat}) vs step", key, steps=_all_steps(series))
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
        _empty_note(fig, "no general-capability scores", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


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
    """
    series, labels = _series(report), run_order(report, order)
    styles = run_styles(labels)
    fig = _subplots(("perplexity", "top-1 agreement"))
    for label in labels:
        for col, (name, colour) in enumerate((("ppl", "#ff7f0e"), ("top1_agreement", "#17becf")), start=1):
            if (label, name) in series:
                _add_line(fig, *series[(label, name)], name + _run_name(label, labels), colour, styles[label],
                          row=1, col=col)
    _layout(fig, "Language-model drift vs step", [session_key(labels)] if fig.data else [], steps=_all_steps(series))
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
        _empty_note(fig, "no held-out text measured", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)


def latent_figure(report: "Report", projection: Optional["LatentProjection"] = None, *, widget: bool = False,
                  order: Optional[Sequence] = None):
    """Panel 4: UMAP of subject hidden states before/after (left) and projection-free drift vs step (right).

    Arguments:
        report: one run or several; drift is ``latent_drift_edited`` / ``latent_drift_unrelated``
            (mean 1 − cos between the unedited and edited states).
        projection: a :class:`otelab.workbench.bench.LatentProjection` (or anything with ``step``,
            ``before [n, 2]``, ``after {label: [n, 2]}``, ``edited [n]``, ``names [n]``); None:
            the left plot is an empty box saying when the UMAP appears.
        widget: return a ``go.FigureWidget``.
        order: the runs in session order (:func:`run_order`).
    """
    series, labels = _series(report), run_order(report, order)
    styles = run_styles(labels)
    fig = _subplots(("UMAP" + (f", step {projection.step}" if projection is not None else ""),
                     "latent drift 1 − cos"))
    key = []
    if projection is not None:
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
                                mode="markers", name=f"after · {kind}" + _run_name(label, after), showlegend=False,
                                text=[projection.names[i] for i in idx],
                                hovertemplate=f"%{{text}}<extra>after · {label}</extra>",
                                marker=dict(color=PALETTE[(r + 1) % len(PALETTE)], size=size,
                                            symbol="star" if sel else SYMBOLS[r % len(SYMBOLS)],
                                            opacity=0.8), row=1, col=1)
        key.append("UMAP: " + _colour_key([("unedited", "#7f7f7f")] + [
            (f"after {styles[l]['letter'] if l in styles else l}", PALETTE[(r + 1) % len(PALETTE)])
            for r, l in enumerate(after)]) + "   ★ edited, ○ unrelated subjects")
    else:   # an empty box with the note in its middle, no axes to sit on
        _empty_note(fig, "the UMAP appears at<br>the next slow evaluation", x=0.5, y=0.5, xref="x domain",
                    yref="y domain")
    drift = (("latent_drift_edited", "edited", "#d62728"), ("latent_drift_unrelated", "unrelated", "#1f77b4"))
    for label in labels:
        for name, text, colour in drift:
            if (label, name) in series:
                _add_line(fig, *series[(label, name)], f"drift · {text}" + _run_name(label, labels), colour,
                          styles[label], row=1, col=2)
    if any((l, m) in series for l in labels for m, _, _ in drift):
        key[:0] = [session_key(labels)]
        key.append("drift: " + _colour_key([(f"{t} subjects", c) for _, t, c in drift]))
    _layout(fig, "Latent drift", key, steps=_all_steps(series))
    fig.update_yaxes(title_text="1 − cos vs unedited", row=1, col=2)
    if projection is not None:
        fig.update_xaxes(title_text="UMAP 1", rangemode="normal", tick0=None, dtick=None, row=1, col=1)
        fig.update_yaxes(title_text="UMAP 2", row=1, col=1)
    else:
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, row=1, col=1)
    return _finish(fig, widget)


def all_panels(report: "Report", projection: Optional["LatentProjection"] = None,
               order: Optional[Sequence] = None) -> dict[str, go.Figure]:
    """The four panels as static figures, keyed ``edit``, ``capability``, ``lm``, ``latent`` (for HTML reports).

    Arguments:
        report, projection: see the builders.
        order: the runs in session order (:func:`run_order`): A solid, B dashed.
    """
    return {"edit": edit_metrics_figure(report, order=order), "capability": capability_figure(report, order=order),
            "lm": lm_figure(report, order=order), "latent": latent_figure(report, projection, order=order)}


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
        report: :func:`otelab.workbench.stream.stream_report` of one run, or several combined.

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
    _recorded_layout(fig, "Recorded runs" + (f" up to {upto} edits" if upto is not None else ""))
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
        _empty_note(fig, "no recorded runs", x=0.5, y=0.5, xref="paper", yref="paper")
    return _finish(fig, widget)
