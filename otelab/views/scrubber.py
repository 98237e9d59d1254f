"""The scrubber: a slider over recorded stream runs, every editor's curves and retention up to the scrubbed edit."""
from __future__ import annotations

import html
from typing import Optional

from otelab.views.recorded import RECORDED, recorded_figure, recorded_series, retention_figure
from otelab.views.style import refresh

__all__ = ["Scrubber"]


class Scrubber:
    """A slider over recorded stream runs: every editor's curves up to the scrubbed edit, and its retention.

    Everything is read from the runs (:func:`otelab.workbench.stream.load_runs`): the curves are
    derived once (:func:`otelab.views.recorded.recorded_series`); moving the slider only cuts them
    and the retention matrices at that point (nothing is recomputed, no model is loaded).
    Checkpoint metrics (PPL, top-1 agreement, capability, sample efficacy) exist every few
    steps, ‖ΔW‖ after every step; the table shows each editor's latest value at or before the
    scrubbed point.

    Arguments:
        runs: ``{label: run}`` (``otelab-stream/1`` dicts).
        labels: the runs shown at first (default all).

    Attributes:
        slider: ``SelectionSlider`` over the recorded numbers of edits; prev_button, next_button: one position.
        editors: ``SelectMultiple`` of the runs shown.
        table: HTML table of the values at the scrubbed point.
        figures: ``{"curves", "retention"}`` -> ``go.FigureWidget``; widget: the whole ``VBox``.
    """

    def __init__(self, runs, labels=None):
        import ipywidgets as W

        from otelab.eval.report import Report
        from otelab.workbench.stream import stream_report

        if not runs:
            raise ValueError("Scrubber: no recorded runs given")
        self.runs = dict(runs)
        bad = [l for l in (labels or []) if l not in self.runs]
        if bad:
            raise ValueError(f"Scrubber: no run labelled {bad[0]!r}; runs: {', '.join(self.runs)}")
        self.series = recorded_series(Report.combine(*(stream_report(r, l) for l, r in self.runs.items())))
        positions = sorted({x for xs, *_ in self.series.values() for x in xs})
        if not positions:
            raise ValueError("Scrubber: the runs hold no recorded steps")
        self.x_max = positions[-1]
        style = {"description_width": "initial"}
        self.slider = W.SelectionSlider(options=positions, value=positions[-1], description="edits",
                                        continuous_update=False, style=style, layout=W.Layout(width="560px"))
        self.prev_button = W.Button(icon="step-backward", tooltip="one position back", layout=W.Layout(width="44px"))
        self.next_button = W.Button(icon="step-forward", tooltip="one position on", layout=W.Layout(width="44px"))
        self.editors = W.SelectMultiple(options=list(self.runs), value=tuple(labels or self.runs), description="editors",
                                        rows=min(8, len(self.runs)), style=style, layout=W.Layout(width="420px"))
        self.table = W.HTML()
        self.figures = {"curves": recorded_figure(self.series, self.labels, upto=self.upto, x_max=self.x_max,
                                                         widget=True),
                        "retention": retention_figure(self._shown_runs(), upto=self.upto, widget=True)}
        self.prev_button.on_click(lambda _b: self._move(-1))
        self.next_button.on_click(lambda _b: self._move(+1))
        self.slider.observe(lambda _c: self.redraw(), names="value")
        self.editors.observe(lambda _c: self.redraw(), names="value")
        self.widget = W.VBox([W.HBox([self.prev_button, self.slider, self.next_button]), self.editors, self.table,
                              self.figures["curves"], self.figures["retention"]])
        self.widget.add_class("otelab-scrubber")   # a CSS hook for the browser test
        self._table()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def upto(self) -> int:
        """The scrubbed number of edits."""
        return int(self.slider.value)

    @property
    def labels(self) -> list[str]:
        """The runs shown, in the runs' order."""
        return [l for l in self.runs if l in self.editors.value]

    def _shown_runs(self) -> dict:
        return {l: self.runs[l] for l in self.labels}

    def _move(self, by: int) -> None:
        opts = list(self.slider.options)
        i = min(max(opts.index(self.slider.value) + by, 0), len(opts) - 1)
        self.slider.value = opts[i]

    def values_at(self, upto: Optional[int] = None) -> dict[str, dict[str, float]]:
        """Per shown run, the latest value of every :data:`otelab.views.recorded.RECORDED` curve at or before ``upto``.

        Arguments:
            upto: edits (default the slider's).

        Returns:
            ``{label: {name: value, "efficacy_lo", "efficacy_hi", "checkpoint": edits of the latest
            checkpoint}}``; a curve with no point yet is left out.
        """
        upto = self.upto if upto is None else upto
        out = {}
        for label in self.labels:
            row = {}
            for name, _ in RECORDED:
                if (label, name) not in self.series:
                    continue
                xs, ys, lo, hi = self.series[(label, name)]
                i = max((j for j, x in enumerate(xs) if x <= upto), default=None)
                if i is None:
                    continue
                row[name] = ys[i]
                if lo is not None:
                    row.update(efficacy_lo=lo[i], efficacy_hi=hi[i])
                if name == "ppl":
                    row["checkpoint"] = xs[i]
            out[label] = row
        return out

    def _table(self) -> None:
        heads = ("editor", "checkpoint", "PPL", "top-1 agr.", "capability agr.", "capability margin",
                 "efficacy [95 % CI]", "‖ΔW‖")

        def cell(row, key, fmt):
            return fmt.format(row[key]) if key in row else "–"

        rows = []
        for label, r in self.values_at().items():
            eff = (f"{r['efficacy']:.3f} [{r['efficacy_lo']:.3f}, {r['efficacy_hi']:.3f}]"
                   if "efficacy" in r else "–")
            rows.append([label, cell(r, "checkpoint", "{:d}"), cell(r, "ppl", "{:.2f}"),
                         cell(r, "top1_agreement", "{:.3f}"), cell(r, "capability_agreement", "{:.3f}"),
                         cell(r, "capability_margin", "{:.3f}"), eff, cell(r, "dW", "{:.1f}")])
        td = '<td style="padding:2px 10px;text-align:right">'
        body = "".join("<tr>" + f'<td style="padding:2px 10px">{html.escape(r[0])}</td>'
                       + "".join(f"{td}{html.escape(c)}</td>" for c in r[1:]) + "</tr>" for r in rows)
        head = "".join(f'<th style="padding:2px 10px">{html.escape(h)}</th>' for h in heads)
        self.table.value = (f"<b>after {self.upto} edits</b> (each value: the latest recorded at or before it)"
                            f'<table style="border-collapse:collapse"><tr>{head}</tr>{body}</table>')

    def redraw(self) -> None:
        """Cut the curves and the retention matrices at the slider's point (in place) and refresh the table."""
        refresh(self.figures["curves"], recorded_figure(self.series, self.labels, upto=self.upto,
                                                                      x_max=self.x_max))
        refresh(self.figures["retention"], retention_figure(self._shown_runs(), upto=self.upto))
        self._table()
