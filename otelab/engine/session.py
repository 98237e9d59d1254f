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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch

from otelab import ote

from otelab.engine import store as session_store
from otelab.engine.keys import compute_keys, context_templates, subject_hidden
from otelab.engine.replay import LayerwiseKeys
from otelab.data.requests import EditRequest, as_requests, validate_all
from otelab.engine.store import SessionError
from otelab.engine.values import ValueResult, compute_values

Tensor = torch.Tensor

METHODS = ote.METHODS_VIEW                 # live: a row registered later is in it
SESSION_MODES = tuple(ote.SESSION_MODES)
RECT_KEEP = ote.EDITORS["rect"].options["rect_keep"]      # the paper's RECT-20 % (Table 6)
RLS_LAM = ote.EDITORS["rlsedit"].options["rls_lam"]
FORMAT_VERSION = 2
VALUE_CLAMP_TOL = 1e-3      # relative slack on the value optimisation's norm clamp (float rounding)


@dataclass
class StepRecord:
    """What one step did."""

    step: int
    requests: list[dict]
    delta_norms: dict[str, float]          # layer -> ‖Δ‖_F
    value_steps: int
    value_losses: list[list[float]]        # per optimisation step, per request NLL
    timings: dict[str, float]              # seconds: values, keys, solve, total


def check_combo(method: str, mode: str) -> None:
    """Raise :class:`SessionError` unless ``method`` × ``mode`` is a row of the registry (:func:`otelab.ote.check_editor`).

    Cheap (no tensors): the command line and :class:`EditSession` call it before loading anything.
    """
    try:
        ote.check_editor(method, mode)
    except ote.EditError as err:
        raise SessionError(str(err)) from None


def editor_config(method: str, mode: str, preset, C0_hat: Tensor, W0: Tensor, *,
                  rls_lam: float = RLS_LAM, rect_keep: float = RECT_KEEP) -> dict:
    """The ``SequentialEditor`` keyword arguments for one layer (:func:`otelab.ote.editor_kwargs`).

    Arguments:
        method, mode: see the module docstring.
        preset: supplies μ (``cov_weight``), ``nullspace_threshold``, ``alphaedit_l2``.
        C0_hat: per-token covariance of the preserved keys ``[d_i, d_i]``.
        W0: the unedited weights ``[d_o, d_i]`` (PRUNE's σ_max, RECT's reference).
        rls_lam, rect_keep: the options of RLSEdit and RECT (a method reads only its own).
    Returns:
        ``dict(mode=..., P=..., C0=..., lam=..., post=..., correct=...)``.
    """
    check_combo(method, mode)
    return ote.editor_kwargs(method, mode, C0_hat, W0, mu=preset.cov_weight, threshold=preset.nullspace_threshold,
                             l2=preset.alphaedit_l2, rls_lam=rls_lam, rect_keep=rect_keep)


