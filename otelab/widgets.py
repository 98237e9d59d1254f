"""The Jupyter workbench: buttons and live panels over :class:`otelab.workbench.Workbench`.

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

__all__ = ["WorkbenchUI", "workbench"]

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
              sizes=None, data=None, projector=None, progress: bool = True, **kwargs) -> WorkbenchUI:
    """Build the whole workbench: model (SmolLM2 by default), data, covariance, baselines, widgets.

    Arguments:
        loaded: an unedited ``LoadedModel`` (default :func:`otelab.models.load_model`).
        method, mode: session A's editor.
        compare: session B's ``(method, mode)``, or None for a single session.
        sizes: :class:`otelab.workbench.Sizes` (default: CI sizes when ``$OTELAB_CI_SIZE`` is set).
        data: a :class:`otelab.workbench.WorkbenchData` (default :func:`otelab.workbench.load_data`).
        projector: see :class:`Workbench`.
        progress: progress bars while loading and computing the baselines.
        **kwargs: more :class:`Workbench` arguments (``cov``, ``corpus``, ``latent_layer``, ...).

    Returns:
        A :class:`WorkbenchUI`.
    """
    from otelab.workbench import Sizes, load_data

    sizes = sizes or Sizes.default()
    if loaded is None:
        from otelab.models import load_model
        loaded = load_model()
    data = data or load_data(sizes)
    wb = Workbench(loaded, data, method=method, mode=mode, compare=compare, batch_size=sizes.batch_size,
                   eval_every=sizes.eval_every, cov_tokens=kwargs.pop("cov_tokens", sizes.cov_tokens),
                   max_len=kwargs.pop("max_len", sizes.max_len), projector=projector, progress=progress, **kwargs)
    return WorkbenchUI(wb)
