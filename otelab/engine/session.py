"""EditSession: sequential editing of a real model, one core editor per layer.

The engine only extracts keys and values and writes updates back. Every
update comes from :class:`otelab.ote.SequentialEditor`; each method × mode is a
configuration of it read from the core's registry (:data:`otelab.ote.EDITORS`,
:func:`editor_config`), not new math.

=============  ===================================================================
method         core configuration per layer (Ĉ0: per-token covariance, μ: ``cov_weight``)
=============  ===================================================================
``memit``      ``C0 = μ Ĉ0``, ``P = I``, Tikhonov λ = 0
``alphaedit``  ``P`` = null-space projector of Ĉ0, no C0, Tikhonov λ = ``alphaedit_l2``
``prune``      MEMIT + :class:`otelab.ote.Prune` (σ_max of the unedited W)
``rect``       MEMIT + :class:`otelab.ote.Rect` (top 20% relative change)
``rlsedit``    ``C0 = μ Ĉ0``, Tikhonov λ = ``rls_lam``, Woodbury recursion (mode ``rls``)
=============  ===================================================================

μ is the C0 weight (the presets' and the recorded runs' ``cov_weight``; the paper's App. B.4
and the run labels call it λ); λ is the core's Tikhonov weight (``lam``).

Modes (:data:`otelab.ote.SESSION_MODES`): ``aligned`` (OTE-aligned; Algorithm 1 for PRUNE/RECT),
``naive`` (a repeated one-time edit), ``no-ec`` (aligned but without Algorithm 1's error
correction; PRUNE/RECT only), ``memorize-nullspace`` (Eq. 3), ``memorize-full`` (Eq. 4),
``conflict`` (Prop. 3.5: a re-edited subject takes its latest target). A method registered with
:func:`otelab.ote.register_editor` is accepted here (and everywhere else) at once.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional

import torch

from otelab import ote

from otelab.engine import persist
from otelab.engine import store as session_store
from otelab.engine.editors import (  # noqa: F401  (re-exported: imported from here)
    METHODS, RECT_KEEP, RLS_LAM, SESSION_MODES, check_combo, check_cov, editor_config,
)
from otelab.engine.persist import FORMAT_VERSION, StepRecord  # noqa: F401  (re-exported)
from otelab.engine.keys import compute_keys, context_templates, subject_hidden
from otelab.engine.replay import LayerwiseKeys
from otelab.data.requests import EditRequest, as_requests, validate_all
from otelab.engine.store import SessionError
from otelab.engine.values import ValueResult, compute_values

Tensor = torch.Tensor

VALUE_CLAMP_TOL = 1e-3      # relative slack on the value optimisation's norm clamp (float rounding)


class EditSession:
    """Sequential editing of one model with one method and mode.

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel` (edited in place).
        method: ``memit``, ``alphaedit``, ``prune``, ``rect``, ``rlsedit`` or a registered row
            (:data:`otelab.ote.EDITORS`).
        mode: ``aligned``, ``naive``, ``no-ec``, ``memorize-nullspace``, ``memorize-full``, ``conflict``
            (those the method's row accepts).
        cov: ``{layer: Ĉ0}`` per-token covariances; default computed (and cached) by
            :func:`otelab.engine.covariance.get_covariance` from ``corpus`` and ``n_tokens``.
        corpus, n_tokens: for the default covariance.
        undo_depth: how many steps :meth:`undo` can revert (each keeps a snapshot).
        compute_dtype: dtype of the core's state (float64 on CPU, float32 on CUDA).
        progress: show progress bars.
        keys: how a step computes its keys: ``"layerwise"`` (one pass over the edited
            layers, prompts cut at the subject, shared context prefixes:
            :class:`otelab.engine.replay.LayerwiseKeys`) or ``"full"`` (a fresh forward per
            layer, the seed code's way; same numbers, for the benchmark and tests).

    Example (a tiny random model; real presets work the same)::

        >>> from otelab.models.loading import tiny_model
        >>> lm = tiny_model("llama")
        >>> cov = {l: torch.eye(lm.adapter.get_W(lm.model, l).shape[1]) for l in lm.layers}   # [d_i, d_i]
        >>> s = EditSession(lm, "memit", "aligned", cov=cov, progress=False)
        >>> rec = s.step([EditRequest("{} lives in", "Alice", "Paris")])
        >>> rec.step, sorted(rec.delta_norms) == [str(l) for l in lm.layers]
        (1, True)
        >>> _ = s.undo()                                  # back to the unedited weights
        >>> all(torch.equal(lm.adapter.get_W(lm.model, l), s.W0[l]) for l in lm.layers), len(s.history)
        (True, 0)
    """

    def __init__(self, loaded, method: str = "memit", mode: str = "aligned", *,
                 cov: Optional[dict[int, Tensor]] = None, corpus=None, n_tokens: Optional[int] = None,
                 undo_depth: int = 3, compute_dtype: Optional[torch.dtype] = None, progress: bool = True,
                 rls_lam: float = RLS_LAM, rect_keep: float = RECT_KEEP, keys: str = "layerwise"):
        check_combo(method, mode)   # names first: nothing is computed for a bad configuration
        if keys not in ("layerwise", "full"):
            raise SessionError(f"keys must be 'layerwise' or 'full', got {keys!r}")
        if isinstance(undo_depth, bool) or not isinstance(undo_depth, int) or undo_depth < 0:
            raise SessionError(f"undo_depth must be an integer >= 0, got {undo_depth!r}")
        self.loaded, self.method, self.mode, self.keys = loaded, method, mode, keys
        self._lk: Optional[LayerwiseKeys] = None
        self.layers = tuple(loaded.preset.layers)
        self.progress, self.undo_depth = progress, int(undo_depth)
        self.compute_dtype = compute_dtype or (torch.float32 if loaded.device.type == "cuda" else torch.float64)
        self.options = dict(rls_lam=float(rls_lam), rect_keep=float(rect_keep))
        adapter, model = loaded.adapter, loaded.model
        n_blocks = adapter.n_layers(model)
        bad = [l for l in self.layers if l >= n_blocks]
        if bad:
            raise SessionError(f"preset {loaded.preset.name!r} edits layers {bad}, but the model has {n_blocks}")
        self.W0 = {l: adapter.get_W(model, l).detach().clone() for l in self.layers}   # [d_o, d_i] each
        # MEMIT's context prefixes come from the unedited model: fixed here, before any edit
        # (a session resumed from disk is built on W0 too, then gets its deltas back)
        self.templates = context_templates(loaded)
        explicit = cov is not None
        corpus_id = None
        if cov is None:
            from otelab.data.corpus import get_corpus
            from otelab.engine.covariance import get_covariance, resolve_n_tokens
            n_tokens = resolve_n_tokens(loaded, n_tokens)
            source = get_corpus(corpus)
            corpus_id = source.id
            cov = get_covariance(loaded, list(self.layers), corpus=source, n_tokens=n_tokens, progress=progress)
        cov = check_cov(cov, self.layers)
        # what a saved session needs to get the same Ĉ0 back (or to refuse)
        self.cov_spec = {"explicit": explicit,
                         "corpus": None if explicit else corpus if corpus is None or isinstance(corpus, str) else corpus_id,
                         "corpus_id": corpus_id, "n_tokens": None if explicit else n_tokens,
                         "sha256": {str(l): session_store.tensor_sha256(cov[l].double()) for l in self.layers}}
        dev = loaded.device
        self.editors: dict[int, ote.SequentialEditor] = {}
        self._cfgs: dict[int, dict] = {}
        for l in self.layers:
            C0_hat = cov[l].to(device=dev, dtype=self.compute_dtype)
            d_i = self.W0[l].shape[1]
            if tuple(C0_hat.shape) != (d_i, d_i):
                raise SessionError(f"covariance of layer {l} has shape {tuple(C0_hat.shape)}, expected [{d_i}, {d_i}]")
            cfg = editor_config(method, mode, loaded.preset, C0_hat, self.W0[l].to(self.compute_dtype),
                                **self.options)
            self._cfgs[l] = dict(cfg, d_i=d_i, dtype=self.compute_dtype, device=dev)
            self.editors[l] = ote.SequentialEditor(**self._cfgs[l])
        self.history: list[StepRecord] = []
        self._undo: list[dict] = []
        # The last step's keys and values per layer ([d_i, n], [d_o, n]) and value optimisation,
        # for inspection (notebook 05); not persisted.
        self.last_kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.last_values = None

    # ------------------------------------------------------------------ state
    @property
    def n_steps(self) -> int:
        return len(self.history)

    @property
    def requests(self) -> list[EditRequest]:
        """Every request edited so far, in order."""
        return [EditRequest(**d) for rec in self.history for d in rec.requests]

    def _snapshot(self) -> dict:
        a = self.loaded.adapter
        return {"W": {l: a.get_W(self.loaded.model, l).detach().clone() for l in self.layers},
                "editors": {l: ({k: v.clone() for k, v in e.state_dict().items()}, e.key_ids())
                            for l, e in self.editors.items()},
                "n_history": len(self.history)}

    def _restore(self, snap: dict) -> None:
        a = self.loaded.adapter
        for l in self.layers:
            a.set_W(self.loaded.model, l, snap["W"][l])
            sd, ids = snap["editors"][l]
            self.editors[l].load_state_dict(sd, ids)
        del self.history[snap["n_history"]:]

    # ------------------------------------------------------------------ stepping
    def step(self, requests: Iterable[EditRequest | dict], values=None) -> StepRecord:
        """Apply one batch of edits.

        Arguments:
            requests: the batch.
            values: optional precomputed :class:`otelab.engine.values.ValueResult` for exactly
                these requests (e.g. to compare editors on the same targets); by default
                the values are optimised here.

        All requests are validated first; if anything fails (a bad request,
        non-finite values, an unsolvable system) the weights and the editor
        states are restored and the error re-raised.

        Returns:
            The :class:`StepRecord` appended to :attr:`history`.
        """
        reqs = validate_all(as_requests(requests), self.loaded.tokenizer)
        if not reqs:
            raise SessionError("step() needs at least one request")
        for r in reqs:
            self._check_storable(r)
            if r.target_true is not None and r.target_new.strip() == str(r.target_true).strip():
                warnings.warn(f"{r.name}: the new target equals the true target; this edit is a no-op",
                              UserWarning, stacklevel=2)
        if values is not None:
            self._check_values(values, len(reqs))
        snap = self._snapshot()
        t0 = time.perf_counter()
        try:
            rec = self._apply(reqs, values)
        except BaseException:
            self._restore(snap)
            raise
        rec.timings["total"] = round(time.perf_counter() - t0, 4)
        self._undo.append(snap)
        if len(self._undo) > self.undo_depth:
            del self._undo[0]
        self.history.append(rec)
        return rec

    @staticmethod
    def _check_storable(r: EditRequest) -> None:
        """A request must come back unchanged from session.json (its case_id, above all)."""
        d = r.to_dict()
        try:
            same = json.loads(json.dumps(d, allow_nan=False)) == d
        except (TypeError, ValueError):
            same = False
        if not same:
            raise SessionError(f"{r.name}: case_id {r.case_id!r} ({type(r.case_id).__name__}) cannot be saved "
                               f"as JSON unchanged; use a str or an int")

    def _check_values(self, val, n: int) -> None:
        """Precomputed values: a ValueResult of this batch's shape, finite, within the preset's clamp."""
        if not isinstance(val, ValueResult):
            raise SessionError(f"values must be an otelab.engine.values.ValueResult (from compute_values), "
                               f"got {type(val).__name__}")
        d_model = self.W0[max(self.layers)].shape[0]
        for name in ("z", "z_init"):
            t = getattr(val, name)
            if not isinstance(t, Tensor) or tuple(t.shape) != (n, d_model):
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise SessionError(f"values.{name} has shape {shape}; this batch of {n} request(s) needs "
                                   f"[{n}, {d_model}] (requests × d_model)")
            if not bool(torch.isfinite(t).all()):
                raise SessionError(f"values.{name} holds NaN or inf")
        z, z0 = val.z.double(), val.z_init.double()                                # [n, d_model]
        limit = self.loaded.preset.clamp_factor * z0.norm(dim=1) * (1 + VALUE_CLAMP_TOL) + 1e-6   # [n]
        norm = (z - z0).norm(dim=1)                                                # [n]
        over = (norm > limit).nonzero().flatten().tolist()
        if over:
            i = over[0]
            raise SessionError(f"values for request {i}: ‖z − z_init‖ = {float(norm[i]):.4g} exceeds the clamp "
                               f"clamp_factor·‖z_init‖ = {float(limit[i]):.4g} of preset "
                               f"{self.loaded.preset.name!r}")

    def _apply(self, reqs: list[EditRequest], val=None) -> StepRecord:
        lm, a = self.loaded, self.loaded.adapter
        templates = self.templates
        t = time.perf_counter()
        if val is None:
            val = compute_values(lm, reqs, templates=templates)
        elif tuple(val.z.shape) != (len(reqs), self.W0[max(self.layers)].shape[0]):
            raise SessionError(f"values for {tuple(val.z.shape)[0]} requests given for a batch of {len(reqs)}")
        timings = {"values": time.perf_counter() - t, "keys": 0.0, "solve": 0.0}
        z_layer = max(self.layers)
        ids = [r.subject for r in reqs] if self.mode == "conflict" else None
        if ids is not None and len(set(ids)) != len(ids):
            raise SessionError(f"conflict mode: a batch may edit each subject once, got {ids}")
        norms, kv = {}, {}
        cd = self.compute_dtype
        z = val.z.to(cd)                                                            # [n, d_o]

        def solve(layer: int, K: Tensor, cur: Tensor) -> Tensor:
            """MEMIT's spread of the residual over the layers; the update itself comes from the core."""
            t = time.perf_counter()
            K = K.to(cd)                                                            # [d_i, n]
            resid = (z - cur.to(cd)).T / (len(self.layers) - self.layers.index(layer))   # [d_o, n]
            W = a.get_W(lm.model, layer).to(cd)                                     # [d_o, d_i]
            V = W @ K + resid                                                       # [d_o, n]
            delta = self.editors[layer].step(K, V, W, ids=ids)                      # [d_o, d_i]
            a.add_(lm.model, layer, delta)
            kv[layer] = (K, V)
            norms[str(layer)] = round(float(delta.norm()), 6)
            timings["solve"] += time.perf_counter() - t
            return delta

        t = time.perf_counter()
        if self.keys == "layerwise":
            self._layerwise(templates).run(reqs, solve)
        else:  # a fresh forward per layer (the seed code's way; kept for the benchmark and the equivalence test)
            for layer in self.layers:
                solve(layer, compute_keys(lm, reqs, layer, templates), subject_hidden(lm, reqs, z_layer))
        timings["keys"] = time.perf_counter() - t - timings["solve"]
        self.last_kv, self.last_values = kv, val
        return StepRecord(step=len(self.history) + 1, requests=[r.to_dict() for r in reqs],
                          delta_norms=norms, value_steps=val.steps, value_losses=val.losses,
                          timings={k: round(v, 4) for k, v in timings.items()})

    def _layerwise(self, templates: list[str]) -> LayerwiseKeys:
        """The fast key pass, kept across steps (it caches the states below the first edited layer)."""
        if self._lk is None or self._lk.templates != templates:
            self._lk = LayerwiseKeys(self.loaded, templates, self.layers, max(self.layers))
        return self._lk

    def undo(self) -> StepRecord:
        """Revert the last step exactly (weights and editor states), up to ``undo_depth`` steps back."""
        if not self.history:
            raise SessionError("nothing to undo")
        if not self._undo:
            raise SessionError(f"cannot undo further: only the last {self.undo_depth} step(s) are kept")
        rec = self.history[-1]
        self._restore(self._undo.pop())
        return rec

    def reset(self) -> None:
        """Restore the original weights bit for bit and empty the editors' states."""
        a = self.loaded.adapter
        for l in self.layers:
            a.set_W(self.loaded.model, l, self.W0[l])
            self.editors[l] = ote.SequentialEditor(**self._cfgs[l])
        self.history.clear()
        self._undo.clear()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the weight deltas, editor states and history to a session folder (:func:`otelab.engine.persist.save`).

        Only ever replaces an otelab session; replacing is atomic (safe under ``kill -9``).

        Returns:
            The absolute path.
        Raises:
            SessionError: naming the path and why it was refused; nothing was written.
        """
        return persist.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, loaded, *, cov: Optional[dict[int, Tensor]] = None,
             progress: bool = True) -> "EditSession":
        """Restore a saved session onto ``loaded``, which must be the same model, unedited
        (:func:`otelab.engine.persist.load`: everything is checked before a weight changes).

        Raises:
            SessionError: naming the file or layer and what does not match.
        """
        return persist.load(cls, path, loaded, cov=cov, progress=progress)

    def delta_norm(self) -> float:
        """Total weight change so far.

        Returns:
            Σ over edited layers of ‖W_l − W0_l‖_F, computed in float64.
        """
        a, model = self.loaded.adapter, self.loaded.model
        return sum(float((a.get_W(model, l).double() - self.W0[l].double()).norm()) for l in self.layers)

    def summary(self) -> dict:
        """Step count, edits so far and the last step's time."""
        last = self.history[-1] if self.history else None
        return {"method": self.method, "mode": self.mode, "steps": self.n_steps,
                "edits": sum(len(r.requests) for r in self.history),
                "last_step_s": last.timings.get("total") if last else None}

    def __repr__(self) -> str:
        return f"EditSession({self.loaded.preset.name!r}, {self.method!r}, {self.mode!r}, steps={self.n_steps})"
