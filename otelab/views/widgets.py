"""The Jupyter workbench: buttons and live panels over :class:`otelab.workbench.bench.Workbench`.

(:class:`otelab.views.scrubber.Scrubber`, importable from here too, is the other teaching surface:
a slider over recorded stream runs.)

:class:`WorkbenchUI` holds the controls (editor, mode, an optional second session
to compare with, batch size, k, how often the slow metrics run; :mod:`otelab.views.controls`), the buttons
(Step, Step ×k, Undo, Reset), a progress bar and a status line, the live panels of
:data:`otelab.views.panels.PANELS` (``go.FigureWidget``, updated in place, two per row) and a
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
from otelab.views.controls import CUSTOM, NO_COMPARE, PAIRS, SessionControls
from otelab.views.scrubber import Scrubber
from otelab.views.style import refresh
from otelab.workbench.bench import Workbench, WorkbenchError, plural

__all__ = ["WorkbenchUI", "workbench", "Scrubber", "PAIRS", "CUSTOM", "NO_COMPARE"]

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


class WorkbenchUI(SessionControls):
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
        figures: ``{key: go.FigureWidget}`` of the live :data:`otelab.views.panels.PANELS`
            (``edit``, ``capability``, ``lm``, ``latent``).
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
        style = dict(style={"description_width": "initial"})
        self._make_settings(W, style)
        self._make_buttons(W, Button)
        self.figures = {k: go.FigureWidget(f) for k, f in self._panels().items()}
        first = wb.data.stream[0]
        default_prompt = getattr(first, "text", None) or first.request().text
        self.probe = W.Text(value=probe_prompt if probe_prompt is not None else default_prompt,
                            description="probe prompt", **style, layout=W.Layout(width="560px"),
                            continuous_update=False)
        self.probe_button = Button(description="Generate", icon="comment", tooltip="or press Enter in the prompt")
        self.probe_output = W.HTML()

        self._connect_buttons()
        # Enter (or leaving the box) sends the prompt: continuous_update=False syncs the value only then
        self.probe.observe(self._on_probe, names="value")
        self._observe_settings()

        row, shown = W.HBox, list(self.figures.values())
        self.widget = W.VBox([
            row([self.pair]),
            row([self.method, self.mode, self.compare_method, self.compare_mode]),
            row([self.batch_size, self.k, self.eval_every]),
            row(self.buttons + [self.progress]),
            self.confirm_row, self.status, self.message,
            *[row(shown[i:i + 2]) for i in range(0, len(shown), 2)],
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

    def _make_buttons(self, W, Button) -> None:
        """The buttons, the Rebuild / Cancel row, the progress bar, the status line and the message."""
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

    def _connect_buttons(self) -> None:
        """Each button's action, run through :meth:`_click` (never while busy, no queued double click)."""
        self.step_button.on_click(self._click(lambda: self._run(self._do_step, 1, phase="stepping")))
        self.step_k_button.on_click(self._click(lambda: self._run(self._do_step, self.k.value, phase="stepping")))
        self.undo_button.on_click(self._click(lambda: self._run(self._do_undo, phase="undoing the last step")))
        self.reset_button.on_click(self._click(lambda: self._ask("Reset", self._do_reset, "resetting")))
        self.probe_button.on_click(self._click(lambda: self._run(self._do_probe, phase="generating")))
        self.confirm_button.on_click(self._click(self._confirm))
        self.cancel_button.on_click(self._click(self._cancel))

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ plumbing
    def _panels(self) -> dict:
        """The live panels of the workbench's reports, sessions in track order (A solid, B dashed)."""
        wb = self.workbench
        report, order = wb.report(), [t.label for t in wb.tracks]
        inputs = dict(order=order, projection=wb.projection, flat=wb.flat_tasks(), umap_note=wb.umap_note())
        return {p.key: panels.build(p, report, **inputs) for p in panels.PANELS if p.live}

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
        """Update the live panels in place from the workbench's reports."""
        for key, fig in self._panels().items():
            refresh(self.figures[key], fig)

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
