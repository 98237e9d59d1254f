r"""The linear-algebra core: every update rule of the paper, once.

Notation (the paper's): ``W ∈ R^{d_o×d_i}`` is the edited MLP output matrix,
keys ``K ∈ R^{d_i×n}`` are its inputs at the subjects' last tokens, values
``V ∈ R^{d_o×n}`` the outputs that make the model say the new facts. ``C0`` is
the already weighted second moment of the preserved keys, ``C0 = μ K0 K0ᵀ``
(μ is the C0 weight: the engine's and the presets' ``cov_weight``, which the
paper's App. B.4 calls λ); ``P`` a ``d_i×d_i`` matrix (AlphaEdit's null-space
projector, or ``I``); ``λ`` (``lam``) always the Tikhonov weight. The residual of
a batch against the current weights is ``R_t = V_t − W_{t−1} K_t``.

Every optimum here is the solution of one normal equation (Prop. 3.2)::

    Δ · A = B,     A = (C0 + K Kᵀ) P + λ I,     B = R Kᵀ P

With ``P = I, λ = 0`` it is MEMIT's one-time edit (OTE); with ``P`` the
null-space projector of C0 (so ``C0 P ≈ 0``) and ``C0`` left out it is
AlphaEdit; with ``P = I, C0 = μ K0K0ᵀ`` it is the soft-constrained RLSEdit
objective ``Σ‖WKτ−Vτ‖² + λ‖W−W0‖² + μ‖(W−W0)K0‖²``.

The sequential rules differ only in what they carry from step to step:

=====================  =========================================================
``aligned``            the accumulated matrix ``A_t`` (Remark A.1): each step is
                       the difference of two OTE optima (Lemma 3.1, Prop. 3.2)
``naive``              nothing: a repeated one-time edit (the paper's ablation)
``memorize-nullspace`` nothing: Eq. 3, the null-space shortcut
``memorize-full``      ``S = Σ Δτ``: Eq. 4 as printed (λ damps the step)
``memorize-recentred`` ``S = Σ Δτ``: Eq. 32, the OTE of the latest task (λ pulls
                       ``W`` back to ``W0``); equals Eq. 4 when λ = 0
``conflict``           the active constraint set (Prop. 3.5; Eq. 30 with the
                       re-valued term read as ``v_resolved − v_old``)
=====================  =========================================================

Post-processing operators (PRUNE, RECT) are corrected by Algorithm 1, which
carries the error ``E_t`` so that ``W_t + E_t`` stays on the OTE path (Prop. A.3).
Solves use Cholesky or LU, never an explicit inverse (the one exception is
RLSEdit, whose state *is* ``A⁻¹`` by definition), and always run in float64 on
whatever device the state lives on: the ``d_i×d_i`` systems of a real model reach
cond(A) ≈ 1e7, where a float32 solve is off by percents (MEMIT's code also
solves in float64). Inputs are cast up for the solve and the result back.

Where otelab departs from a formula as printed in the paper, the docstring of
the function that implements it says so: Eq. 30 (:func:`conflict_update`),
Algorithm 1's error variable (:func:`corrected_step`), PRUNE applied per step
(:func:`prune`) and RECT's kept fraction (:func:`rect`).

The named editors (MEMIT, AlphaEdit, PRUNE, RECT, RLSEdit) are rows of one table,
:data:`EDITORS`: per session mode (:data:`SESSION_MODES`), the core mode above, the
error-correction flag, the post-processing operator, the defaults (RECT keeps 20 %,
RLSEdit's λ = 1) and the paper row it reproduces. :func:`editor_kwargs` turns a row
into :class:`SequentialEditor` arguments; :func:`register_editor` adds a row, which
every layer above (engine, toy, workbench, command line, demo) then offers.
"""
from __future__ import annotations

import math
from collections import abc
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Hashable, Mapping, Optional, Sequence

import torch

Tensor = torch.Tensor

__all__ = [
    "EditError", "SolveError",
    "system_matrix", "solve_normal", "ote_update", "aligned_update", "alphaedit_update",
    "naive_update", "memorize_latest_nullspace", "memorize_latest_full", "memorize_latest_recentred",
    "omitted_term",
    "nullspace_projector", "prune", "rect", "Prune", "Rect", "corrected_step",
    "conflict_update", "resolve_latest", "resolve_first", "resolve_mean", "resolve_forget",
    "rls_init", "rls_step", "SequentialEditor", "MODES",
    "SessionMode", "SESSION_MODES", "ModeSpec", "mode_spec", "EditorSpec", "EDITORS", "register_editor",
    "unregister_editor", "post_modes", "methods", "check_editor", "valid_modes", "display_name", "editor_kwargs",
    "preserve_cov", "preserve_nullspace", "preserve_rls", "METHODS_VIEW", "DISPLAY_NAMES",
]


class EditError(ValueError):
    """Bad input to a rule: wrong shapes, non-finite values. Nothing was changed."""


class SolveError(EditError):
    """The normal equation of a step could not be solved. Nothing was changed."""


# --------------------------------------------------------------------------- checks

def _check_finite(**tensors: Optional[Tensor]) -> None:
    for name, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            raise EditError(f"{name} contains non-finite values (NaN or inf)")


def _check_shapes(W: Optional[Tensor], K: Tensor, V: Optional[Tensor] = None,
                  P: Optional[Tensor] = None, C0: Optional[Tensor] = None) -> tuple[int, int, int]:
    """Check the paper's shapes; return (d_o, d_i, n). Error messages name the tensors."""
    if K.ndim != 2:
        raise EditError(f"K must be 2-D [d_i, n], got shape {tuple(K.shape)}")
    d_i, n = K.shape
    if n == 0:
        raise EditError("K has no columns: a batch needs at least one key")
    d_o = None
    if W is not None:
        if W.ndim != 2 or W.shape[1] != d_i:
            raise EditError(f"W has shape {tuple(W.shape)} but K has shape {tuple(K.shape)}: "
                            f"W must be [d_o, d_i] with d_i = {d_i}")
        d_o = W.shape[0]
    if V is not None:
        if V.ndim != 2 or V.shape[1] != n:
            raise EditError(f"V has shape {tuple(V.shape)} but K has shape {tuple(K.shape)}: "
                            f"V must be [d_o, n] with n = {n}")
        if d_o is not None and V.shape[0] != d_o:
            raise EditError(f"V has shape {tuple(V.shape)} but W has shape {tuple(W.shape)}: "
                            f"V must be [d_o, n] with d_o = {d_o}")
        d_o = V.shape[0]
    for name, M in (("P", P), ("C0", C0)):
        if M is not None and tuple(M.shape) != (d_i, d_i):
            raise EditError(f"{name} has shape {tuple(M.shape)}, expected [d_i, d_i] = [{d_i}, {d_i}]")
    _check_finite(W=W, K=K, V=V, P=P, C0=C0)
    return d_o, d_i, n


def _eye(d: int, like: Tensor) -> Tensor:
    return torch.eye(d, dtype=like.dtype, device=like.device)


def _rp(M: Tensor, P: Optional[Tensor]) -> Tensor:
    """Right-multiply by P, where ``None`` stands for the identity."""
    return M if P is None else M @ P


# --------------------------------------------------------------------------- the normal equation

def system_matrix(K: Optional[Tensor], *, P: Optional[Tensor] = None, C0: Optional[Tensor] = None,
                  lam: float = 0.0, d_i: Optional[int] = None, like: Optional[Tensor] = None) -> Tensor:
    """The left-hand matrix of the normal equation, ``A = (C0 + K Kᵀ) P + λ I`` (Prop. 3.2).

    Arguments:
        K: keys ``[d_i, n]``, or ``None`` for none.
        P: ``[d_i, d_i]`` or ``None`` (identity).
        C0: preserved second moment ``[d_i, d_i]`` or ``None`` (zero).
        lam: Tikhonov weight λ ≥ 0.
        d_i, like: size and dtype/device when ``K`` is ``None``.
    Returns:
        ``A``, ``[d_i, d_i]``.
    """
    ref = K if K is not None else (C0 if C0 is not None else like)
    if ref is None:
        raise EditError("system_matrix needs K, C0 or `like` to know the size")
    d = ref.shape[0] if d_i is None else d_i
    M = torch.zeros(d, d, dtype=ref.dtype, device=ref.device)
    if C0 is not None:
        M = M + C0
    if K is not None:
        M = M + K @ K.T                                        # [d_i, d_i]
    A = _rp(M, P)
    if lam:
        A = A + lam * _eye(d, A)
    return A


