"""EditSession: sequential editing of a real model, one core editor per layer.

The engine only extracts keys and values and writes updates back. Every
update comes from :class:`otelab.ote.SequentialEditor`; each method × mode is a
configuration of it (:func:`editor_config`), not new math.

=============  ===================================================================
method         core configuration per layer (Ĉ0: per-token covariance, λ: cov_weight)
=============  ===================================================================
``memit``      ``C0 = λ Ĉ0``, ``P = I``, Tikhonov 0
``alphaedit``  ``P`` = null-space projector of Ĉ0, no C0, Tikhonov = ``alphaedit_l2``
``prune``      MEMIT + :class:`otelab.ote.Prune` (σ_max of the unedited W)
``rect``       MEMIT + :class:`otelab.ote.Rect` (top 20% relative change)
``rlsedit``    ``C0 = λ Ĉ0``, Tikhonov ``rls_lam``, Woodbury recursion (mode ``rls``)
=============  ===================================================================

Modes: ``aligned`` (OTE-aligned; Algorithm 1 for PRUNE/RECT), ``naive`` (a repeated
one-time edit), ``no-ec`` (aligned but without Algorithm 1's error correction;
PRUNE/RECT only), ``memorize-nullspace`` (Eq. 3), ``memorize-full`` (Eq. 4),
``conflict`` (Prop. 3.5: a re-edited subject takes its latest target).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from otelab import ote
from otelab.keys import compute_keys, context_templates, subject_hidden
from otelab.replay import LayerwiseKeys
from otelab.requests import EditRequest, as_requests, validate_all
from otelab.values import compute_values

Tensor = torch.Tensor

METHODS = ("memit", "alphaedit", "prune", "rect", "rlsedit")
SESSION_MODES = ("aligned", "naive", "no-ec", "memorize-nullspace", "memorize-full", "conflict")
RECT_KEEP = 0.2
RLS_LAM = 1.0
FORMAT_VERSION = 1


class SessionError(ValueError):
    """A session could not be created, stepped or loaded. Nothing was changed."""


@dataclass
class StepRecord:
    """What one step did."""

    step: int
    requests: list[dict]
    delta_norms: dict[str, float]          # layer -> ‖Δ‖_F
    value_steps: int
    value_losses: list[list[float]]        # per optimisation step, per request NLL
    timings: dict[str, float]              # seconds: values, keys, solve, total


def editor_config(method: str, mode: str, preset, C0_hat: Tensor, W0: Tensor, *,
                  rls_lam: float = RLS_LAM, rect_keep: float = RECT_KEEP) -> dict:
    """The ``SequentialEditor`` keyword arguments for one layer.

    Arguments:
        method, mode: see the module docstring.
        preset: supplies ``cov_weight``, ``nullspace_threshold``, ``alphaedit_l2``.
        C0_hat: per-token covariance of the preserved keys ``[d_i, d_i]``.
        W0: the unedited weights ``[d_o, d_i]`` (PRUNE's σ_max, RECT's reference).
    Returns:
        ``dict(mode=..., P=..., C0=..., lam=..., post=..., correct=...)``.
    """
    if method not in METHODS:
        raise SessionError(f"unknown method {method!r}; expected one of {METHODS}")
    if mode not in SESSION_MODES:
        raise SessionError(f"unknown mode {mode!r}; expected one of {SESSION_MODES}")
    if mode == "no-ec" and method not in ("prune", "rect"):
        raise SessionError("mode 'no-ec' (no error correction) applies to prune and rect only")
    if mode.startswith("memorize") or mode == "conflict":
        if method not in ("memit", "alphaedit"):
            raise SessionError(f"mode {mode!r} is defined for memit and alphaedit, not {method!r}")
    if mode == "memorize-nullspace" and method != "alphaedit":
        raise SessionError("mode 'memorize-nullspace' is AlphaEdit's shortcut (Eq. 3): use method 'alphaedit'")
    lam_cov = preset.cov_weight
    cfg: dict[str, Any] = dict(P=None, C0=lam_cov * C0_hat, lam=0.0, post=None, correct=True)
    if method == "alphaedit":
        cfg.update(P=ote.nullspace_projector(C0_hat, preset.nullspace_threshold), C0=None,
                   lam=preset.alphaedit_l2)
        if mode == "memorize-full":  # Eq. 4 needs the preserved covariance the projector stands for
            cfg["C0"] = lam_cov * C0_hat
    elif method == "rlsedit":
        cfg["lam"] = rls_lam
    elif method == "prune":
        cfg["post"] = ote.Prune.for_weights(W0)
    elif method == "rect":
        cfg["post"] = ote.Rect(W0.clone(), rect_keep)
    core_mode = {"aligned": "aligned", "no-ec": "aligned", "naive": "naive", "conflict": "conflict",
                 "memorize-nullspace": "memorize-nullspace", "memorize-full": "memorize-full"}[mode]
    if method == "rlsedit" and mode == "aligned":
        core_mode = "rls"
    cfg["mode"] = core_mode
    cfg["correct"] = mode != "no-ec"
    return cfg


class EditSession:
    """Sequential editing of one model with one method and mode.

    Arguments:
        loaded: a :class:`otelab.models.LoadedModel` (edited in place).
        method: ``memit``, ``alphaedit``, ``prune``, ``rect`` or ``rlsedit``.
        mode: ``aligned``, ``naive``, ``no-ec``, ``memorize-nullspace``, ``memorize-full``, ``conflict``.
        cov: ``{layer: Ĉ0}`` per-token covariances; default computed (and cached) by
            :func:`otelab.covariance.get_covariance` from ``corpus`` and ``n_tokens``.
        corpus, n_tokens: for the default covariance.
        undo_depth: how many steps :meth:`undo` can revert (each keeps a snapshot).
        compute_dtype: dtype of the core's state (float64 on CPU, float32 on CUDA).
        progress: show progress bars.
        keys: how a step computes its keys: ``"layerwise"`` (one pass over the edited
            layers, prompts cut at the subject, shared context prefixes:
            :class:`otelab.replay.LayerwiseKeys`) or ``"full"`` (a fresh forward per
            layer, the seed code's way; same numbers, for the benchmark and tests).

    Example (a tiny random model; real presets work the same)::

        >>> from otelab.models import tiny_model
        >>> lm = tiny_model("llama")
        >>> s = EditSession(lm, "memit", "aligned", cov={l: torch.eye(64) for l in lm.layers})
        >>> rec = s.step([EditRequest("{} lives in", "Alice", "Paris")])
    """

    def __init__(self, loaded, method: str = "memit", mode: str = "aligned", *,
                 cov: Optional[dict[int, Tensor]] = None, corpus=None, n_tokens: Optional[int] = None,
                 undo_depth: int = 3, compute_dtype: Optional[torch.dtype] = None, progress: bool = True,
                 rls_lam: float = RLS_LAM, rect_keep: float = RECT_KEEP, keys: str = "layerwise"):
        if keys not in ("layerwise", "full"):
            raise SessionError(f"keys must be 'layerwise' or 'full', got {keys!r}")
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
        if cov is None:
            from otelab.covariance import get_covariance
            cov = get_covariance(loaded, list(self.layers), corpus=corpus, n_tokens=n_tokens, progress=progress)
        missing = [l for l in self.layers if l not in cov]
        if missing:
            raise SessionError(f"no covariance given for layer(s) {missing}")
        self.cov_spec = {"corpus": corpus if corpus is None or isinstance(corpus, str) else getattr(corpus, "id", None),
                         "n_tokens": n_tokens}
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
            values: optional precomputed :class:`otelab.values.ValueResult` for exactly
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

    def _apply(self, reqs: list[EditRequest], val=None) -> StepRecord:
        lm, a = self.loaded, self.loaded.adapter
        templates = context_templates(lm)
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
                "options": self.options, "undo_depth": self.undo_depth, "cov_spec": self.cov_spec,
                "key_ids": {str(l): e.key_ids() for l, e in self.editors.items()},
                "history": [asdict(r) for r in self.history]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the weight deltas, editor states and history to a folder (atomically).

        Files: ``session.json`` (settings, history) and ``state.safetensors``
        (per layer: ``delta.L`` = W − W0 in float64, and the editor's tensors).
        """
        from safetensors.torch import save_file

        path = Path(path)
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".otelab-session-", dir=path.parent))
        try:
            save_file(tensors, str(tmp / "state.safetensors"))
            (tmp / "session.json").write_text(json.dumps(meta, indent=1))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, loaded, *, cov: Optional[dict[int, Tensor]] = None,
             progress: bool = True) -> "EditSession":
        """Restore a saved session onto ``loaded`` (which must be the same, unedited model).

        Raises:
            SessionError: the folder is not a session, or the model differs.
        """
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / "session.json").read_text())
            tensors = load_file(str(path / "state.safetensors"))
        except (OSError, ValueError) as err:
            raise SessionError(f"{path} is not a readable otelab session: {err}") from None
        if meta.get("format") != FORMAT_VERSION:
            raise SessionError(f"{path}: session format {meta.get('format')} is not {FORMAT_VERSION}")
        if meta["fingerprint"] != loaded.fingerprint:
            raise SessionError(f"{path} was saved from a different model (fingerprint {meta['fingerprint'][:12]}…, "
                               f"this model {loaded.fingerprint[:12]}…); refusing to load it")
        if tuple(meta["layers"]) != tuple(loaded.preset.layers):
            raise SessionError(f"{path} edits layers {meta['layers']}, the preset edits {list(loaded.preset.layers)}")
        dtype = getattr(torch, meta["compute_dtype"])
        spec = meta.get("cov_spec") or {}
        s = cls(loaded, meta["method"], meta["mode"], cov=cov, corpus=spec.get("corpus"), n_tokens=spec.get("n_tokens"),
                progress=progress, undo_depth=meta["undo_depth"], compute_dtype=dtype, **meta["options"])
        a = loaded.adapter
        for l in s.layers:
            sd = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"editor.{l}.")}
            s.editors[l].load_state_dict(sd, meta["key_ids"].get(str(l)) or None)
            W = (s.W0[l].double() + tensors[f"delta.{l}"].to(s.W0[l].device)).to(s.W0[l].dtype)
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
