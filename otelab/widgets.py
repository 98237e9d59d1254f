"""The Jupyter workbench: buttons and live panels over :class:`otelab.workbench.Workbench`.

(:class:`Scrubber`, at the end, is the other teaching surface: a slider over recorded stream runs.)

:class:`WorkbenchUI` holds the controls (editor, mode, an optional second session
to compare with, batch size, k, how often the slow metrics run), the buttons
(Step, Step ×k, Undo, Reset), a progress bar and a status line, the four live
panels of :mod:`otelab.panels` (``go.FigureWidget``, updated in place) and a
probe box (a prompt, and the greedy continuation of the unedited and of each
current model side by side).

All logic is in the workbench; the callbacks only call it and redraw, so
everything can be driven headlessly: ``ui.step_button.click()``, set
``ui.method.value``, then look at ``ui.workbench`` and ``ui.figures["edit"].data``.
A step runs in the kernel's thread: while it computes, the buttons are disabled
and the progress bar and status line say which phase is running.
"""
from __future__ import annotations

import html
import traceback
from typing import Optional

from otelab import panels
from otelab.engine import METHODS
from otelab.workbench import METHOD_NAMES, Workbench, WorkbenchError, valid_modes

__all__ = ["WorkbenchUI", "workbench", "Scrubber"]

NO_COMPARE = "(none)"