def solve_normal(B: Tensor, A: Tensor, *, what: str = "the normal equation") -> Tensor:
    """Solve ``Δ A = B`` for Δ without forming ``A⁻¹``, in float64 on any device.

    Uses Cholesky when ``A`` is symmetric positive definite (P = I), LU otherwise.
    ``A`` and ``B`` are cast to float64 for the solve and Δ is returned in ``B``'s
    dtype: a float32 state (the engine on a GPU) then loses only the final
    rounding, not ``cond(A) · 6e-8``.

    Arguments:
        B: right-hand side ``[d_o, d_i]``.
        A: system matrix ``[d_i, d_i]``.
    Returns:
        Δ ``[d_o, d_i]``, dtype of ``B``.
    Raises:
        SolveError: the system is singular or the solution is not finite.
    """
    out_dtype, out_device = B.dtype, B.device
    if out_device.type == "mps":                               # MPS has no float64: solve on the CPU
        A, B = A.cpu(), B.cpu()
    A, B = A.to(torch.float64), B.to(torch.float64)
    return _solve64(B, A, what).to(dtype=out_dtype, device=out_device)


def _solve64(B: Tensor, A: Tensor, what: str) -> Tensor:
    tol = 10 * torch.finfo(A.dtype).eps  # a pivot ratio below this is singular to working precision
    singular = SolveError(f"could not solve {what}: the system matrix is singular to working precision. "
                          f"Add a Tikhonov weight (lam > 0) or a preserved covariance C0.")
    if torch.equal(A, A.T):
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            d = L.diagonal().abs()
            if float(d.min()) ** 2 < tol * float(d.max()) ** 2:
                raise singular
            # Δ A = B  ⇔  A Δᵀ = Bᵀ (A symmetric)
            X = torch.cholesky_solve(B.T, L).T
            if bool(torch.isfinite(X).all()):
                return X
    # X A = B  ⇔  Aᵀ Xᵀ = Bᵀ
    LU, piv, info = torch.linalg.lu_factor_ex(A.T)
    d = LU.diagonal().abs()
    if int(info) != 0 or float(d.min()) < tol * float(d.max()):
        raise singular
    X = torch.linalg.lu_solve(LU, piv, B.T).T
    if not bool(torch.isfinite(X).all()):
        raise SolveError(f"could not solve {what}: the solution is not finite (ill-conditioned system)")
    return X


# --------------------------------------------------------------------------- one-time edit

def ote_update(W0: Tensor, K: Tensor, V: Tensor, *, P: Optional[Tensor] = None,
               C0: Optional[Tensor] = None, lam: float = 0.0) -> Tensor:
    """The one-time-edit optimum ``Δ_total`` for the objective ``(P, λ, C0)`` (Prop. 3.2).

    Solves ``Δ [(C0 + K Kᵀ) P + λ I] = (V − W0 K) Kᵀ P``. With ``P = I, λ = 0``
    this is MEMIT's OTE; applied to the current weights and the latest batch
    only, it is the naive sequential rule.

    Arguments:
        W0: weights before the edit ``[d_o, d_i]``.
        K: all keys to edit ``[d_i, n]``; V: their values ``[d_o, n]``.
        P, C0, lam: the objective (see the module docstring).
    Returns:
        ``Δ_total`` ``[d_o, d_i]``.

    Example (the edit solves the normal equation; with ``C0`` it also keeps the preserved keys in mind)::

        >>> g = torch.Generator().manual_seed(0)
        >>> W0, K, V = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(3, 5), (5, 2), (3, 2)])
        >>> C0 = torch.eye(5, dtype=torch.float64)                           # [d_i, d_i]
        >>> D = ote_update(W0, K, V, C0=C0)                                  # [d_o, d_i]
        >>> D.shape
        torch.Size([3, 5])
        >>> torch.allclose(D @ (C0 + K @ K.T), (V - W0 @ K) @ K.T)
        True
    """
    _check_shapes(W0, K, V, P, C0)
    R = V - W0 @ K                                             # [d_o, n]
    return solve_normal(R @ _rp(K.T, P), system_matrix(K, P=P, C0=C0, lam=lam), what="the OTE")


# --------------------------------------------------------------------------- sequential rules

