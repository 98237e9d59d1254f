"""The sequential-editing workbench, without any widget: sessions, a request stream and live metrics.

:class:`Workbench` steps one or two :class:`otelab.engine.session.EditSession` (e.g. aligned
vs naive MEMIT, each on its own copy of the model) through the same stream of
fact-bank records, one batch per step, and after every step measures them against the
unedited model (:mod:`otelab.workbench.measure`; general capability and a UMAP picture,
the two slow ones, every ``eval_every`` steps). It holds the session control only: the
data (:mod:`otelab.workbench.data`), the measurements, replay mode's values
(:mod:`otelab.workbench.replay`), the probe (:mod:`otelab.workbench.probe`) and the status
texts (:mod:`otelab.workbench.status`) live in sibling modules, their names importable from here too.

**Replay mode** (:mod:`otelab.workbench.replay`) steps the recorded runs' 2,000-edit
CounterFact stream 100 edits per click, with values from the bank.

Step 0 of every report is the unedited model, scored on the first batch it is about to be
edited with. The metrics land in one :class:`otelab.eval.report.Report` per session (metric
names in :data:`METRICS`), which :mod:`otelab.views.panels` turns into figures and
:mod:`otelab.views.widgets` puts behind buttons.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional

import torch

from otelab.config import ci_size
from otelab.eval.report import Report
from otelab.workbench.data import REPLAY_DRAW, REPLAY_SEED, Sizes, WorkbenchData, load_data
from otelab.workbench.editors import (METHOD_NAMES, WorkbenchError, check_settings, method_options, plural,
                                      track_label, valid_modes)
from otelab.workbench.editors import _combo_error  # noqa: F401  (tests check the registry through it)
from otelab.workbench.measure import (METRICS, LatentProjection, flat_tasks, glue_row, measure,
                                      project_states, step0_row, unedited_reference)
from otelab.workbench.probe import generate, unedited_weights
from otelab.workbench.replay import FILL_COMMAND, BankValues, fill_bank, replay_data
from otelab.workbench.status import status_line, umap_note, values_note
from otelab.workbench.track import Track

__all__ = ["Workbench", "Track", "Sizes", "WorkbenchData", "WorkbenchError", "LatentProjection", "BankValues",
           "load_data", "replay_data", "measure", "glue_row", "valid_modes", "method_options", "plural",
           "track_label", "unedited_weights", "METHOD_NAMES", "METRICS", "REPLAY_DRAW", "REPLAY_SEED", "FILL_COMMAND",
           "ci_size"]


class Workbench:
    """Sequential editing of one or two sessions on a request stream, with metrics after every step.

    Arguments:
        loaded: an *unedited* :class:`otelab.models.loading.LoadedModel` (session A edits it in place).
        data: the stream and the evaluation sets (:func:`load_data`).
        method, mode: session A's editor.
        compare: ``(method, mode)`` of session B, which edits a deep copy of ``loaded``
            (or ``loaded_b``) with the same stream; ``None`` for one session.
        loaded_b: the model for session B (default ``copy.deepcopy(loaded)``, made when first needed).
        batch_size: requests per step.
        eval_every: general capability and UMAP every this many steps (0: never).
        cov: ``{layer: Ĉ0}``; default :func:`otelab.engine.covariance.get_covariance` with ``corpus`` and ``cov_tokens``.
        corpus, cov_tokens: for the default covariance.
        latent_layer: index into ``hidden_states`` for latent drift; default the output of
            the last edited block (``max(layers) + 1``).
        max_len: token limit per held-out text.
        projector: ``f(before [n, d], after [m, d]) -> (emb_before [n, 2], emb_after [m, 2])``;
            default :func:`otelab.eval.drift.umap_2d` (seed 0).
        undo_depth: steps that can be undone.
        progress: tqdm bars while computing the baselines.
        values: ``f(requests) -> ValueResult`` giving each step's target values once for every
            session (e.g. :class:`BankValues`: replay mode); ``None``: each session optimises
            its values inside its step (the slow way, about a second per request on a CPU).
    """

    def __init__(self, loaded, data: WorkbenchData, *, method: str = "memit", mode: str = "aligned",
                 compare: Optional[tuple[str, str]] = None, loaded_b=None, batch_size: int = 2,
                 eval_every: int = 1, cov: Optional[dict] = None, corpus=None, cov_tokens: Optional[int] = None,
                 latent_layer: Optional[int] = None, max_len: int = 128, projector: Optional[Callable] = None,
                 undo_depth: int = 3, progress: bool = False, values: Optional[Callable[[list], Any]] = None):
        if values is not None and not callable(values):
            raise WorkbenchError(f"values must be a callable f(requests) -> ValueResult, got {type(values).__name__}")
        self.loaded, self.data, self.values = loaded, data, values
        self._loaded_b = loaded_b
        self.undo_depth = int(undo_depth)
        self.progress = progress
        self.max_len = int(max_len)
        self.projector = projector
        check_settings(method, mode, compare, batch_size, eval_every, self.loaded.preset, len(self.data.stream))
        self.eval_every = int(eval_every)
        n_blocks = loaded.n_layers
        self.latent_layer = max(loaded.layers) + 1 if latent_layer is None else int(latent_layer)
        if not 0 <= self.latent_layer <= n_blocks:
            raise WorkbenchError(f"latent_layer must be in 0..{n_blocks} (an index into hidden_states), "
                                 f"got {self.latent_layer}")
        if cov is None:
            from otelab.engine.covariance import get_covariance
            cov = get_covariance(loaded, list(loaded.layers), corpus=corpus, n_tokens=cov_tokens, progress=progress)
        self.cov = cov
        t0 = time.perf_counter()
        # Everything "vs unedited" is measured against these, computed once on the unedited model.
        self.baseline, self.glue_reference, self.glue_unedited = unedited_reference(
            loaded, data, self.latent_layer, self.max_len, progress)
        self._unedited_generations: dict[tuple[str, int], str] = {}
        self._step0_cache: dict[int, dict] = {}
        self.baseline_seconds = time.perf_counter() - t0
        self.tracks: list[Track] = []
        self.projections: dict[int, LatentProjection] = {}
        self.batch_size = int(batch_size)
        self._undoable = 0
        self._build(method, mode, compare)

    # ------------------------------------------------------------------ settings
    def _build(self, method: str, mode: str, compare) -> None:
        """Reset every session (unedited weights back) and start afresh with these settings."""
        for tr in self.tracks:
            tr.session.reset()
        labels = [track_label(method, mode)]
        specs = [(self.loaded, method, mode)]
        if compare is not None:
            if self._loaded_b is None:
                self._loaded_b = copy.deepcopy(self.loaded)   # the unedited weights: A was reset above
            mb, mdb = compare
            lb = track_label(mb, mdb)
            labels.append(lb if lb != labels[0] else lb + " (B)")
            specs.append((self._loaded_b, mb, mdb))
        self.tracks = [Track(lm, m, md, lab, self.cov, self.undo_depth)
                       for (lm, m, md), lab in zip(specs, labels)]
        for tr in self.tracks:
            tr.report.add_meta(batch_size=self.batch_size, preset=self.loaded.preset.name,
                               layers=list(self.loaded.layers))
        self.projections = {}
        self._undoable = 0
        row = self._step0()
        for tr in self.tracks:
            tr.report.add(0, row)

    def configure(self, method: Optional[str] = None, mode: Optional[str] = None, *, compare="keep",
                  batch_size: Optional[int] = None, eval_every: Optional[int] = None) -> str:
        """Change the editor(s) or the batch size: every session is rebuilt from the unedited model.

        Arguments:
            method, mode: session A's editor (``None``: keep).
            compare: session B's ``(method, mode)``, ``None`` for no session B, ``"keep"`` to keep it.
            batch_size: requests per step (``None``: keep).
            eval_every: only changes how often the slow metrics run; does not rebuild.

        Returns:
            A status message saying what was rebuilt and what was discarded.

        Raises:
            WorkbenchError: an invalid setting (nothing is changed).
        """
        a = self.tracks[0]
        method = a.method if method is None else method
        mode = a.mode if mode is None else mode
        if isinstance(compare, str) and compare == "keep":
            compare = (self.tracks[1].method, self.tracks[1].mode) if len(self.tracks) > 1 else None
        batch_size = self.batch_size if batch_size is None else batch_size
        ev = self.eval_every if eval_every is None else eval_every
        check_settings(method, mode, compare, batch_size, ev, self.loaded.preset, len(self.data.stream))
        self.eval_every = int(ev)
        old = (a.method, a.mode, (self.tracks[1].method, self.tracks[1].mode) if len(self.tracks) > 1 else None,
               self.batch_size)
        new = (method, mode, tuple(compare) if compare else None, batch_size)
        if old == new:
            return f"settings unchanged: {self.describe()}"
        steps, edits = self.n_steps, self.n_edits
        self.batch_size = int(batch_size)
        self._build(method, mode, tuple(compare) if compare else None)
        was = f" (discarded {plural(edits, 'edit')} from {plural(steps, 'step')})" if steps else ""
        return f"rebuilt: {self.describe()}; sessions reset to the unedited model{was}"

    def describe(self) -> str:
        """``"MEMIT aligned vs MEMIT naive, batch 2"``."""
        return " vs ".join(t.label for t in self.tracks) + f", batch {self.batch_size}"

    # ------------------------------------------------------------------ state
    @property
    def n_steps(self) -> int:
        return self.tracks[0].session.n_steps

    @property
    def n_edits(self) -> int:
        return self.n_steps * self.batch_size

    @property
    def steps_left(self) -> int:
        """Full batches left in the stream."""
        return (len(self.data.stream) - self.n_edits) // self.batch_size

    @property
    def can_undo(self) -> bool:
        return self._undoable > 0

    def report(self) -> Report:
        """All sessions' metrics in one :class:`Report` (one label per session)."""
        if len(self.tracks) == 1:
            return self.tracks[0].report
        return Report.combine(*(t.report for t in self.tracks))

    def status_line(self) -> str:
        """One line on where the stream stands and what the last step cost (:func:`status_line`)."""
        return status_line(self)

    @property
    def last_step_seconds(self) -> Optional[float]:
        """Wall time of the last step, editing and metrics included."""
        return getattr(self, "_last_wall", None)

    def values_note(self) -> tuple[str, bool]:
        """``(one line on where the target values come from, whether the whole stream is covered)``."""
        return values_note(self.values, self.data.stream)

    def fill_values(self, n: Optional[int] = None) -> int:
        """Compute the bank's missing values of the first ``n`` stream records (default all) now.

        Only for a :class:`BankValues` provider. The values are optimised on the unedited
        model (its weights are put back for the computation, bit for bit), so this works
        at any step; it takes about a second per value on a CPU.

        Returns:
            How many values were computed.
        """
        return fill_bank(self.values, self.tracks[0].session, [r.request() for r in self.data.stream[:n]])

    # ------------------------------------------------------------------ metrics
    def _step0(self) -> dict[str, float]:
        """The unedited model's row: scored on the first batch to be edited (cached per batch size)."""
        if self.batch_size not in self._step0_cache:
            self._step0_cache[self.batch_size] = step0_row(self.loaded, self.data, self.baseline, self.batch_size,
                                                           self.glue_unedited)
        return dict(self._step0_cache[self.batch_size])

    def _measure(self, tr: Track, step: int, slow: bool, tick) -> Optional[torch.Tensor]:
        """Metrics of one session after ``step`` (added to its report); returns its latent states [n, d] or None."""
        row, after = measure(tr.loaded, tr.session, self.data, self.baseline, step * self.batch_size,
                             self.batch_size, self.latent_layer, glue=slow, tick=tick, label=tr.label,
                             glue_reference=self.glue_reference)
        tr.report.add(step, row)
        return after

    def _project(self, step: int, afters: dict) -> None:
        """The UMAP picture of every session's subject states after ``step`` (:attr:`projection`)."""
        names = [getattr(r, "subject", str(i)) for i, r in enumerate(self.data.latent_records)]
        self.projections[step] = project_states(self.projector, self.baseline.latent.states, afters, step,
                                                self.data.edited_mask(step * self.batch_size), names)

    def flat_tasks(self) -> list[str]:
        """Capability tasks whose accuracy cannot move: the unedited model gives every item the same answer.

        Accuracy is then that answer's share of the gold labels (often exactly chance) until
        answers flip; agreement and margin (``glue/<task>/agreement``, ``margin``) show the change.
        """
        return flat_tasks(self.glue_reference)

    @property
    def projection(self) -> Optional[LatentProjection]:
        """The latest UMAP picture (None before the first slow evaluation)."""
        return self.projections[max(self.projections)] if self.projections else None

    def umap_note(self) -> str:
        """What the latent panel says while there is no UMAP (:func:`umap_note`)."""
        return umap_note(self.baseline.latent is not None, self.eval_every, self.n_steps)

    def phases(self, k: int = 1) -> int:
        """How many progress ticks :meth:`step` ``(k)`` reports (for a progress bar's maximum)."""
        total = 0
        for s in range(self.n_steps + 1, self.n_steps + k + 1):
            slow = self.eval_every > 0 and s % self.eval_every == 0
            per = 2 + (self.baseline.lm is not None) + (self.baseline.latent is not None)
            per += bool(slow and self.data.glue)
            total += len(self.tracks) * per + bool(slow and self.baseline.latent is not None)
            total += self.values is not None
        return total

    # ------------------------------------------------------------------ actions
    def step(self, k: int = 1, on_progress: Optional[Callable[[int, int, str], None]] = None,
             on_step: Optional[Callable[[int], None]] = None) -> list[dict]:
        """Edit the next ``k`` batches of the stream in every session, measuring after each.

        Arguments:
            k: number of steps.
            on_progress: called as ``on_progress(done, total, message)`` before each phase
                (editing one session, one metric group, ...), ``total`` = :meth:`phases`.
            on_step: called with the step number after each step is edited and measured
                (e.g. to redraw panels between the ``k`` steps).

        Returns:
            Per step, ``{label: StepRecord}``.

        Raises:
            WorkbenchError: the stream has fewer than ``k`` full batches left (nothing is done).
            Any error of a session's step: every session is returned to where it was before
            that step (earlier steps of the ``k`` stay).
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise WorkbenchError(f"k must be a positive integer, got {k!r}")
        if k > self.steps_left:
            raise WorkbenchError(f"the stream has {plural(self.steps_left, 'full batch', 'full batches')} of "
                                 f"{self.batch_size} left, asked for {plural(k, 'step')}; reset, or lower the batch size")
        total, done = self.phases(k), 0

        def tick(msg: str) -> None:
            nonlocal done
            if on_progress is not None:
                on_progress(done, total, msg)
            done += 1

        out = []
        for _ in range(k):
            t0 = time.perf_counter()
            step = self.n_steps + 1
            out.append(self._step_once(step, tick))
            self._undoable = min(self._undoable + 1, self.undo_depth)
            self._last_wall = time.perf_counter() - t0
            if on_step is not None:
                on_step(step)
        if on_progress is not None:
            on_progress(total, total, "done")
        return out

    def _step_once(self, step: int, tick: Callable[[str], None]) -> dict:
        """Edit the next batch in every session and measure; on any error every session is put back.

        Arguments:
            step: the step's number (``n_steps + 1``).
            tick: called with a message before each phase.

        Returns:
            ``{label: StepRecord}``.
        """
        batch = self.data.stream[self.n_edits:self.n_edits + self.batch_size]
        reqs = [r.request() for r in batch]
        recs, stepped = {}, []
        try:
            val = None
            if self.values is not None:   # one set of targets for every session, fetched before any edit
                tick(f"step {step}: target values of {plural(len(reqs), 'request')}")
                val = self.values(reqs)
            for tr in self.tracks:
                tick(f"step {step}: editing with {tr.label} ({plural(len(reqs), 'request')})")
                t = time.perf_counter()
                recs[tr.label] = tr.session.step(reqs, values=val)
                tr.step_seconds.append(time.perf_counter() - t)
                stepped.append(tr)
            slow = self.eval_every > 0 and step % self.eval_every == 0
            afters = {}
            for tr in self.tracks:
                afters[tr.label] = self._measure(tr, step, slow, tick)
            if slow and self.baseline.latent is not None:
                tick(f"step {step}: UMAP of the hidden states")
                self._project(step, afters)
        except BaseException:
            for tr in stepped:   # keep the sessions in lockstep: nothing of this step stays
                tr.drop_last(step)
            self.projections.pop(step, None)
            raise
        return recs

    def undo(self) -> str:
        """Revert the last step in every session (weights, editor states, metrics).

        Returns:
            A status message.

        Raises:
            WorkbenchError: nothing to undo, or the undo depth is exhausted.
        """
        if self.n_steps == 0:
            raise WorkbenchError("nothing to undo: no step has been made")
        if not self.can_undo:
            raise WorkbenchError(f"cannot undo further: only the last {plural(self.undo_depth, 'step')} "
                                 f"{'is' if self.undo_depth == 1 else 'are'} kept")
        step = self.n_steps
        for tr in self.tracks:
            tr.drop_last(step)
        self.projections = {s: p for s, p in self.projections.items() if s < step}
        self._undoable -= 1
        self._last_wall = None
        return f"undid step {step}: back to step {self.n_steps} ({plural(self.n_edits, 'edit')})"

    def reset(self) -> str:
        """Every session back to the unedited model; the stream starts again."""
        steps = self.n_steps
        for tr in self.tracks:
            tr.clear()
        self.projections = {}
        self._undoable = 0
        self._last_wall = None
        return f"reset: back to the unedited model (discarded {plural(steps, 'step')})"

    # ------------------------------------------------------------------ probing
    def generate(self, prompt: str, max_new_tokens: int = 20) -> dict[str, str]:
        """Greedy continuations of ``prompt`` by the unedited model and by each session's current model.

        The unedited continuation is computed by putting the unedited weights back for
        a moment (bit for bit, then the edited ones again), and cached per prompt.

        Returns:
            ``{"unedited": text, label: text, ...}``.
        """
        return generate(self.tracks, self._unedited_generations, prompt, max_new_tokens)