class WorkbenchUI:
    """Widgets over a :class:`Workbench`. Display it with ``display(ui)`` or as a cell's last value.

    Arguments:
        wb: the workbench.
        probe_prompt: the probe box's starting prompt (default: the first record's edit prompt).
        max_new_tokens: tokens generated in the probe box.

    Attributes:
        method, mode, compare_method, compare_mode, batch_size, k, eval_every: the controls.
        step_button, step_k_button, undo_button, reset_button: the buttons.
        progress, status: the progress bar and the status line (HTML).
        figures: ``{"edit", "capability", "lm", "latent"}`` -> ``go.FigureWidget``.
        probe, probe_button, probe_output: the probe box.
        widget: the whole ``ipywidgets.VBox``.
    """

    def __init__(self, wb: Workbench, probe_prompt: Optional[str] = None, max_new_tokens: int = 20):
        import ipywidgets as W

        self.workbench = wb
        self.max_new_tokens = int(max_new_tokens)
        self._busy = False
        self._quiet = False   # True while the controls are set programmatically
        a = wb.tracks[0]
        b = wb.tracks[1] if len(wb.tracks) > 1 else None
        style = dict(style={"description_width": "initial"})
        methods = [(METHOD_NAMES[m], m) for m in METHODS]
        preset = wb.loaded.preset
        self.method = W.Dropdown(options=methods, value=a.method, description="editor", **style,
                                 layout=W.Layout(width="190px"))
        self.mode = W.Dropdown(options=valid_modes(a.method, preset), value=a.mode, description="mode", **style,
                               layout=W.Layout(width="230px"))
        self.compare_method = W.Dropdown(options=[(NO_COMPARE, NO_COMPARE)] + methods,
                                         value=b.method if b else NO_COMPARE, description="side by side with",
                                         **style, layout=W.Layout(width="260px"))
        self.compare_mode = W.Dropdown(options=valid_modes(b.method, preset) if b else ["aligned"],
                                       value=b.mode if b else "aligned", description="mode", disabled=b is None,
                                       **style, layout=W.Layout(width="230px"))
        self.batch_size = W.BoundedIntText(value=wb.batch_size, min=1, max=len(wb.data.stream),
                                           description="batch size", **style, layout=W.Layout(width="150px"))
        self.k = W.BoundedIntText(value=2, min=1, max=1000, description="k", **style, layout=W.Layout(width="90px"))
        self.eval_every = W.BoundedIntText(value=wb.eval_every, min=0, max=1000,
                                           description="capability & UMAP every", **style,
                                           layout=W.Layout(width="230px"),
                                           tooltip="steps between the slow metrics (0: never)")
        self.step_button = W.Button(description="Step", button_style="primary", icon="step-forward",
                                    tooltip="edit the next batch of the stream")
        self.step_k_button = W.Button(description="Step ×k", icon="forward", tooltip="k steps, panels after each")
        self.undo_button = W.Button(description="Undo", icon="undo", tooltip="revert the last step")
        self.reset_button = W.Button(description="Reset", icon="refresh", button_style="warning",
                                     tooltip="back to the unedited model")
        self.buttons = [self.step_button, self.step_k_button, self.undo_button, self.reset_button]
        self.progress = W.IntProgress(value=0, min=0, max=1, description="idle",
                                      style={"description_width": "initial", "bar_color": "#1f77b4"},
                                      layout=W.Layout(width="420px"))
        self.status = W.HTML()
        self.message = W.HTML()
        report = wb.report()
        self.figures = {"edit": panels.edit_metrics_figure(report, widget=True),
                        "capability": panels.capability_figure(report, widget=True),
                        "lm": panels.lm_figure(report, widget=True),
                        "latent": panels.latent_figure(report, wb.projection, widget=True)}
        first = wb.data.stream[0]
        default_prompt = getattr(first, "text", None) or first.request().text
        self.probe = W.Text(value=probe_prompt if probe_prompt is not None else default_prompt,
                            description="probe prompt", **style, layout=W.Layout(width="560px"),
                            continuous_update=False)
        self.probe_button = W.Button(description="Generate", icon="comment")
        self.probe_output = W.HTML()

        self.step_button.on_click(lambda _b: self._run(self._do_step, 1))
        self.step_k_button.on_click(lambda _b: self._run(self._do_step, self.k.value))
        self.undo_button.on_click(lambda _b: self._run(self._do_undo))
        self.reset_button.on_click(lambda _b: self._run(self._do_reset))
        self.probe_button.on_click(lambda _b: self._run(self._do_probe))
        for w in (self.method, self.mode, self.compare_method, self.compare_mode, self.batch_size):
            w.observe(self._on_setting, names="value")
        self.eval_every.observe(self._on_eval_every, names="value")

        row = W.HBox
        self.widget = W.VBox([
            row([self.method, self.mode, self.compare_method, self.compare_mode]),
            row([self.batch_size, self.k, self.eval_every]),
            row(self.buttons + [self.progress]),
            self.status, self.message,
            row([self.figures["edit"], self.figures["capability"]]),
            row([self.figures["lm"], self.figures["latent"]]),
            row([self.probe, self.probe_button]), self.probe_output,
        ])
        for f in self.figures.values():
            f.layout.width = 620
        # CSS hooks for the browser test and for styling
        self.widget.add_class("otelab-workbench")
        if wb.values is not None:
            self.widget.add_class("otelab-replay")
        self._update_status()
        note, ok = wb.values_note()
        if ok:
            self._set_message(f"ready: {wb.describe()}. Press Step to edit the first batch. {note}")
        else:
            self._set_message(note, error=True)

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ plumbing
    def _set_message(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def _update_status(self) -> None:
        wb = self.workbench
        self.status.value = f"<b>{html.escape(wb.describe())}</b> · {html.escape(wb.status_line())}"
        self.undo_button.disabled = self._busy or not wb.can_undo
        self.step_button.disabled = self._busy or wb.steps_left < 1
        self.step_k_button.disabled = self._busy or wb.steps_left < 1

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        for w in self.buttons + [self.method, self.mode, self.compare_method, self.batch_size, self.probe_button]:
            w.disabled = busy
        self.compare_mode.disabled = busy or self.compare_method.value == NO_COMPARE
        if not busy:
            self._update_status()

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = f"{done}/{total}"
        self.status.value = f"<b>computing…</b> {html.escape(message)}"

    def _run(self, action, *args) -> None:
        """Run an action with the buttons disabled; errors become a red message, never a lost click."""
        if self._busy:
            return
        self._set_busy(True)
        try:
            action(*args)
        except (WorkbenchError, ValueError) as err:
            self._set_message(str(err), error=True)
        except Exception as err:   # a widget callback has no caller to raise to: show it
            self._set_message(f"{type(err).__name__}: {err}", error=True)
            traceback.print_exc()
        finally:
            self.progress.description = "idle"
            self._set_busy(False)

    def redraw(self) -> None:
        """Update the four panels in place from the workbench's reports."""
        wb = self.workbench
        report = wb.report()
        panels.refresh(self.figures["edit"], panels.edit_metrics_figure(report))
        panels.refresh(self.figures["capability"], panels.capability_figure(report))
        panels.refresh(self.figures["lm"], panels.lm_figure(report))
        panels.refresh(self.figures["latent"], panels.latent_figure(report, wb.projection))

    # ------------------------------------------------------------------ actions
    def _do_step(self, k: int) -> None:
        wb = self.workbench

        def after_step(_step: int) -> None:
            self.redraw()
            self._refresh_probe()

        wb.step(int(k), on_progress=self._on_progress, on_step=after_step)
        latest = wb.tracks[0].report.latest()
        eff = latest.get("efficacy_latest")
        self._set_message(f"step {wb.n_steps} done" + (f": efficacy on the latest batch {eff:.2f}"
                                                       f" ({wb.tracks[0].label})" if eff == eff else ""))

    def _do_undo(self) -> None:
        self._set_message(self.workbench.undo())
        self.redraw()
        self._refresh_probe()

    def _do_reset(self) -> None:
        self._set_message(self.workbench.reset())
        self.redraw()
        self._refresh_probe()

    def _do_probe(self) -> None:
        self._refresh_probe(force=True)

    def _refresh_probe(self, force: bool = False) -> None:
        if not force and not self.probe_output.value:
            return   # the probe box runs on demand first; afterwards it follows every step
        prompt = self.probe.value
        gens = self.workbench.generate(prompt, self.max_new_tokens)
        cells = "".join(
            f'<td style="vertical-align:top;padding:4px 10px;border:1px solid #ddd"><b>{html.escape(k)}</b><br>'
            f'<i>{html.escape(prompt)}</i>{html.escape(v)}</td>' for k, v in gens.items())
        self.probe_output.value = f'<table style="border-collapse:collapse"><tr>{cells}</tr></table>'
        self.generations = gens

    # ------------------------------------------------------------------ settings
    def _on_eval_every(self, change) -> None:
        if self._quiet:
            return
        try:
            self._set_message(self.workbench.configure(eval_every=int(change["new"])))
        except WorkbenchError as err:
            self._set_message(str(err), error=True)

    def _on_setting(self, change) -> None:
        if self._quiet or self._busy:
            return
        preset = self.workbench.loaded.preset
        self._quiet = True
        try:   # keep the mode lists consistent with the editors before rebuilding once
            for m, md in ((self.method, self.mode), (self.compare_method, self.compare_mode)):
                if m.value == NO_COMPARE:
                    md.disabled = True
                    continue
                md.disabled = False
                modes = valid_modes(m.value, preset)
                if list(md.options) != modes:
                    keep = md.value if md.value in modes else "aligned"
                    md.options = modes
                    md.value = keep
        finally:
            self._quiet = False
        compare = None if self.compare_method.value == NO_COMPARE else (self.compare_method.value,
                                                                         self.compare_mode.value)
        self._run(self._rebuild, compare)

    def _rebuild(self, compare) -> None:
        wb = self.workbench
        self.status.value = "<b>rebuilding the sessions…</b>"
        try:
            msg = wb.configure(self.method.value, self.mode.value, compare=compare, batch_size=self.batch_size.value)
        except WorkbenchError:
            self._sync_controls()   # show the settings that are really in use
            raise
        self.redraw()
        if self.probe_output.value:
            self._refresh_probe()
        self._set_message(msg)

    def _sync_controls(self) -> None:
        wb, preset = self.workbench, self.workbench.loaded.preset
        a = wb.tracks[0]
        b = wb.tracks[1] if len(wb.tracks) > 1 else None
        self._quiet = True
        try:
            self.method.value = a.method
            self.mode.options = valid_modes(a.method, preset)
            self.mode.value = a.mode
            self.compare_method.value = b.method if b else NO_COMPARE
            if b:
                self.compare_mode.options = valid_modes(b.method, preset)
                self.compare_mode.value = b.mode
            self.batch_size.value = wb.batch_size
        finally:
            self._quiet = False


def workbench(loaded=None, *, method: str = "memit", mode: str = "aligned", compare=("memit", "naive"),
              sizes=None, data=None, projector=None, progress: bool = True, replay: bool = False, bank=None,
              **kwargs) -> WorkbenchUI:
    """Build the whole workbench: model (SmolLM2 by default), data, covariance, baselines, widgets.

    Arguments:
        loaded: an unedited ``LoadedModel`` (default :func:`otelab.models.load_model`).
        method, mode: session A's editor.
        compare: session B's ``(method, mode)``, or None for a single session.
        sizes: :class:`otelab.workbench.Sizes` (default: CI sizes when ``$OTELAB_CI_SIZE`` is set).
        data: a :class:`otelab.workbench.WorkbenchData` (default :func:`otelab.workbench.load_data`).
        projector: see :class:`Workbench`.
        progress: progress bars while loading and computing the baselines.
        replay: replay mode: the recorded runs' CounterFact stream (:func:`otelab.workbench.replay_data`,
            sizes :meth:`Sizes.replay`) with values from the value bank (:class:`otelab.workbench.BankValues`).
        bank: replay mode's value bank folder (default the bank's own under the cache).
        **kwargs: more :class:`Workbench` arguments (``cov``, ``corpus``, ``latent_layer``, ...).

    Returns:
        A :class:`WorkbenchUI`.
    """
    from otelab.workbench import BankValues, Sizes, load_data, replay_data

    sizes = sizes or (Sizes.replay() if replay else Sizes.default())
    if loaded is None:
        from otelab.models import load_model
        loaded = load_model()
    data = data or (replay_data(sizes) if replay else load_data(sizes))
    if replay:
        kwargs.setdefault("values", BankValues(loaded, path=bank))
    wb = Workbench(loaded, data, method=method, mode=mode, compare=compare, batch_size=sizes.batch_size,
                   eval_every=sizes.eval_every, cov_tokens=kwargs.pop("cov_tokens", sizes.cov_tokens),
                   max_len=kwargs.pop("max_len", sizes.max_len), projector=projector, progress=progress, **kwargs)
    return WorkbenchUI(wb)


class Scrubber:
    """A slider over recorded stream runs: every editor's curves up to the scrubbed edit, and its retention.

    Everything is read from the runs (:func:`otelab.stream.load_runs`): the curves are
    derived once (:func:`otelab.panels.recorded_series`); moving the slider only cuts them
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

        from otelab.report import Report
        from otelab.stream import stream_report

        if not runs:
            raise ValueError("Scrubber: no recorded runs given")
        self.runs = dict(runs)
        bad = [l for l in (labels or []) if l not in self.runs]
        if bad:
            raise ValueError(f"Scrubber: no run labelled {bad[0]!r}; runs: {', '.join(self.runs)}")
        self.series = panels.recorded_series(Report.combine(*(stream_report(r, l) for l, r in self.runs.items())))
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
        self.figures = {"curves": panels.recorded_figure(self.series, self.labels, upto=self.upto, x_max=self.x_max,
                                                         widget=True),
                        "retention": panels.retention_figure(self._shown_runs(), upto=self.upto, widget=True)}
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
        """Per shown run, the latest value of every :data:`otelab.panels.RECORDED` curve at or before ``upto``.

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
            for name, _ in panels.RECORDED:
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
        panels.refresh(self.figures["curves"], panels.recorded_figure(self.series, self.labels, upto=self.upto,
                                                                      x_max=self.x_max))
        panels.refresh(self.figures["retention"], panels.retention_figure(self._shown_runs(), upto=self.upto))
        self._table()