def aligned_update(W: Tensor, K: Tensor, V: Tensor, A_prev: Tensor, *,
                   P: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """One OTE-aligned sequential step (Remark A.1, Prop. 3.2).

    Carries the accumulated matrix ``A_{t−1} = (C0 + K_{1:t−1}K_{1:t−1}ᵀ) P + λ I``
    and solves ``Δ_t A_t = R_t K_tᵀ P`` with ``A_t = A_{t−1} + K_t K_tᵀ P``.
    Then ``Σ_τ Δ_τ = Δ_total,t`` (Lemma 3.1): every step is the difference of
    two OTE optima.

    Arguments:
        W: current weights ``W_{t−1}`` ``[d_o, d_i]`` (for Algorithm 1, ``W_{t−1} + E_{t−1}``).
        K, V: the new batch ``[d_i, n]``, ``[d_o, n]``.
        A_prev: ``A_{t−1}`` ``[d_i, d_i]``; at t = 1 use ``system_matrix(None, P=P, C0=C0, lam=lam)``.
        P: the same P as in ``A_prev``.
    Returns:
        ``(Δ_t, A_t)``.

    Example (Lemma 3.1: two aligned steps add up to the one-time edit of both batches)::

        >>> g = torch.Generator().manual_seed(0)
        >>> W0, K1, V1, K2, V2 = (torch.randn(*s, generator=g, dtype=torch.float64)
        ...                       for s in [(3, 5), (5, 2), (3, 2), (5, 2), (3, 2)])
        >>> C0 = torch.eye(5, dtype=torch.float64)
        >>> A = system_matrix(None, C0=C0, d_i=5, like=W0)                   # A_0 = C0
        >>> D1, A = aligned_update(W0, K1, V1, A)
        >>> D2, A = aligned_update(W0 + D1, K2, V2, A)
        >>> total = ote_update(W0, torch.cat([K1, K2], 1), torch.cat([V1, V2], 1), C0=C0)
        >>> torch.allclose(D1 + D2, total)
        True
    """
    _check_shapes(W, K, V, P, A_prev)
    KtP = _rp(K.T, P)                                          # [n, d_i]; O(d_i² n), not O(d_i³)
    A = A_prev + K @ KtP                                       # [d_i, d_i]
    R = V - W @ K                                              # [d_o, n]
    return solve_normal(R @ KtP, A, what="the aligned step"), A


def alphaedit_update(W: Tensor, K: Tensor, V: Tensor, P: Tensor, Kp_gram: Optional[Tensor] = None,
                     lam: float = 1.0) -> Tensor:
    """AlphaEdit's sequential step (Eq. 2).

    ``Δ_t = R_t K_tᵀ P [(K_p K_pᵀ + K_t K_tᵀ) P + λ I]⁻¹`` where ``K_p`` are the keys
    edited before. It is :func:`aligned_update` with ``C0`` dropped (the
    projector takes its place), so Lemma 3.1 holds for it.

    Arguments:
        W: ``W_{t−1}``; K, V: the batch; P: the null-space projector.
        Kp_gram: ``K_p K_pᵀ`` ``[d_i, d_i]`` of all earlier edits (``None`` at t = 1).
        lam: AlphaEdit's Tikhonov weight (its code's ``L2``).
    Returns:
        ``Δ_t`` ``[d_o, d_i]``.
    """
    A_prev = system_matrix(None, P=P, C0=Kp_gram, lam=lam, d_i=K.shape[0], like=K)
    return aligned_update(W, K, V, A_prev, P=P)[0]


def naive_update(W: Tensor, K: Tensor, V: Tensor, *, P: Optional[Tensor] = None,
                 C0: Optional[Tensor] = None, lam: float = 0.0) -> Tensor:
    """The naive sequential rule: a fresh one-time edit of the latest batch.

    ``Δ_t = R_t K_tᵀ P [(C0 + K_t K_tᵀ) P + λ I]⁻¹`` forgets the constraints of
    earlier edits: the paper's "not OTE-aligned" ablation (Table 2), which is how
    MEMIT's released code is usually run over a stream (one MEMIT call per batch).
    Remark A.1 reserves the name "sequential MEMIT" for the *aligned* rule
    (:func:`aligned_update`); here the sum of the steps drifts away from ``Δ_total,t``.

    Arguments:
        W: ``W_{t−1}``; K, V: the latest batch; P, C0, lam: the objective.
    Returns:
        ``Δ_t`` ``[d_o, d_i]``.

    Example (the first step is the OTE; the second forgets the first batch, so the sum misses the OTE)::

        >>> g = torch.Generator().manual_seed(0)
        >>> W0, K1, V1, K2, V2 = (torch.randn(*s, generator=g, dtype=torch.float64)
        ...                       for s in [(3, 5), (5, 2), (3, 2), (5, 2), (3, 2)])
        >>> C0 = torch.eye(5, dtype=torch.float64)
        >>> D1 = naive_update(W0, K1, V1, C0=C0)
        >>> D2 = naive_update(W0 + D1, K2, V2, C0=C0)
        >>> torch.allclose(D1, ote_update(W0, K1, V1, C0=C0))
        True
        >>> torch.allclose(D1 + D2, ote_update(W0, torch.cat([K1, K2], 1), torch.cat([V1, V2], 1), C0=C0))
        False
    """
    return ote_update(W, K, V, P=P, C0=C0, lam=lam)


def memorize_latest_nullspace(W: Tensor, K: Tensor, V: Tensor, P: Tensor, lam: float = 1.0) -> Tensor:
    """Null-space-simplified memorize-the-latest step (Eq. 3).

    ``Δ_t = R_t K_tᵀ P (K_t K_tᵀ P + λ I)⁻¹``: it assumes ``C0 P = 0`` and so drops
    every ``K0`` term of the full equation, ``Σ_{τ≤t} Δ_τ C0 P`` (``Δ_t C0 P`` on the
    left, ``S_{t−1} C0 P`` on the right; see :func:`omitted_term`). The projector is
    only approximately null for C0, so nothing undoes what each step does to the
    preserved keys and their error keeps growing.

    Arguments:
        W: ``W_{t−1}``; K, V: the latest batch; P: the null-space projector; lam: λ.
    Returns:
        ``Δ_t`` ``[d_o, d_i]``.
    """
    return ote_update(W, K, V, P=P, C0=None, lam=lam)


def omitted_term(S: Tensor, *, P: Optional[Tensor] = None, C0: Optional[Tensor] = None) -> Tensor:
    """The right-hand-side term Eq. 3 drops from Eq. 4: ``−S C0 P`` with ``S = Σ_{τ<t} Δ_τ``.

    It is the pull back towards the preserved knowledge: without it nothing undoes
    the damage earlier steps did to ``K0``. (Eq. 3 also drops ``Δ_t C0 P`` from the
    left-hand side, so in total it omits ``Σ_{τ≤t} Δ_τ C0 P``.)

    Arguments:
        S: ``W_{t−1} − W0`` ``[d_o, d_i]``; P, C0: as in the step.
    Returns:
        ``−S C0 P`` ``[d_o, d_i]`` (zeros without C0).
    """
    return -_rp(S @ C0, P) if C0 is not None else torch.zeros_like(S)


def _memorize_step(W, K, V, S, P, C0, lam, recentred: bool) -> Tensor:
    _check_shapes(W, K, V, P, C0)
    _check_finite(S=S)
    if S.shape != W.shape:
        raise EditError(f"S has shape {tuple(S.shape)} but W has shape {tuple(W.shape)}")
    R = V - W @ K                                              # [d_o, n]
    B = R @ _rp(K.T, P) + omitted_term(S, P=P, C0=C0)          # [d_o, d_i]
    if recentred and lam:
        B = B - lam * S
    return solve_normal(B, system_matrix(K, P=P, C0=C0, lam=lam), what="the memorize-the-latest step")


def memorize_latest_full(W: Tensor, K: Tensor, V: Tensor, S: Tensor, *, P: Optional[Tensor] = None,
                         C0: Optional[Tensor] = None, lam: float = 0.0) -> Tensor:
    """Memorize-the-latest with the preserved term kept: Eq. 4 exactly as the paper prints it.

    ``Δ_t [(C0 + K_t K_tᵀ) P + λ I] = R_t K_tᵀ P − S_{t−1} C0 P`` (the paper has λ = 1).
    With ``P = I`` this is the minimiser of
    ``‖(W_{t−1}+Δ) K_t − V_t‖² + ‖(S_{t−1}+Δ) K0‖² + λ‖Δ‖²``: the latest batch, the
    preserved keys measured from ``W0``, and a Tikhonov damping of the *step*. With
    a projector ``P`` (λ > 0) the step satisfies ``Δ = Δ P`` and minimises the same
    objective over ``Δ P``. Where ``C0 P = 0`` exactly, it is Eq. 3.

    It is the OTE of the latest task only when λ = 0: the damping acts on each step,
    so ``W_t − W0`` is not pulled back in the directions C0 does not see. The rule
    that *is* that OTE for every λ is :func:`memorize_latest_recentred` (Eq. 32).

    Arguments:
        W: ``W_{t−1}``; K, V: the latest batch.
        S: ``Σ_{τ<t} Δ_τ = W_{t−1} − W0`` ``[d_o, d_i]``.
        P, C0, lam: the objective.
    Returns:
        ``Δ_t`` ``[d_o, d_i]``.
    """
    return _memorize_step(W, K, V, S, P, C0, lam, recentred=False)


def memorize_latest_recentred(W: Tensor, K: Tensor, V: Tensor, S: Tensor, *, P: Optional[Tensor] = None,
                              C0: Optional[Tensor] = None, lam: float = 0.0) -> Tensor:
    """Memorize-the-latest re-centred on ``W0`` (Eq. 32; Eq. 4 plus ``−λ S_{t−1}``).

    Derivation: the task at step t keeps only the latest batch and the preserved keys,
    ``W_t = argmin ‖W K_t − V_t‖² + ‖(W − W0) K0‖² + λ‖W − W0‖²`` (through ``P``), whose
    OTE is ``Δ_total [(C0 + K_t K_tᵀ) P + λ I] = (V_t − W0 K_t) K_tᵀ P``. Write
    ``Δ_total = S_{t−1} + Δ_t`` and ``V_t − W0 K_t = R_t + S_{t−1} K_t``; the
    ``S_{t−1} K_t K_tᵀ P`` terms cancel and what is left is::

        Δ_t [(C0 + K_t K_tᵀ) P + λ I] = R_t K_tᵀ P − S_{t−1} (C0 P + λ I)

    i.e. the printed Eq. 4 (:func:`memorize_latest_full`) with its Tikhonov term
    moved from the step to ``W − W0`` (the re-centring of Eq. 23). It is what
    Remark A.4's conflict-mode construction (Eq. 31, forget the previous batch, add
    the latest) computes, and differs from Eq. 4 only by ``λ S_{t−1}``.

    Arguments:
        as :func:`memorize_latest_full`.
    Returns:
        ``Δ_t``; then ``W0 + S + Δ_t`` is the OTE of the latest task.
    """
    return _memorize_step(W, K, V, S, P, C0, lam, recentred=True)


# --------------------------------------------------------------------------- projector

def nullspace_projector(C0: Tensor, threshold: float = 2e-2, *, relative: bool = False) -> Tensor:
    """AlphaEdit's projector onto the (approximate) null space of the preserved keys.

    From the eigendecomposition ``C0 = U Σ Uᵀ``: ``P = Û Ûᵀ`` where ``Û`` are the
    eigenvectors whose eigenvalue is below ``threshold`` (AlphaEdit's code uses
    an absolute threshold of 2e-2 on the per-token covariance).

    Arguments:
        C0: ``[d_i, d_i]``, symmetric positive semi-definite.
        threshold: eigenvalue cut-off.
        relative: if true, the cut-off is ``threshold`` times the largest eigenvalue.
    Returns:
        ``P`` ``[d_i, d_i]``, a symmetric idempotent matrix.

    Example (a rank-2 covariance in 4 dimensions leaves a 2-dimensional null space)::

        >>> g = torch.Generator().manual_seed(0)
        >>> U = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64)).Q     # orthonormal
        >>> C0 = U @ torch.diag(torch.tensor([5.0, 3.0, 0.0, 0.0], dtype=torch.float64)) @ U.T
        >>> P = nullspace_projector(C0)                                     # [4, 4]
        >>> round(float(torch.trace(P)))
        2
        >>> torch.allclose(P @ P, P), torch.allclose(C0 @ P, torch.zeros(4, 4, dtype=torch.float64), atol=1e-12)
        (True, True)
    """
    if C0.ndim != 2 or C0.shape[0] != C0.shape[1]:
        raise EditError(f"C0 must be square [d_i, d_i], got shape {tuple(C0.shape)}")
    _check_finite(C0=C0)
    evals, U = torch.linalg.eigh((C0 + C0.T) / 2)
    cut = threshold * float(evals.max()) if relative else threshold
    Uh = U[:, evals < cut]                                     # [d_i, d_null]
    return Uh @ Uh.T


# --------------------------------------------------------------------------- post-processing

def prune(D: Tensor, sigma_ref: float) -> Tensor:
    """PRUNE: squash the singular values of an edit that exceed ``σ_max(W)``.

    Each ``σ_i > σ_ref`` becomes ``σ_ref + ln σ_i − ln σ_ref``; the others stay.

    Departure, stated: otelab applies it to each step's edit, the paper's
    ``R_p(Δ_t)`` (its Algorithm 1 post-processes ``Δ_t``). The PRUNE authors' code
    instead restrains the accumulated edit ``W_t − W0`` once, after all edits.

    Arguments:
        D: the edit ``[d_o, d_i]``; sigma_ref: ``σ_max`` of the unedited weights.
    Returns:
        The restrained edit, same shape.

    Example (σ = 10 above σ_ref = 1 becomes 1 + ln 10; σ = 0.5 stays)::

        >>> D = torch.diag(torch.tensor([10.0, 0.5], dtype=torch.float64))
        >>> torch.linalg.svdvals(prune(D, sigma_ref=1.0))
        tensor([3.3026, 0.5000], dtype=torch.float64)
    """
    U, s, Vh = torch.linalg.svd(D, full_matrices=False)
    big = s > sigma_ref
    s = torch.where(big, sigma_ref + torch.log(s.clamp_min(sigma_ref)) - math.log(sigma_ref), s)
    return (U * s) @ Vh


def rect(D: Tensor, W_ref: Tensor, keep: float = 0.2) -> Tensor:
    """RECT: keep the top ``keep`` fraction of entries by relative change ``|Δ/W|``; zero the rest.

    The default ``keep = 0.2`` is what the paper's Table 6 calls the "stronger"
    setting (RECT-20 %); the seed code's naive RECT keeps 40 % (``keep=0.4``). Both
    are offered (``Rect(W0, keep=...)``, the engine's ``rect_keep``). Applied per step,
    like :func:`prune`.

    Arguments:
        D: the edit ``[d_o, d_i]``; W_ref: the unedited weights, same shape.
        keep: fraction of entries kept, in (0, 1].
    Returns:
        The sparsified edit.

    Example (relative changes 0.5, 0.25, 0.125, 0.0625: keeping half keeps the first row)::

        >>> W = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
        >>> rect(torch.full((2, 2), 0.5), W, keep=0.5)
        tensor([[0.5000, 0.5000],
                [0.0000, 0.0000]])
    """
    if D.shape != W_ref.shape:
        raise EditError(f"RECT: edit shape {tuple(D.shape)} differs from weight shape {tuple(W_ref.shape)}")
    if not 0 < keep <= 1:
        raise EditError(f"RECT: keep must be in (0, 1], got {keep}")
    rel = (D / W_ref.abs().clamp_min(torch.finfo(W_ref.dtype).tiny)).abs().flatten()
    k = max(1, int(round(keep * rel.numel())))
    mask = torch.zeros_like(rel, dtype=torch.bool)
    mask[torch.topk(rel, k, sorted=False).indices] = True
    return D * mask.view_as(D)


@dataclass
class Prune:
    """PRUNE as a post-processing operator (callable ``op(D) -> D̂``)."""

    sigma_ref: float

    @classmethod
    def for_weights(cls, W0: Tensor) -> "Prune":
        return cls(float(torch.linalg.matrix_norm(W0.double(), ord=2)))

    def __call__(self, D: Tensor) -> Tensor:
        return prune(D, self.sigma_ref)


@dataclass
class Rect:
    """RECT as a post-processing operator (callable ``op(D) -> D̂``)."""

    W_ref: Tensor
    keep: float = 0.2

    def __call__(self, D: Tensor) -> Tensor:
        return rect(D, self.W_ref.to(D), self.keep)

    def __repr__(self) -> str:
        return f"Rect(keep={self.keep})"


def corrected_step(W: Tensor, K: Tensor, V: Tensor, A_prev: Tensor, E: Tensor,
                   post: Callable[[Tensor], Tensor], *, P: Optional[Tensor] = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Algorithm 1: sequential editing with error correction for a post-processing operator.

    The aligned step is taken from the virtual weights ``W + E`` (the OTE path);
    the operator is applied to the step plus the carried error, and what it
    removed becomes the next error::

        Δ_t = aligned step at W_{t−1} + E_{t−1};   D_t = Δ_t + E_{t−1}
        Δ̂_t = post(D_t);                            E_t = D_t − Δ̂_t

    so ``W_t + E_t = W0 + Δ_total,t`` exactly (Prop. A.3).

    Departure, stated: otelab's ``E`` lives in weight space (the virtual weights are
    ``W + E``). The paper's Algorithm 1 carries its error on the right-hand side of
    the normal equation instead, ``E_paper,t = −E_t A_t`` (``A_t`` its ``C_t``):
    ``D_t = (R_t K_tᵀ P − E_paper,t−1) A_t⁻¹``, ``Δ̂_t = post(D_t)``,
    ``E_paper,t = (Δ̂_t − D_t) A_t``. Both give the same ``Δ̂_t`` at every step, since
    ``D_t A_t = R_t K_tᵀ P + E_{t−1} A_{t−1}``.

    Returns:
        ``(Δ̂_t, A_t, E_t)``: the step to apply, the new accumulated matrix, the new error.
    """
    _check_finite(E=E)
    if E.shape != W.shape:
        raise EditError(f"E has shape {tuple(E.shape)} but W has shape {tuple(W.shape)}")
    delta, A = aligned_update(W + E, K, V, A_prev, P=P)
    D = delta + E
    applied = post(D)
    if not bool(torch.isfinite(applied).all()):
        raise SolveError("the post-processing operator returned non-finite values")
    return applied, A, D - applied


# --------------------------------------------------------------------------- conflicts (Prop. 3.5)

Resolve = Callable[[Tensor, Tensor], Optional[Tensor]]


def resolve_latest(old: Tensor, new: Tensor) -> Tensor:
    """Memorize the latest value of a re-edited key."""
    return new


def resolve_first(old: Tensor, new: Tensor) -> Tensor:
    """Keep the first value; later conflicting edits are ignored."""
    return old


def resolve_mean(old: Tensor, new: Tensor) -> Tensor:
    """Split the difference between the stored and the new value."""
    return (old + new) / 2


def resolve_forget(old: Tensor, new: Tensor) -> None:
    """Drop the key's constraint entirely (the fact returns to its pre-edit value)."""
    return None


def conflict_update(W: Tensor, A_prev: Tensor, *, P: Optional[Tensor] = None,
                    K_new: Optional[Tensor] = None, V_new: Optional[Tensor] = None,
                    K_changed: Optional[Tensor] = None, V_old: Optional[Tensor] = None,
                    V_resolved: Optional[Tensor] = None,
                    K_dropped: Optional[Tensor] = None, V_dropped: Optional[Tensor] = None
                    ) -> tuple[Tensor, Tensor]:
    """The OTE-aligned step when constraints are added, re-valued or dropped (Prop. 3.5, Eq. 30).

    With ``W_{t−1}`` on the OTE path of the active constraint set, the step to
    the OTE of the new set solves::

        Δ_t A_t = Σ_new (v − W k) kᵀ P + Σ_changed (v_res − v_old) kᵀ P − Σ_dropped (v_old − W k) kᵀ P
        A_t = A_{t−1} + Σ_new k kᵀ P − Σ_dropped k kᵀ P

    A changed key keeps its place in ``A``; only its value moves.

    Departure, stated: the paper's Eq. 30 writes the re-valued term with ``V_Bo``;
    read as the resolved values it is ``(v_new − v_resolved) kᵀ P``, which is zero
    under the "latest" policy (the new value is cancelled). otelab uses
    ``(v_resolved − v_old) kᵀ P``, which lands on the OTE of the resolved set for
    every policy (checked by ``otelab verify``); the two agree when ``V_Bo`` is read
    as the *old* values and the policy is "latest". Notebook 04 shows both.

    Arguments:
        W: ``W_{t−1}`` ``[d_o, d_i]``; A_prev: ``A_{t−1}``; P: as in ``A_prev``.
        K_new, V_new: keys/values added; K_changed, V_old, V_resolved: re-valued keys
        with their stored and resolved values; K_dropped, V_dropped: keys forgotten.
    Returns:
        ``(Δ_t, A_t)``.
    """
    A = A_prev.clone()
    B = torch.zeros(W.shape, dtype=W.dtype, device=W.device)
    if K_new is not None and K_new.shape[1]:
        _check_shapes(W, K_new, V_new, P, A_prev)
        KtP = _rp(K_new.T, P)
        A = A + K_new @ KtP
        B = B + (V_new - W @ K_new) @ KtP
    if K_changed is not None and K_changed.shape[1]:
        _check_shapes(W, K_changed, V_resolved)
        _check_shapes(W, K_changed, V_old)
        B = B + (V_resolved - V_old) @ _rp(K_changed.T, P)
    if K_dropped is not None and K_dropped.shape[1]:
        _check_shapes(W, K_dropped, V_dropped)
        KtP = _rp(K_dropped.T, P)
        A = A - K_dropped @ KtP
        B = B - (V_dropped - W @ K_dropped) @ KtP
    return solve_normal(B, A, what="the conflict-resolution step"), A


# --------------------------------------------------------------------------- RLSEdit

def rls_init(d_i: int, *, C0: Optional[Tensor] = None, lam: float = 1.0, like: Optional[Tensor] = None) -> Tensor:
    """RLSEdit's initial state ``Q_0 = (C0 + λ I)⁻¹`` for ``Σ‖WKτ−Vτ‖² + λ‖W−W0‖² + ‖(W−W0)K0‖²_C0``.

    The inverse is RLS's state by definition; it is formed once, by Cholesky.

    Arguments:
        d_i: key width; C0: ``μ K0 K0ᵀ`` (or None); lam: λ > 0 unless C0 is full rank.
    Returns:
        ``Q_0`` ``[d_i, d_i]``.
    """
    A0 = system_matrix(None, C0=C0, lam=lam, d_i=d_i, like=C0 if C0 is not None else like)
    L, info = torch.linalg.cholesky_ex(A0)
    if int(info) != 0:
        raise SolveError("RLSEdit: C0 + λI is not positive definite; use lam > 0")
    return torch.cholesky_inverse(L)


def rls_step(W: Tensor, K: Tensor, V: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """One RLSEdit step by the Woodbury identity; its cost does not grow with history.

    ``Δ_t = R_t (I + K_tᵀ Q K_t)⁻¹ K_tᵀ Q`` and ``Q_t = Q − Q K_t (I + K_tᵀ Q K_t)⁻¹ K_tᵀ Q``:
    the same ``Δ_t`` as :func:`aligned_update` with ``P = I`` (so RLSEdit is
    OTE-aligned), at ``O(d_i² n)`` instead of a ``d_i×d_i`` solve.

    Returns:
        ``(Δ_t, Q_t)``.

    Example (the same step as :func:`aligned_update` with ``P = I``, and ``Q_t = A_t⁻¹``)::

        >>> g = torch.Generator().manual_seed(0)
        >>> W0, K, V = (torch.randn(*s, generator=g, dtype=torch.float64) for s in [(3, 5), (5, 2), (3, 2)])
        >>> C0 = torch.eye(5, dtype=torch.float64)
        >>> D_rls, Q = rls_step(W0, K, V, rls_init(5, C0=C0, lam=0.0))
        >>> D_al, A = aligned_update(W0, K, V, system_matrix(None, C0=C0, d_i=5, like=W0))
        >>> torch.allclose(D_rls, D_al), torch.allclose(Q @ A, torch.eye(5, dtype=torch.float64))
        (True, True)
    """
    _check_shapes(W, K, V, None, Q)
    QK = Q @ K                                                 # [d_i, n]
    S = _eye(K.shape[1], K) + K.T @ QK                          # [n, n], symmetric PD
    try:                                                       # float64 on every device, like solve_normal
        G = torch.linalg.solve(S.double(), QK.T.double()).to(Q.dtype)   # [n, d_i] = S⁻¹ Kᵀ Q
    except RuntimeError as err:
        raise SolveError(f"RLSEdit: could not solve the n×n Woodbury system ({err})") from None
    delta = (V - W @ K) @ G                                    # [d_o, d_i]
    Q_new = Q - QK @ G
    Q_new = (Q_new + Q_new.T) / 2                              # keep it symmetric against round-off
    if not (bool(torch.isfinite(delta).all()) and bool(torch.isfinite(Q_new).all())):
        raise SolveError("RLSEdit: the step is not finite")
    return delta, Q_new


# --------------------------------------------------------------------------- the stateful editor

MODES = ("aligned", "naive", "memorize-nullspace", "memorize-full", "memorize-recentred", "conflict", "rls")


class SequentialEditor:
    """One layer's sequential-editing state; every real-model editor is one of these.

    Arguments:
        d_i: key width (columns of W).
        mode: one of :data:`MODES`:
            ``aligned`` (Remark A.1; AlphaEdit when ``P`` is a projector and ``C0`` None),
            ``naive`` (repeated OTE), ``memorize-nullspace`` (Eq. 3),
            ``memorize-full`` (Eq. 4 as printed), ``memorize-recentred`` (Eq. 32, the OTE
            of the latest task), ``conflict`` (Prop. 3.5 with ``resolve``),
            ``rls`` (RLSEdit by Woodbury; P must be None).
        P: ``[d_i, d_i]`` or None (identity).
        C0: weighted preserved covariance ``[d_i, d_i]`` or None.
        lam: Tikhonov weight λ.
        post: a post-processing operator ``op(D) -> D̂`` (:class:`Prune`, :class:`Rect`) or None.
        correct: with ``post``, apply Algorithm 1's error correction (aligned mode only).
        resolve: conflict mode: ``resolve(v_old, v_new) -> v | None``.
        dtype: the dtype of the state (inputs are cast to it; float64 for the toy).

    State: ``aligned``/``conflict`` keep ONE ``d_i×d_i`` matrix ``A`` with C0 and λI
    folded in (``rls`` keeps ``Q = A⁻¹`` instead), plus ``E`` only when a corrected
    post-processing operator is on; the memorize modes keep ``S = Σ Δτ``;
    ``conflict`` keeps the active keys and values.

    Example (an aligned editor over three batches ends where the one-time edit of all of them does)::

        >>> g = torch.Generator().manual_seed(0)
        >>> W0 = torch.randn(3, 5, generator=g, dtype=torch.float64)             # [d_o, d_i]
        >>> Ks = [torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(3)]   # [d_i, n] each
        >>> Vs = [torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(3)]   # [d_o, n] each
        >>> C0 = torch.eye(5, dtype=torch.float64)
        >>> ed, W = SequentialEditor(5, "aligned", C0=C0), W0.clone()
        >>> for K, V in zip(Ks, Vs):
        ...     W = W + ed.step(K, V, W)
        >>> torch.allclose(W - W0, ote_update(W0, torch.cat(Ks, 1), torch.cat(Vs, 1), C0=C0))
        True
        >>> ed.t, ed.state_shapes()
        (3, {'A': (5, 5)})
    """

    def __init__(self, d_i: int, mode: str = "aligned", *, P: Optional[Tensor] = None,
                 C0: Optional[Tensor] = None, lam: float = 0.0, post: Optional[Callable] = None,
                 correct: bool = True, resolve: Resolve = resolve_latest,
                 dtype: torch.dtype = torch.float64, device=None):
        if mode not in MODES:
            raise EditError(f"unknown mode {mode!r}; expected one of {MODES}")
        if lam < 0:
            raise EditError(f"lam must be ≥ 0, got {lam}")
        if mode == "rls" and P is not None:
            raise EditError("mode 'rls' solves the P = I objective; pass P=None")
        if post is not None and mode not in ("aligned", "naive"):
            raise EditError(f"post-processing is supported in modes 'aligned' and 'naive', not {mode!r}")
        self.d_i, self.mode, self.lam, self.post, self.resolve = d_i, mode, float(lam), post, resolve
        self.correct = bool(correct and post is not None and mode == "aligned")
        self.dtype, self.device = dtype, torch.device(device) if device is not None else None
        self.P = self._cast(P, "P", (d_i, d_i))
        self.C0 = self._cast(C0, "C0", (d_i, d_i))
        self.A: Optional[Tensor] = None
        self.Q: Optional[Tensor] = None
        if mode in ("aligned", "conflict"):
            self.A = system_matrix(None, P=self.P, C0=self.C0, lam=self.lam, d_i=d_i, like=self._like())
        elif mode == "rls":
            self.Q = rls_init(d_i, C0=self.C0, lam=self.lam, like=self._like())
        self.E: Optional[Tensor] = None       # [d_o, d_i], Algorithm 1 only
        self.S: Optional[Tensor] = None       # [d_o, d_i], memorize modes with S only
        self.keys: dict[Hashable, tuple[Tensor, Tensor]] = {}   # conflict only: id -> (k [d_i], v [d_o])
        self.t = 0

    # -- helpers
    def _like(self) -> Tensor:
        return torch.empty(0, dtype=self.dtype, device=self.device)

    def _cast(self, M: Optional[Tensor], name: str, shape: Optional[tuple] = None) -> Optional[Tensor]:
        if M is None:
            return None
        if not isinstance(M, Tensor):
            raise EditError(f"{name} must be a torch.Tensor, got {type(M).__name__}")
        if shape is not None and tuple(M.shape) != shape:
            raise EditError(f"{name} has shape {tuple(M.shape)}, expected {list(shape)}")
        M = M.to(dtype=self.dtype, device=self.device if self.device is not None else M.device)
        _check_finite(**{name: M})
        return M

    def state_shapes(self) -> dict[str, tuple]:
        """Shapes of the tensors the editor carries between steps (for tests and docs)."""
        out = {k: tuple(getattr(self, k).shape) for k in ("A", "Q", "E", "S") if getattr(self, k) is not None}
        if self.keys:
            out["keys"] = (len(self.keys),)
        return out

    # -- the step
    def step(self, K: Tensor, V: Tensor, W: Tensor, ids: Optional[Sequence[Hashable]] = None) -> Tensor:
        """Compute the next update ``Δ_t`` for the current weights ``W``; commit the state.

        Arguments:
            K: keys ``[d_i, n]``; V: target values ``[d_o, n]``; W: current weights
                ``[d_o, d_i]`` (read only; the caller adds the returned Δ).
            ids: conflict mode: one hashable id per key; a repeated id is a re-edit.
        Returns:
            ``Δ_t`` ``[d_o, d_i]`` in the editor's dtype.
        Raises:
            EditError / SolveError: bad input or unsolvable step. The state is then unchanged.
        """
        K, V, W = (self._cast(x, n) for x, n in ((K, "K"), (V, "V"), (W, "W")))
        _check_shapes(W, K, V, self.P, self.C0)
        if K.shape[0] != self.d_i:
            raise EditError(f"K has {K.shape[0]} rows but this editor was built for d_i = {self.d_i}")
        P, C0, lam = self.P, self.C0, self.lam
        new_state: dict = {}
        if self.mode == "aligned":
            if self.correct:
                E = self.E if self.E is not None else torch.zeros_like(W)
                delta, new_state["A"], new_state["E"] = corrected_step(W, K, V, self.A, E, self.post, P=P)
            else:
                delta, new_state["A"] = aligned_update(W, K, V, self.A, P=P)
        elif self.mode == "naive":
            delta = naive_update(W, K, V, P=P, C0=C0, lam=lam)
        elif self.mode == "memorize-nullspace":
            if P is None:
                raise EditError("mode 'memorize-nullspace' needs the null-space projector P")
            delta = memorize_latest_nullspace(W, K, V, P, lam)
        elif self.mode in ("memorize-full", "memorize-recentred"):
            S = self.S if self.S is not None else torch.zeros_like(W)
            rule = memorize_latest_full if self.mode == "memorize-full" else memorize_latest_recentred
            delta = rule(W, K, V, S, P=P, C0=C0, lam=lam)
            new_state["S"] = S + delta
        elif self.mode == "rls":
            delta, new_state["Q"] = rls_step(W, K, V, self.Q)
        else:
            delta, new_state["A"], new_state["keys"] = self._conflict_step(K, V, W, ids)
        if self.post is not None and not self.correct:
            delta = self.post(delta)
            _check_finite(**{"post-processed step": delta})
        for k, v in new_state.items():
            setattr(self, k, v)
        self.t += 1
        return delta

    def _conflict_step(self, K, V, W, ids):
        n = K.shape[1]
        if ids is None:
            ids = [("_auto", self.t, j) for j in range(n)]
        ids = list(ids)
        if len(ids) != n or len(set(ids)) != n:
            raise EditError(f"conflict mode needs {n} distinct ids for {n} keys, got {ids!r}")
        keys = dict(self.keys)
        new_k, new_v, ch_k, ch_old, ch_res, dr_k, dr_v = [], [], [], [], [], [], []
        for j, key_id in enumerate(ids):
            k, v = K[:, j], V[:, j]
            if key_id not in keys:
                new_k.append(k), new_v.append(v)
                keys[key_id] = (k, v)
                continue
            k_old, v_old = keys[key_id]
            v_res = self.resolve(v_old, v)
            if v_res is None:
                dr_k.append(k_old), dr_v.append(v_old)
                del keys[key_id]
            else:
                ch_k.append(k_old), ch_old.append(v_old), ch_res.append(v_res)
                keys[key_id] = (k_old, v_res)
        stack = lambda xs: torch.stack(xs, dim=1) if xs else None  # noqa: E731
        delta, A = conflict_update(W, self.A, P=self.P, K_new=stack(new_k), V_new=stack(new_v),
                                   K_changed=stack(ch_k), V_old=stack(ch_old), V_resolved=stack(ch_res),
                                   K_dropped=stack(dr_k), V_dropped=stack(dr_v))
        return delta, A, keys

    def forget(self, ids: Sequence[Hashable], W: Tensor) -> Tensor:
        """Conflict mode: drop the constraints of ``ids`` (Prop. 3.5 with removal); return Δ."""
        if self.mode != "conflict":
            raise EditError("forget() needs mode 'conflict'")
        missing = [i for i in ids if i not in self.keys]
        if missing:
            raise EditError(f"cannot forget unknown ids {missing!r}")
        W = self._cast(W, "W")
        keys = dict(self.keys)
        dr = [keys.pop(i) for i in ids]
        delta, A = conflict_update(W, self.A, P=self.P, K_dropped=torch.stack([k for k, _ in dr], 1),
                                   V_dropped=torch.stack([v for _, v in dr], 1))
        self.A, self.keys, self.t = A, keys, self.t + 1
        return delta

    # -- persistence (tensors only: safetensors-friendly)
    def state_dict(self) -> dict[str, Tensor]:
        """The carried tensors (``A``, ``Q``, ``E``, ``S``, conflict keys) and the step count."""
        sd = {k: getattr(self, k).clone() for k in ("A", "Q", "E", "S") if getattr(self, k) is not None}
        sd["t"] = torch.tensor(self.t)
        if self.keys:
            ids = list(self.keys)
            sd["keys_K"] = torch.stack([self.keys[i][0] for i in ids], 1)
            sd["keys_V"] = torch.stack([self.keys[i][1] for i in ids], 1)
        return sd

    def key_ids(self) -> list:
        return list(self.keys)

    def load_state_dict(self, sd: dict[str, Tensor], key_ids: Optional[list] = None) -> None:
        """Restore what :meth:`state_dict` returned (``key_ids`` for conflict mode)."""
        for k in ("A", "Q"):
            if k in sd and tuple(sd[k].shape) != (self.d_i, self.d_i):
                raise EditError(f"state {k} has shape {tuple(sd[k].shape)}, expected [{self.d_i}, {self.d_i}]")
        for k in ("E", "S"):
            if k in sd and (sd[k].ndim != 2 or sd[k].shape[1] != self.d_i):
                raise EditError(f"state {k} has shape {tuple(sd[k].shape)}, expected [d_o, {self.d_i}]")
        for k in ("A", "Q", "E", "S"):
            setattr(self, k, self._cast(sd[k], k).clone() if k in sd else None)
        self.t = int(sd["t"])
        self.keys = {}
        if "keys_K" in sd:
            if key_ids is None or len(key_ids) != sd["keys_K"].shape[1]:
                raise EditError("conflict state needs the list of key ids it was saved with")
            Kk, Vk = self._cast(sd["keys_K"], "keys_K"), self._cast(sd["keys_V"], "keys_V")
            self.keys = {i: (Kk[:, j], Vk[:, j]) for j, i in enumerate(key_ids)}

    def __repr__(self) -> str:
        post = f", post={self.post!r}, correct={self.correct}" if self.post is not None else ""
        return f"SequentialEditor(d_i={self.d_i}, mode={self.mode!r}, lam={self.lam}{post}, t={self.t})"


# --------------------------------------------------------------------------- the editor registry
#
# One table says what every named editor is: which SequentialEditor it builds for each session
# mode, which post-processing operator it carries, its default options and the paper row it
# reproduces. The engine (EditSession), the toy rules, the workbench, the command line, the
# widgets and the demo all read it, so adding a regulariser is one operator plus one row
# (:func:`register_editor`).

PostOp = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SessionMode:
    """A session mode: what a user picks (``otelab edit --mode``, the workbench's dropdown).

    Attributes:
        name: the mode's name, e.g. ``"no-ec"``.
        core: the :class:`SequentialEditor` mode (one of :data:`MODES`) it runs, unless an
            editor's row maps it elsewhere (RLSEdit's ``aligned`` runs ``rls``).
        correct: Algorithm 1's error correction for an editor with a post-processing operator
            (the core applies it in its ``aligned`` mode only).
        doc: one line, citing the paper.
        refusal: the error for a method that does not accept the mode; format fields
            ``{mode}``, ``{method}`` (repr), ``{methods}`` ("a, b and c": the methods that do)
            and ``{quoted}`` ("'a' or 'b'").
    """

    name: str
    core: str
    correct: bool
    doc: str
    refusal: str = "mode {mode!r} is defined for {methods}, not {method}"


SESSION_MODES: dict[str, SessionMode] = {m.name: m for m in (
    SessionMode("aligned", "aligned", True,
                "OTE-aligned: each step is the difference of two OTE optima (Lemma 3.1, Prop. 3.2, Remark A.1); "
                "with a post-processing operator, Algorithm 1"),
    SessionMode("naive", "naive", True, "a repeated one-time edit (the paper's ablation, Tables 2/5)"),
    SessionMode("no-ec", "aligned", False,
                "aligned, the operator applied to each step without Algorithm 1's error correction (Tables 2/5, 6)",
                "mode 'no-ec' (no error correction) applies to {methods} only"),
    SessionMode("memorize-nullspace", "memorize-nullspace", True,
                "memorize-the-latest by the null-space shortcut (Eq. 3)",
                "mode 'memorize-nullspace' is AlphaEdit's shortcut (Eq. 3): use method {quoted}"),
    SessionMode("memorize-full", "memorize-full", True, "memorize-the-latest with the preserved term (Eq. 4)"),
    SessionMode("conflict", "conflict", True, "a re-edited subject takes its latest target (Prop. 3.5, Eq. 30)"),
)}


@dataclass(frozen=True)
class ModeSpec:
    """How one editor runs one session mode.

    Attributes:
        core: the :class:`SequentialEditor` mode; correct: Algorithm 1 on (see :class:`SessionMode`).
        paper: the paper's table and row (or equation) this combination reproduces; "" if none.
    """

    core: str
    correct: bool = True
    paper: str = ""


def mode_spec(mode: str, paper: str = "", *, core: Optional[str] = None) -> ModeSpec:
    """The :class:`ModeSpec` of session mode ``mode`` with the mode's own core mode and correction.

    Arguments:
        mode: a key of :data:`SESSION_MODES`; paper: the row it reproduces.
        core: another core mode (RLSEdit's ``aligned`` is ``rls``).
    Returns:
        The spec, for a row's ``modes``.
    """
    if mode not in SESSION_MODES:
        raise EditError(f"unknown mode {mode!r}; expected one of {tuple(SESSION_MODES)}")
    sm = SESSION_MODES[mode]
    return ModeSpec(core or sm.core, sm.correct, paper)


def preserve_cov(mode: str, C0_hat: Tensor, *, mu: float, **options) -> dict:
    """Keep the preserved keys by their covariance: ``C0 = μ Ĉ0``, ``P = I``, ``λ = 0`` (MEMIT, Prop. 3.2).

    Arguments:
        mode: the session mode (unused here); C0_hat: per-token covariance ``[d_i, d_i]``.
        mu: the C0 weight μ (the engine's ``cov_weight``); options: the rest, ignored.
    Returns:
        ``dict(P=..., C0=..., lam=...)``.
    """
    return dict(P=None, C0=mu * C0_hat, lam=0.0)


def preserve_nullspace(mode: str, C0_hat: Tensor, *, mu: float, threshold: float, l2: float, **options) -> dict:
    """AlphaEdit: ``P`` = the null-space projector of Ĉ0, no ``C0``, ``λ = l2`` (Eq. 2).

    Memorize-the-latest by Eq. 4 needs the preserved covariance the projector stands for, so
    ``memorize-full`` keeps ``C0 = μ Ĉ0`` as well (the term Eq. 3 drops).

    Arguments:
        mode: the session mode; C0_hat: ``[d_i, d_i]``; mu: the C0 weight μ;
        threshold: :func:`nullspace_projector`'s; l2: AlphaEdit's Tikhonov weight λ.
    Returns:
        ``dict(P=..., C0=..., lam=...)``.
    """
    return dict(P=nullspace_projector(C0_hat, threshold), C0=mu * C0_hat if mode == "memorize-full" else None,
                lam=l2)


def preserve_rls(mode: str, C0_hat: Tensor, *, mu: float, rls_lam: float, **options) -> dict:
    """RLSEdit: ``C0 = μ Ĉ0``, ``P = I``, Tikhonov ``λ = rls_lam`` (the objective of the module docstring).

    Arguments:
        mode: the session mode; C0_hat: ``[d_i, d_i]``; mu: μ; rls_lam: λ.
    Returns:
        ``dict(P=..., C0=..., lam=...)``.
    """
    return dict(P=None, C0=mu * C0_hat, lam=rls_lam)


def _prune_op(W0: Tensor) -> PostOp:
    return Prune.for_weights(W0)


def _rect_op(W0: Tensor, rect_keep: float) -> PostOp:
    return Rect(W0.clone(), rect_keep)     # a copy: the caller's W0 may be edited in place later


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class EditorSpec:
    """One row of the registry: a named editor.

    Attributes:
        name: the method's name (``otelab edit --method``), e.g. ``"rect"``.
        display: its display name in labels and dropdowns, e.g. ``"RECT"``.
        modes: ``{session mode: ModeSpec}``, the modes it accepts (listed in
            :data:`SESSION_MODES` order wherever they are shown).
        preserve: ``preserve(mode, C0_hat, *, mu, threshold, l2, **options) -> dict(P, C0, lam)``:
            how preserved knowledge enters the normal equation (:func:`preserve_cov`,
            :func:`preserve_nullspace`, :func:`preserve_rls`).
        post: ``post(W0, **options) -> op``, the post-processing operator ``op(Δ) -> Δ̂`` built
            from the unedited weights ``W0`` ``[d_o, d_i]``, or None. Accepts modes whose core
            mode is ``aligned`` or ``naive`` only.
        options: the keyword options the editor reads and their defaults, named as
            :class:`otelab.engine.session.EditSession`'s (``rect_keep``, ``rls_lam``).
        doc: one line on what it is.
    """

    name: str
    display: str
    modes: Mapping[str, ModeSpec]
    preserve: Callable[..., dict] = preserve_cov
    post: Optional[Callable[..., PostOp]] = None
    options: Mapping[str, float] = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self):
        object.__setattr__(self, "modes", _frozen(self.modes))
        object.__setattr__(self, "options", _frozen(self.options))
        bad = [m for m in self.modes if m not in SESSION_MODES]
        if bad:
            raise EditError(f"editor {self.name!r}: unknown session mode(s) {bad}; expected {tuple(SESSION_MODES)}")
        for m, ms in self.modes.items():
            if ms.core not in MODES:
                raise EditError(f"editor {self.name!r}, mode {m!r}: unknown core mode {ms.core!r}")
            if self.post is not None and ms.core not in ("aligned", "naive"):
                raise EditError(f"editor {self.name!r}, mode {m!r}: post-processing runs in core modes "
                                f"'aligned' and 'naive' only, not {ms.core!r}")


def _ms(*modes: tuple[str, str], **core: str) -> dict[str, ModeSpec]:
    """``{mode: mode_spec(mode, paper)}`` for ``(mode, paper)`` pairs; ``core`` maps a mode elsewhere."""
    return {m: mode_spec(m, paper, core=core.get(m.replace("-", "_"))) for m, paper in modes}


def post_modes(display: str) -> dict[str, ModeSpec]:
    """The modes of a post-processing editor (PRUNE, RECT): ``aligned`` (Algorithm 1), ``naive``, ``no-ec``.

    Arguments:
        display: the editor's display name, for the rows of Tables 2/5 it would fill.
    Returns:
        ``{session mode: ModeSpec}`` for :class:`EditorSpec`'s ``modes``.
    """
    return _ms(("aligned", f"Tables 2/5: fully aligned {display} (Algorithm 1)"),
               ("naive", f"Tables 2/5: not OTE-aligned (naive) {display}"),
               ("no-ec", f"Tables 2/5: no error correction {display}"))

EDITORS: dict[str, EditorSpec] = {e.name: e for e in (
    EditorSpec("memit", "MEMIT", _ms(
        ("aligned", "Tables 2/5, 7: fully aligned MEMIT (Remark A.1)"),
        ("naive", "Tables 2/5, 7: not OTE-aligned (naive) MEMIT"),
        ("memorize-full", "Eq. 4 with P = I"),
        ("conflict", "Prop. 3.5 (Eq. 30)")),
        doc="MEMIT: C0 = μ Ĉ0, P = I, λ = 0 (Prop. 3.2)"),
    EditorSpec("alphaedit", "AlphaEdit", _ms(
        ("aligned", "Tables 2/5, 7: fully aligned AlphaEdit (Eq. 2)"),
        ("naive", "Tables 2/5, 7: not OTE-aligned (naive) AlphaEdit"),
        ("memorize-nullspace", "Table 1: null-space simplified (Eq. 3)"),
        ("memorize-full", "Table 1: full (Eq. 4)"),
        ("conflict", "Prop. 3.5 (Eq. 30) with the projector")),
        preserve=preserve_nullspace, doc="AlphaEdit: P = null-space projector of Ĉ0, no C0, λ = its L2 (Eq. 2)"),
    EditorSpec("prune", "PRUNE", post_modes("PRUNE"), post=_prune_op,
               doc="MEMIT + PRUNE (σ_max of the unedited W; :func:`prune`)"),
    EditorSpec("rect", "RECT", post_modes("RECT"), post=_rect_op, options={"rect_keep": 0.2},
               doc="MEMIT + RECT keeping the top 20 % relative changes (Table 6; :func:`rect`)"),
    EditorSpec("rlsedit", "RLSEdit", _ms(
        ("aligned", "RLSEdit's objective, by the Woodbury recursion"),
        ("naive", "a repeated one-time edit of RLSEdit's objective"), aligned="rls"),
        preserve=preserve_rls, options={"rls_lam": 1.0},
        doc="RLSEdit: C0 = μ Ĉ0, Tikhonov λ = rls_lam, Woodbury recursion"),
)}


def register_editor(spec: EditorSpec, *, replace: bool = False) -> EditorSpec:
    """Add a row to :data:`EDITORS`; every reader (engine, toy, workbench, CLI, demo) sees it at once.

    Example (a regulariser that keeps each step's top singular direction)::

        >>> def top1(W0):
        ...     def op(D):
        ...         U, s, Vh = torch.linalg.svd(D, full_matrices=False)
        ...         return s[0] * torch.outer(U[:, 0], Vh[0])
        ...     return op
        >>> spec = register_editor(EditorSpec("top1", "Top-1", post_modes("Top-1"), post=top1))
        >>> valid_modes("top1")
        ['aligned', 'naive', 'no-ec']
        >>> [m for m in methods() if "no-ec" in valid_modes(m)]
        ['prune', 'rect', 'top1']
        >>> unregister_editor("top1")

    Arguments:
        spec: the row; replace: allow replacing a row of the same name.
    Returns:
        ``spec``.
    Raises:
        EditError: the name is taken (and not ``replace``) or is not a plain lower-case name.
    """
    if not spec.name or spec.name != spec.name.lower() or not all(c.isalnum() or c in "-_" for c in spec.name):
        raise EditError(f"editor name {spec.name!r}: use lower-case letters, digits, '-' and '_'")
    if spec.name in EDITORS and not replace:
        raise EditError(f"editor {spec.name!r} is already registered (pass replace=True to replace it)")
    EDITORS[spec.name] = spec
    return spec


def unregister_editor(name: str) -> None:
    """Remove a row added by :func:`register_editor` (a missing name is an error)."""
    if name not in EDITORS:
        raise EditError(f"no editor {name!r} is registered")
    del EDITORS[name]


def methods() -> tuple[str, ...]:
    """The registered method names, in registration order (the built-ins first)."""
    return tuple(EDITORS)


def _words(names: Sequence[str], quoted: bool = False) -> str:
    """``"a, b and c"`` (``"'a', 'b' or 'c'"`` when ``quoted``)."""
    names = [repr(n) if quoted else n for n in names]
    last = " or " if quoted else " and "
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + last + names[-1]


def check_editor(method: str, mode: str) -> EditorSpec:
    """The row of ``method`` if it accepts session mode ``mode``; raise :class:`EditError` naming why not.

    Cheap (no tensors): callers check names before loading anything.
    """
    if method not in EDITORS:
        raise EditError(f"unknown method {method!r}; expected one of {methods()}")
    if mode not in SESSION_MODES:
        raise EditError(f"unknown mode {mode!r}; expected one of {tuple(SESSION_MODES)}")
    spec = EDITORS[method]
    if mode not in spec.modes:
        takers = [m for m, e in EDITORS.items() if mode in e.modes]
        raise EditError(SESSION_MODES[mode].refusal.format(mode=mode, method=repr(method),
                                                           methods=_words(takers) if takers else "no method",
                                                           quoted=_words(takers, True) if takers else "none"))
    return spec


def valid_modes(method: str) -> list[str]:
    """The session modes ``method`` accepts, in :data:`SESSION_MODES` order ([] for an unknown method)."""
    spec = EDITORS.get(method)
    return [m for m in SESSION_MODES if spec is not None and m in spec.modes]


def display_name(method: str) -> str:
    """``"MEMIT"`` for ``"memit"``; an unregistered name is returned as it is."""
    return EDITORS[method].display if method in EDITORS else method


def editor_kwargs(method: str, mode: str, C0_hat: Tensor, W0: Tensor, *, mu: float, threshold: float = 2e-2,
                  l2: float = 0.0, **options) -> dict:
    """The :class:`SequentialEditor` keyword arguments of ``method`` × session ``mode`` for one layer.

    Arguments:
        method, mode: a row of :data:`EDITORS` and one of its session modes.
        C0_hat: per-token covariance of the preserved keys ``[d_i, d_i]``.
        W0: the unedited weights ``[d_o, d_i]`` (PRUNE's σ_max, RECT's reference).
        mu: the C0 weight μ (``C0 = μ Ĉ0``); threshold, l2: AlphaEdit's projector threshold and
            Tikhonov weight λ.
        options: editor options (``rect_keep``, ``rls_lam``, ...); those the row does not read are
            ignored (the engine passes all of its options to every method), missing ones take the
            row's defaults.
    Returns:
        ``dict(P=..., C0=..., lam=..., post=..., correct=..., mode=...)``.
    Raises:
        EditError: an unknown method, mode or combination.
    """
    spec = check_editor(method, mode)
    opts = {k: options.get(k, v) for k, v in spec.options.items()}
    cfg = spec.preserve(mode, C0_hat, mu=mu, threshold=threshold, l2=l2, **opts)
    ms = spec.modes[mode]
    cfg.update(post=spec.post(W0, **opts) if spec.post is not None else None, correct=ms.correct, mode=ms.core)
    return cfg


class _Column(abc.Mapping):
    """A live read-only view ``method -> getattr(row, field)`` of :data:`EDITORS`."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, method: str):
        return getattr(EDITORS[method], self._field)

    def __iter__(self):
        return iter(EDITORS)

    def __len__(self) -> int:
        return len(EDITORS)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Names(abc.Sequence):
    """A live read-only view of the registered method names (a tuple that sees later rows)."""

    def __getitem__(self, i):
        return methods()[i]

    def __len__(self) -> int:
        return len(EDITORS)

    def __repr__(self) -> str:
        return repr(methods())


METHODS_VIEW: Sequence[str] = _Names()          # the engine's METHODS
DISPLAY_NAMES: Mapping[str, str] = _Column("display")   # the workbench's METHOD_NAMES