def _check_cov(cov, layers) -> dict[int, Tensor]:
    """``{layer: Ĉ0}`` as finite torch tensors (numpy arrays are converted); raise naming the layer."""
    if not isinstance(cov, dict):
        raise SessionError(f"cov must be a dict {{layer: [d_i, d_i] matrix}}, got {type(cov).__name__}")
    missing = [l for l in layers if l not in cov]
    if missing:
        raise SessionError(f"no covariance given for layer(s) {missing}")
    out = {}
    for l in layers:
        c = cov[l]
        if not isinstance(c, Tensor):
            try:
                c = torch.as_tensor(c)
            except (TypeError, ValueError, RuntimeError):
                raise SessionError(f"covariance of layer {l} is a {type(c).__name__}, not a tensor or array") from None
        if not c.is_floating_point():
            raise SessionError(f"covariance of layer {l} has dtype {c.dtype}; expected a float matrix")
        if not bool(torch.isfinite(c).all()):
            raise SessionError(f"covariance of layer {l} holds NaN or inf")
        out[l] = c
    return out


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
        cov = _check_cov(cov, self.layers)
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
    def _meta(self) -> dict:
        p = self.loaded.preset
        return {"format": FORMAT_VERSION, "method": self.method, "mode": self.mode,
                "layers": list(self.layers), "preset": p.to_dict() if hasattr(p, "to_dict") else asdict(p),
                "fingerprint": self.loaded.fingerprint, "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
                "W0_sha256": {str(l): session_store.tensor_sha256(w) for l, w in self.W0.items()},
                "options": self.options, "undo_depth": self.undo_depth, "cov_spec": self.cov_spec,
                "templates": list(self.templates),
                "key_ids": {str(l): e.key_ids() for l, e in self.editors.items()},
                "history": [asdict(r) for r in self.history]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weight deltas, editor states and history to a session folder.

        Files: ``session.json`` (settings, history, a hash of each layer's W0, what the
        covariance was, a checksum of every tensor and of itself) and ``state.safetensors``
        (per layer: ``delta.L`` = W − W0 in float64, and the editor's tensors).

        Only ever replaces an otelab session: the working directory, a folder above it, a
        file and a non-empty folder that is not a session are refused. Replacing is atomic:
        after a crash or ``kill -9`` at any instant, ``path`` holds the complete old or the
        complete new session (see :mod:`otelab.engine.store`).

        Returns:
            The absolute path.
        Raises:
            SessionError: naming the path and why it was refused; nothing was written.
        """
        session_store.check_target(path)
        tensors = {}
        a = self.loaded.adapter
        for l in self.layers:
            W = a.get_W(self.loaded.model, l).detach()
            tensors[f"delta.{l}"] = (W.double() - self.W0[l].double()).cpu().contiguous()
            for k, v in self.editors[l].state_dict().items():
                tensors[f"editor.{l}.{k}"] = v.detach().cpu().contiguous()
        meta = self._meta()
        for l, ids in meta["key_ids"].items():
            if any(not isinstance(i, (str, int)) for i in ids):
                raise SessionError(f"layer {l}: conflict ids must be str or int to be saved")
        return session_store.write(path, meta, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike, loaded, *, cov: Optional[dict[int, Tensor]] = None,
             progress: bool = True) -> "EditSession":
        """Restore a saved session onto ``loaded``, which must be the same model, unedited.

        Checked before anything changes: every file against its checksums; the model's
        fingerprint; the *current* weights of each edited layer against the hash of the W0 the
        session was saved from (so a model that is already edited, e.g. by an earlier load, is
        refused instead of being edited twice); and the covariance: without ``cov`` the
        recorded one is rebuilt (corpus, token count) and must hash the same; a session made
        with an explicit ``cov`` needs the same ``cov`` again.

        Raises:
            SessionError: naming the file or layer and what does not match.
        """
        meta, tensors = session_store.read(path)
        path = Path(path)
        if meta.get("format") != FORMAT_VERSION:
            raise SessionError(f"{path}: session format {meta.get('format')} is not {FORMAT_VERSION}")
        if meta["fingerprint"] != loaded.fingerprint:
            raise SessionError(f"{path} was saved from a different model (fingerprint {meta['fingerprint'][:12]}…, "
                               f"this model {loaded.fingerprint[:12]}…); refusing to load it")
        if tuple(meta["layers"]) != tuple(loaded.preset.layers):
            raise SessionError(f"{path} edits layers {meta['layers']}, the preset edits {list(loaded.preset.layers)}")
        a = loaded.adapter
        for l in meta["layers"]:
            if session_store.tensor_sha256(a.get_W(loaded.model, l)) != meta["W0_sha256"][str(l)]:
                raise SessionError(f"{path}: layer {l} of this model is not the unedited W0 the session was saved "
                                   f"from: the model is already edited (by an earlier load or another session). "
                                   f"Load it onto a freshly loaded model, or reset() the session that edited it")
        spec = meta["cov_spec"]
        if spec["explicit"] and cov is None:
            raise SessionError(f"{path} was made with an explicit cov=; pass the same cov= to load it")
        dtype = getattr(torch, meta["compute_dtype"])
        s = cls(loaded, meta["method"], meta["mode"], cov=cov, corpus=spec["corpus"], n_tokens=spec["n_tokens"],
                progress=progress, undo_depth=meta["undo_depth"], compute_dtype=dtype, **meta["options"])
        differ = [l for l, h in spec["sha256"].items() if s.cov_spec["sha256"][l] != h]
        if differ:
            how = "the given cov" if cov is not None else \
                f"the rebuilt covariance (corpus {spec['corpus_id']}, {spec['n_tokens']} tokens)"
            raise SessionError(f"{path}: {how} differs from the session's for layer(s) {', '.join(differ)}; "
                               f"pass the covariance the session was made with as cov=")
        if "templates" in meta and list(meta["templates"]) != s.templates:
            raise SessionError(f"{path}: the session keyed its edits with context templates "
                               f"{meta['templates']!r}, this model gives {s.templates!r}")
        new_W = {}
        try:   # everything is checked before the model's weights change
            for l in s.layers:
                sd = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"editor.{l}.")}
                s.editors[l].load_state_dict(sd, meta["key_ids"].get(str(l)) or None)
                delta = tensors[f"delta.{l}"]                                      # [d_o, d_i]
                if delta.shape != s.W0[l].shape:
                    raise ValueError(f"delta.{l} has shape {tuple(delta.shape)}, W is {tuple(s.W0[l].shape)}")
                new_W[l] = (s.W0[l].double() + delta.to(s.W0[l].device)).to(s.W0[l].dtype)
        except (KeyError, ValueError, RuntimeError) as err:
            raise SessionError(f"{path}: the saved state does not fit this session ({err})") from None
        for l, W in new_W.items():
            a.set_W(loaded.model, l, W)
        s.history = [StepRecord(**r) for r in meta["history"]]
        return s

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
