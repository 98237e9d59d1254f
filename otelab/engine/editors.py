"""Session configurations: which method × mode a session accepts and the core editor each layer gets,
read from the registry (:data:`otelab.ote.EDITORS`), and the check of a given covariance."""
from __future__ import annotations

import torch

from otelab import ote
from otelab.engine.store import SessionError

Tensor = torch.Tensor

__all__ = ["METHODS", "SESSION_MODES", "RECT_KEEP", "RLS_LAM", "check_combo", "editor_config", "check_cov"]

METHODS = ote.METHODS_VIEW                 # live: a row registered later is in it
SESSION_MODES = tuple(ote.SESSION_MODES)
RECT_KEEP = ote.EDITORS["rect"].options["rect_keep"]      # the paper's RECT-20 % (Table 6)
RLS_LAM = ote.EDITORS["rlsedit"].options["rls_lam"]


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


def check_cov(cov, layers) -> dict[int, Tensor]:
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
