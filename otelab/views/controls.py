"""The settings controls of the workbench UI: editors and modes of both sessions, paper pairs, batch size.

:class:`SessionControls` is the part of :class:`otelab.views.widgets.WorkbenchUI` that sets up
the sessions: its dropdowns offer each editor's valid modes (:func:`otelab.workbench.bench.valid_modes`),
a paper pair (:data:`PAIRS`) sets both sessions at once, and every change that would discard
steps goes through the UI's question first (``_ask``: Rebuild / Cancel).
"""
from __future__ import annotations

from otelab.workbench.editors import WorkbenchError, method_options, valid_modes

__all__ = ["SessionControls", "PAIRS", "NO_COMPARE", "CUSTOM"]

NO_COMPARE = "(none)"
CUSTOM = "(your own choice)"
# The paper's comparisons: name -> (session A's (method, mode), session B's).
PAIRS = {
    "Table 1: Eq. 4 vs Eq. 3 (memorize the latest)": (("alphaedit", "memorize-full"), ("alphaedit", "memorize-nullspace")),
    "Tables 2/5: aligned vs naive": (("memit", "aligned"), ("memit", "naive")),
    "Algorithm 1: RECT with vs without error correction": (("rect", "aligned"), ("rect", "no-ec")),
}


class SessionControls:
    """The settings half of :class:`otelab.views.widgets.WorkbenchUI`.

    A mixin: it uses the UI's ``workbench``, ``_quiet``, ``_busy``, ``_ask``, ``_set_message``,
    ``redraw``, ``_refresh_probe`` and ``probe_output``.

    Attributes:
        method, mode, compare_method, compare_mode, batch_size, k, eval_every: the controls.
        pair: a :data:`PAIRS` name (both sessions at once) or :data:`CUSTOM`.
    """

    def _make_settings(self, W, style: dict) -> None:
        """Create the controls, set to the workbench's sessions.

        Arguments:
            W: the ``ipywidgets`` module.
            style: the widgets' common ``style`` keyword.
        """
        wb = self.workbench
        a = wb.tracks[0]
        b = wb.tracks[1] if len(wb.tracks) > 1 else None
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

    def _observe_settings(self) -> None:
        """Connect the controls: a session setting asks to rebuild, ``eval_every`` applies at once."""
        for w in (self.method, self.mode, self.compare_method, self.compare_mode, self.batch_size):
            w.observe(self._on_setting, names="value")
        self.pair.observe(self._on_pair, names="value")
        self.eval_every.observe(self._on_eval_every, names="value")

    def _matching_pair(self) -> str:
        """The :data:`PAIRS` name the sessions are set to, else :data:`CUSTOM`."""
        now = tuple((t.method, t.mode) for t in self.workbench.tracks)
        return next((name for name, pair in PAIRS.items() if pair == now), CUSTOM)

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
