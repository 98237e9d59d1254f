"""The Jupyter workbench: buttons and live panels over :class:`otelab.workbench.bench.Workbench`.

(:class:`Scrubber`, at the end, is the other teaching surface: a slider over recorded stream runs.)

:class:`WorkbenchUI` holds the controls (editor, mode, an optional second session
to compare with, batch size, k, how often the slow metrics run), the buttons
(Step, Step ×k, Undo, Reset), a progress bar and a status line, the four live
panels of :mod:`otelab.views.panels` (``go.FigureWidget``, updated in place) and a
probe box (a prompt, and the greedy continuation of the unedited and of each
current model side by side).

All logic is in the workbench; the callbacks only call it and redraw, so
everything can be driven headlessly: ``ui.step_button.click()``, set
``ui.method.value`` (after steps: then ``ui.confirm_button.click()``), then look at
``ui.workbench`` and ``ui.figures["edit"].data``. A step runs in the kernel's thread:
while it computes, the buttons are disabled and the progress bar and status line say
which phase is running.

Steps are never thrown away silently: changing an editor, a mode, the batch size or a
paper pair (:data:`PAIRS`, both sessions set at once, one rebuild) and Reset first ask
"This discards N steps" with Rebuild / Cancel; Cancel puts the controls back.
"""
from __future__ import annotations

import html
import time
import traceback
from typing import Callable, Optional

from otelab.views import panels
from otelab.workbench.bench import Workbench, WorkbenchError, method_options, plural, valid_modes

__all__ = ["WorkbenchUI", "workbench", "Scrubber", "PAIRS"]

NO_COMPARE = "(none)"
CUSTOM = "(your own choice)"
# The paper's comparisons: name -> (session A's (method, mode), session B's).
PAIRS = {
    "Table 1: Eq. 4 vs Eq. 3 (memorize the latest)": (("alphaedit", "memorize-full"), ("alphaedit", "memorize-nullspace")),
    "Tables 2/5: aligned vs naive": (("memit", "aligned"), ("memit", "naive")),
    "Algorithm 1: RECT with vs without error correction": (("rect", "aligned"), ("rect", "no-ec")),
}
# A browser click that arrives this soon after an action ended was queued while it ran (e.g. a double click):
# the kernel handles comm messages one after the other, so the busy flag alone never sees it.
SETTLE_S = 0.4
WIDTH = 620   # px per panel: two side by side
IDLE_BAR, BUSY_BAR = "#d0d0d0", "#1f77b4"


def _button_class():
    """``ipywidgets.Button`` that marks the clicks coming from the browser (``from_browser``), not ``.click()``."""
    import ipywidgets as W

    class BrowserButton(W.Button):
        from_browser = False

        def _handle_button_msg(self, _, content, buffers):
            if content.get("event", "") == "click":
                self.from_browser = True
                try:
                    self.click()
                finally:
                    self.from_browser = False

    return BrowserButton


