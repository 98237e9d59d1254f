"""Saving and loading an :class:`otelab.engine.session.EditSession`: the step record, what a session
folder holds, and everything a load checks before a single weight changes."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from otelab.engine import store as session_store
from otelab.engine.store import SessionError

Tensor = torch.Tensor

__all__ = ["FORMAT_VERSION", "StepRecord", "session_meta", "save", "load"]

FORMAT_VERSION = 2


@dataclass
class StepRecord:
    """What one step did."""

    step: int
    requests: list[dict]
    delta_norms: dict[str, float]          # layer -> ‖Δ‖_F
    value_steps: int
    value_losses: list[list[float]]        # per optimisation step, per request NLL
    timings: dict[str, float]              # seconds: values, keys, solve, total


def session_meta(session) -> dict:
    """What ``session.json`` records of a session (settings, W0 hashes, history), checksums aside."""
    p = session.loaded.preset
    return {"format": FORMAT_VERSION, "method": session.method, "mode": session.mode,
            "layers": list(session.layers), "preset": p.to_dict() if hasattr(p, "to_dict") else asdict(p),
            "fingerprint": session.loaded.fingerprint, "compute_dtype": str(session.compute_dtype).replace("torch.", ""),
            "W0_sha256": {str(l): session_store.tensor_sha256(w) for l, w in session.W0.items()},
            "options": session.options, "undo_depth": session.undo_depth, "cov_spec": session.cov_spec,
            "templates": list(session.templates),
            "key_ids": {str(l): e.key_ids() for l, e in session.editors.items()},
            "history": [asdict(r) for r in session.history]}


def save(session, path: str | os.PathLike) -> Path:
    """Write ``session``'s weight deltas, editor states and history to the folder ``path``.

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
    a = session.loaded.adapter
    for l in session.layers:
        W = a.get_W(session.loaded.model, l).detach()
        tensors[f"delta.{l}"] = (W.double() - session.W0[l].double()).cpu().contiguous()
        for k, v in session.editors[l].state_dict().items():
            tensors[f"editor.{l}.{k}"] = v.detach().cpu().contiguous()
    meta = session_meta(session)
    for l, ids in meta["key_ids"].items():
        if any(not isinstance(i, (str, int)) for i in ids):
            raise SessionError(f"layer {l}: conflict ids must be str or int to be saved")
    return session_store.write(path, meta, tensors)


def load(cls, path: str | os.PathLike, loaded, *, cov: Optional[dict[int, Tensor]] = None,
         progress: bool = True):
    """Restore a saved session onto ``loaded``, which must be the same model, unedited.

    Checked before anything changes: every file against its checksums; the model's
    fingerprint; the *current* weights of each edited layer against the hash of the W0 the
    session was saved from (so a model that is already edited, e.g. by an earlier load, is
    refused instead of being edited twice); and the covariance: without ``cov`` the
    recorded one is rebuilt (corpus, token count) and must hash the same; a session made
    with an explicit ``cov`` needs the same ``cov`` again.

    Arguments:
        cls: the session class to build (:class:`otelab.engine.session.EditSession`).
        path: the session folder; loaded: the model, unedited; cov: the covariance if the session was
            made with an explicit one; progress: progress bars while the covariance is rebuilt.
    Returns:
        The restored session, its edits applied to ``loaded``.
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