class WorkbenchUI:
    """Widgets over a :class:`Workbench`. Display it with ``display(ui)`` or as a cell's last value.

    Arguments:
        wb: the workbench.
        probe_prompt: the probe box's starting prompt (default: the first record's edit prompt).
        max_new_tokens: tokens generated in the probe box.

    Attributes:
        method, mode, compare_method, compare_mode, batch_size, k, eval_every: the controls.
        pair: a :data:`PAIRS` name (both sessions at once) or :data:`CUSTOM`.
        step_button, step_k_button, undo_button, reset_button: the buttons.
        confirm_row, confirm_text, confirm_button, cancel_button: the question before steps are discarded.
        progress, status, message: the progress bar (empty and grey when idle), the status line
            and the last message (HTML).
        figures: ``{"edit", "capability", "lm", "latent"}`` -> ``go.FigureWidget``.
        probe, probe_button, probe_output: the probe box.
        widget: the whole ``ipywidgets.VBox``.
    """

    def __init__(self, wb: Workbench, probe_prompt: Optional[str] = None, max_new_tokens: int = 20):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.workbench = wb
        self.max_new_tokens = int(max_new_tokens)
        self._busy = False
        self._quiet = False   # True while the controls are set programmatically
        self._pending: Optional[tuple[Callable, str]] = None   # an action waiting for Rebuild / Cancel
        self._ended = float("-inf")                            # when the last action ended (time.monotonic)
        self._ended_by = None                                  # the button that started it (None: not a click)
        self._clicking = None                                  # the button whose click is being handled
        Button = _button_class()
        a = wb.tracks[0]
        b = wb.tracks[1] if len(wb.tracks) > 1 else None
        style = dict(style={"description_width": "initial"})
        methods = method_options()     # the registry's methods, a registered row included
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
        self.pair = W.Dropdown(options=[CUSTOM] + list(PAIRS), value=self._matching_pair(), description="paper pair",
                               **style, layout=W.Layout(width="420px"))
        self.step_button = Button(description="Step", button_style="primary", icon="step-forward",
                                  tooltip="edit the next batch of the stream")
        self.step_k_button = Button(description="Step ×k", icon="forward", tooltip="k steps, panels after each")
        self.undo_button = Button(description="Undo", icon="undo", tooltip="revert the last step")
        self.reset_button = Button(description="Reset", icon="refresh", button_style="warning",
                                   tooltip="back to the unedited model (asks first)")
        self.buttons = [self.step_button, self.step_k_button, self.undo_button, self.reset_button]
        self.confirm_text = W.HTML()
        self.confirm_button = Button(description="Rebuild", button_style="danger")
        self.cancel_button = Button(description="Cancel")
        self.confirm_row = W.HBox([self.confirm_text, self.confirm_button, self.cancel_button],
                                  layout=W.Layout(display="none"))
        self.progress = W.IntProgress(value=0, min=0, max=1, description="idle",
                                      style={"description_width": "initial", "bar_color": IDLE_BAR},
                                      layout=W.Layout(width="420px"))
        self.status = W.HTML()
        self.message = W.HTML()
        self.figures = {k: go.FigureWidget(f) for k, f in self._panels().items()}
        first = wb.data.stream[0]
        default_prompt = getattr(first, "text", None) or first.request().text
        self.probe = W.Text(value=probe_prompt if probe_prompt is not None else default_prompt,
                            description="probe prompt", **style, layout=W.Layout(width="560px"),
                            continuous_update=False)
        self.probe_button = Button(description="Generate", icon="comment", tooltip="or press Enter in the prompt")
        self.probe_output = W.HTML()

        self.step_button.on_click(self._click(lambda: self._run(self._do_step, 1, phase="stepping")))
        self.step_k_button.on_click(self._click(lambda: self._run(self._do_step, self.k.value, phase="stepping")))
        self.undo_button.on_click(self._click(lambda: self._run(self._do_undo, phase="undoing the last step")))
        self.reset_button.on_click(self._click(lambda: self._ask("Reset", self._do_reset, "resetting")))
        self.probe_button.on_click(self._click(lambda: self._run(self._do_probe, phase="generating")))
        self.confirm_button.on_click(self._click(self._confirm))
        self.cancel_button.on_click(self._click(self._cancel))
        # Enter (or leaving the box) sends the prompt: continuous_update=False syncs the value only then
        self.probe.observe(self._on_probe, names="value")
        for w in (self.method, self.mode, self.compare_method, self.compare_mode, self.batch_size):
            w.observe(self._on_setting, names="value")
        self.pair.observe(self._on_pair, names="value")
        self.eval_every.observe(self._on_eval_every, names="value")

        row = W.HBox
        self.widget = W.VBox([
            row([self.pair]),
            row([self.method, self.mode, self.compare_method, self.compare_mode]),
            row([self.batch_size, self.k, self.eval_every]),
            row(self.buttons + [self.progress]),
            self.confirm_row, self.status, self.message,
            row([self.figures["edit"], self.figures["capability"]]),
            row([self.figures["lm"], self.figures["latent"]]),
            row([self.probe, self.probe_button]), self.probe_output,
        ])
        for f in self.figures.values():
            f.layout.width = WIDTH
        # CSS hooks for the browser test and for styling
        self.widget.add_class("otelab-workbench")
        if wb.values is not None:
            self.widget.add_class("otelab-replay")
        self._update_status()
        note, ok = wb.values_note()
        if ok:
            self._set_message(f"ready: {wb.describe()}. Step 0 is the unedited model: its efficacy is near 0 because it "
                              f"still prefers the true targets. Press Step to edit the first batch. {note}")
        else:
            self._set_message(note, error=True)

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ plumbing
    def _panels(self) -> dict:
        """The four panels of the workbench's reports, sessions in track order (A solid, B dashed)."""
        wb = self.workbench
        report, order = wb.report(), [t.label for t in wb.tracks]
        return {"edit": panels.edit_metrics_figure(report, order=order),
                "capability": panels.capability_figure(report, order=order, flat=wb.flat_tasks()),
                "lm": panels.lm_figure(report, order=order),
                "latent": panels.latent_figure(report, wb.projection, order=order)}

    def _matching_pair(self) -> str:
        """The :data:`PAIRS` name the sessions are set to, else :data:`CUSTOM`."""
        now = tuple((t.method, t.mode) for t in self.workbench.tracks)
        return next((name for name, pair in PAIRS.items() if pair == now), CUSTOM)

    def _set_message(self, text: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#333"
        self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def _update_status(self) -> None:
        wb = self.workbench
        self.status.value = f"<b>{html.escape(wb.describe())}</b> · {html.escape(wb.status_line())}"
        waiting = self._busy or self._pending is not None   # a question open: answer it first
        self.undo_button.disabled = waiting or not wb.can_undo
        self.step_button.disabled = waiting or wb.steps_left < 1
        self.step_k_button.disabled = waiting or wb.steps_left < 1
        self.reset_button.disabled = waiting

    def _set_busy(self, busy: bool, phase: str = "") -> None:
        """Disable / enable the controls; busy: a blue bar and the phase, idle: an empty grey bar."""
        self._busy = busy
        for w in self.buttons + [self.method, self.mode, self.compare_method, self.batch_size, self.pair,
                                 self.probe_button, self.confirm_button, self.cancel_button]:
            w.disabled = busy
        self.compare_mode.disabled = busy or self.compare_method.value == NO_COMPARE
        self.progress.value, self.progress.max = 0, 1
        self.progress.description = f"{phase}…" if busy else "idle"
        self.progress.style.bar_color = BUSY_BAR if busy else IDLE_BAR
        if busy:
            self.status.value = f"<b>computing…</b> {html.escape(phase)}"
            self._set_message(f"working: {phase}…")   # the last message would be stale while this runs
        else:
            self._update_status()

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = f"{done}/{total}"
        self.status.value = f"<b>computing…</b> {html.escape(message)}"

    def _click(self, fn: Callable[[], None]) -> Callable:
        """A button callback running ``fn()``, except while busy or for a browser click queued while an action ran.

        Arguments:
            fn: what the click does.

        Returns:
            The callback for ``Button.on_click``.
        """
        def handler(button) -> None:
            if self._busy:
                return
            if (getattr(button, "from_browser", False) and button is self._ended_by
                    and time.monotonic() - self._ended < SETTLE_S):
                return   # a second click on the button whose action just ended (a double click), handled only now
            self._clicking = button
            try:
                fn()
            finally:
                self._clicking = None
        return handler

    def _run(self, action, *args, phase: str = "working") -> None:
        """Run an action with the controls disabled; errors become a red message, never a lost click.

        Arguments:
            action: the method to call with ``args``; it sets the final message.
            phase: what runs, shown in the progress bar, the status and the message meanwhile.
        """
        if self._busy:
            return
        self._set_busy(True, phase)
        try:
            action(*args)
        except (WorkbenchError, ValueError) as err:
            self._set_message(str(err), error=True)
        except Exception as err:   # a widget callback has no caller to raise to: show it
            self._set_message(f"{type(err).__name__}: {err}", error=True)
            traceback.print_exc()
        finally:
            self._set_busy(False)
            self._ended, self._ended_by = time.monotonic(), self._clicking

    def redraw(self) -> None:
        """Update the four panels in place from the workbench's reports."""
        for key, fig in self._panels().items():
            panels.refresh(self.figures[key], fig)

    # ------------------------------------------------------------------ confirmation
    def _ask(self, verb: str, action: Callable[[], None], phase: str) -> None:
        """Run ``action`` at once when no step would be lost, else ask first (the confirm row).

        Arguments:
            verb: the confirm button's text ("Rebuild", "Reset").
            action: what runs on confirmation.
            phase: its busy text.
        """
        wb = self.workbench
        if wb.n_steps == 0:
            self._close_confirm()
            self._run(action, phase=phase)
            return
        self._pending = (action, phase)
        self.confirm_text.value = (f'<b style="color:#b00020">This discards {plural(wb.n_steps, "step")} '
                                   f'({plural(wb.n_edits, "edit")}).</b>')
        self.confirm_button.description = verb
        self.confirm_row.layout.display = "flex"
        self._update_status()
        self._set_message(f"{verb}? {verb} discards the steps, Cancel keeps them and the settings in use.")

    def _close_confirm(self) -> None:
        self._pending = None
        self.confirm_row.layout.display = "none"
        self._update_status()

    def _confirm(self) -> None:
        if self._pending is None:
            return
        action, phase = self._pending
        self._close_confirm()
        self._run(action, phase=phase)

    def _cancel(self) -> None:
        self._close_confirm()
        self._sync_controls()   # the dropdowns show the settings in use again
        wb = self.workbench
        self._set_message(f"kept {plural(wb.n_steps, 'step')}: {wb.describe()}")

    # ------------------------------------------------------------------ actions
    def _do_step(self, k: int) -> None:
        wb = self.workbench
        self._set_message(f"working: {plural(int(k), 'step')} from step {wb.n_steps + 1}: each edits "
                          f"{plural(len(wb.tracks), 'session')}, then evaluates them (most of the time)…")

        def after_step(_step: int) -> None:
            self.redraw()
            self._refresh_probe()

        wb.step(int(k), on_progress=self._on_progress, on_step=after_step)
        tr = wb.tracks[0]
        eff = tr.report.latest().get("efficacy_latest", float("nan"))
        msg = f"step {wb.n_steps} done"
        if eff == eff:
            msg += f": efficacy on the latest batch {eff:.2f} ({tr.label})"
            if eff < 0.5:   # a bare 0.00 reads like a bug: say what it means
                msg += (" (the share of the batch's prompts where the model now prefers the new target: "
                        "below 0.5 it mostly still prefers the true one)")
        self._set_message(msg)

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
        self._set_message(f"generated {plural(self.max_new_tokens, 'token')} per model from the probe prompt")

    def _on_probe(self, change) -> None:
        if not self._quiet:
            self._run(self._do_probe, phase="generating")

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

    def _fit_modes(self) -> None:
        """Keep each mode list to what its editor supports (quietly: no rebuild from here)."""
        preset = self.workbench.loaded.preset
        self._quiet = True
        try:
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

    def _on_setting(self, change) -> None:
        if self._quiet or self._busy:
            return
        self._fit_modes()
        self._ask("Rebuild", self._rebuild, "rebuilding the sessions")

    def _on_pair(self, change) -> None:
        """A paper pair sets both sessions at once: one question, one rebuild."""
        if self._quiet or self._busy or change["new"] == CUSTOM:
            return
        (ma, mda), (mb, mdb) = PAIRS[change["new"]]
        self._quiet = True
        try:
            self.method.value = ma
            self.compare_method.value = mb
        finally:
            self._quiet = False
        self._fit_modes()
        self._quiet = True
        try:
            self.mode.value, self.compare_mode.value = mda, mdb
        finally:
            self._quiet = False
        self._ask("Rebuild", self._rebuild, f"rebuilding for {change['new']}")

    def _rebuild(self) -> None:
        wb = self.workbench
        compare = None if self.compare_method.value == NO_COMPARE else (self.compare_method.value,
                                                                         self.compare_mode.value)
        try:
            msg = wb.configure(self.method.value, self.mode.value, compare=compare, batch_size=self.batch_size.value)
        finally:
            self._sync_controls()   # show the settings really in use (and their paper pair, if any)
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
            self.compare_mode.disabled = self._busy or b is None
            self.batch_size.value = wb.batch_size
            self.pair.value = self._matching_pair()
        finally:
            self._quiet = False


def workbench(loaded=None, *, method: str = "memit", mode: str = "aligned", compare=("memit", "naive"),
              sizes=None, data=None, projector=None, progress: bool = True, replay: bool = False, bank=None,
              **kwargs) -> WorkbenchUI:
    """Build the whole workbench: model (SmolLM2 by default), data, covariance, baselines, widgets.

    Arguments:
        loaded: an unedited ``LoadedModel`` (default :func:`otelab.models.loading.load_model`).
        method, mode: session A's editor.
        compare: session B's ``(method, mode)``, or None for a single session.
        sizes: :class:`otelab.workbench.bench.Sizes` (default: CI sizes when ``$OTELAB_CI_SIZE`` is set).
        data: a :class:`otelab.workbench.bench.WorkbenchData` (default :func:`otelab.workbench.bench.load_data`).
        projector: see :class:`Workbench`.
        progress: progress bars while loading and computing the baselines.
        replay: replay mode: the recorded runs' CounterFact stream (:func:`otelab.workbench.bench.replay_data`,
            sizes :meth:`Sizes.replay`) with values from the value bank (:class:`otelab.workbench.bench.BankValues`).
        bank: replay mode's value bank folder (default the bank's own under the cache).
        **kwargs: more :class:`Workbench` arguments (``cov``, ``corpus``, ``latent_layer``, ...).

    Returns:
        A :class:`WorkbenchUI`.
    """
    from otelab.workbench.bench import BankValues, Sizes, load_data, replay_data

    sizes = sizes or (Sizes.replay() if replay else Sizes.default())
    if loaded is None:
        from otelab.models.loading import load_model
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

    Everything is read from the runs (:func:`otelab.workbench.stream.load_runs`): the curves are
    derived once (:func:`otelab.views.panels.recorded_series`); moving the slider only cuts them
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
        """Per shown run, the latest value of every :data:`otelab.views.panels.RECORDED` curve at or before ``upto``.

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
