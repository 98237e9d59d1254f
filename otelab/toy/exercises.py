r"""Checkers for the notebook exercises: run the learner's update rule against :mod:`otelab.ote`.

Each ``check_*`` takes the learner's function, runs it on small random float64
problems (a few steps of a tiny toy world), compares every output with the
reference rule, prints one line of feedback and returns a :class:`CheckResult`
(truthy when it matches, so a notebook cell can ``assert`` it). Shapes are
checked first; when the answer is wrong the checker tries the classic mistakes
and names the one that matches.

=========================  ================================================  ============
checker                    the learner writes                                notebook
=========================  ================================================  ============
:func:`check_eq4`          ``fn(W, K, V, S, P, C0, lam) -> Δ`` (Eq. 4)       01
:func:`check_ote_update`   ``fn(W0, K, V, C0, lam) -> Δ_total`` (P = I)      02
:func:`check_aligned_step` ``fn(W, K, V, A_prev, P) -> (Δ, A)``              02
:func:`check_prop_a3`      ``fn(W, K, V, A_prev, E, post) -> (Δ̂, A, E)``     03
:func:`check_conflict_step` ``fn(W, A_prev, K, V_old, V_new, P) -> Δ``       04
=========================  ================================================  ============

The reference solutions are kept apart from the exercises, as in ARENA's notebooks:
:func:`solution` shows one only when it is called (``solution("eq4")`` for ``check_eq4``),
and a notebook keeps its copy in a hidden cell after the exercise and its checker.
"""
from __future__ import annotations

from typing import Callable

import torch

from otelab import ote
from otelab.toy.checking import (
    CheckResult, Tensor, call_learner, compare_outputs, exercise_world, rel_error, report_match, unpack_outputs,
)
from otelab.toy.solutions import SOLUTIONS, Solution, solution

__all__ = ["CheckResult", "Solution", "SOLUTIONS", "solution", "check_ote_update", "check_aligned_step",
           "check_prop_a3", "check_eq4", "check_conflict_step"]


# --------------------------------------------------------------------------- checkers

def check_ote_update(fn: Callable) -> CheckResult:
    """The one-time edit with P = I: ``fn(W0, K, V, C0, lam) -> Δ_total`` ``[d_o, d_i]``.

    Reference: :func:`otelab.ote.ote_update`, i.e. ``Δ (C0 + K Kᵀ + λ I) = (V − W0 K) Kᵀ``.
    """
    worst = 0.0
    for step, (lam, use_c0) in enumerate([(0.1, True), (0.0, True), (1.0, False)], start=1):
        w = exercise_world(step)
        K = torch.cat([b[0] for b in w.batches], 1)
        V = torch.cat([b[1] for b in w.batches], 1)
        C0 = w.C0w if use_c0 else None
        out, err = call_learner(fn, step, w.W0.clone(), K.clone(), V.clone(), C0, lam)
        if err is not None:
            return err
        ref = ote.ote_update(w.W0, K, V, C0=C0, lam=lam)
        hints = [("the residual is V − W0 K (the edit starts from W0)",
                  (ote.solve_normal((V @ K.T), ote.system_matrix(K, C0=C0, lam=lam)),)),
                 ("the preserved term C0 belongs in the system matrix (C0 + K Kᵀ + λ I)",
                  (ote.ote_update(w.W0, K, V, lam=lam),) if C0 is not None else (None,)),
                 ("did you forget λ I?", (ote.ote_update(w.W0, K, V, C0=C0),) if lam and C0 is not None
                  else (None,))]
        worst, bad = compare_outputs((out,), (ref,), ("Δ_total",), step, worst, hints)
        if bad is not None:
            return bad
    return report_match(worst, "your one-time edit")


def check_aligned_step(fn: Callable) -> CheckResult:
    """One OTE-aligned step: ``fn(W, K, V, A_prev, P) -> (Δ, A)``.

    ``A_prev = (C0 + K_{1:t−1}K_{1:t−1}ᵀ) P + λ I`` (at t = 1: ``C0 P + λ I``); the step solves
    ``Δ A = (V − W K) Kᵀ P`` with ``A = A_prev + K Kᵀ P``. Reference: :func:`otelab.ote.aligned_update`.
    Runs a 5-step stream with a null-space projector P, then with ``P = None`` (identity).
    """
    worst = 0.0
    for use_P in (True, False):
        w = exercise_world(11 if use_P else 12)
        P = w.P if use_P else None
        A = ote.system_matrix(None, P=P, C0=w.C0w, lam=w.cfg.lam, d_i=w.cfg.d_i, like=w.W0)
        W = w.W0.clone()
        for step, (K, V, _) in enumerate(w.batches, start=1):
            out, err = call_learner(fn, step, W.clone(), K.clone(), V.clone(), A.clone(), P)
            if err is not None:
                return err
            outs, err = unpack_outputs(out, ("Δ", "A"), step)
            if err is not None:
                return err
            d_ref, A_ref = ote.aligned_update(W, K, V, A, P=P)
            naive = ote.naive_update(W, K, V, P=P, C0=w.C0w, lam=w.cfg.lam)
            A_noP = A + K @ K.T
            hints = [("did you include the accumulated Gram matrix? A must be A_prev + K Kᵀ P, "
                      "not (C0 + K Kᵀ) P + λ I", (naive, None)),
                     ("the new keys enter the system matrix through P: A = A_prev + K Kᵀ P",
                      (None, A_noP) if use_P else (None, None)),
                     ("the residual uses the current weights: R = V − W K, not V − W0 K",
                      (ote.aligned_update(w.W0, K, V, A, P=P)[0], A_ref))]
            worst, bad = compare_outputs(tuple(outs), (d_ref, A_ref), ("Δ", "A"), step, worst, hints)
            if bad is not None:
                return bad
            W, A = W + d_ref, A_ref
    return report_match(worst, "your aligned step")


def check_prop_a3(fn: Callable) -> CheckResult:
    """Algorithm 1: ``fn(W, K, V, A_prev, E, post) -> (Δ̂, A, E_new)`` with P = I.

    Either convention for the carried error is accepted:

    * otelab's (weight space): take the aligned step from the virtual weights ``W + E``,
      add the carried error, post-process, and carry what the operator removed;
    * the paper's, verbatim (right-hand side): ``D = (R Kᵀ − E) A⁻¹``, ``Δ̂ = post(D)``,
      ``E_new = (Δ̂ − D) A``, i.e. ``E_paper = −E_otelab · A_t``.

    The convention is read off the first step where the error is not zero, and the
    learner's own ``E`` is fed back from then on. Reference: :func:`otelab.ote.corrected_step`.
    Runs RECT (keep 20 %), then PRUNE, for 5 steps each; also checks Prop. A.3.
    """
    worst, conv = 0.0, None
    for which in ("rect", "prune"):
        w = exercise_world(21 if which == "rect" else 22, value_noise=8.0)
        post = ote.EDITORS[which].post(w.W0, **ote.EDITORS[which].options)   # RECT keeps its default 20 %
        lam, C0 = w.cfg.lam, w.C0w
        A = ote.system_matrix(None, C0=C0, lam=lam, d_i=w.cfg.d_i, like=w.W0)
        W, E = w.W0.clone(), torch.zeros_like(w.W0)
        for step, (K, V, _) in enumerate(w.batches, start=1):
            E_in = -E @ A if conv == "paper" else E                # the learner's own convention
            out, err = call_learner(fn, step, W.clone(), K.clone(), V.clone(), A.clone(), E_in.clone(), post)
            if err is not None:
                return err
            outs, err = unpack_outputs(out, ("Δ̂", "A", "E"), step)
            if err is not None:
                return err
            ref = ote.corrected_step(W, K, V, A, E, post)
            E_paper = -ref[2] @ ref[1]
            if conv is None and isinstance(outs[2], Tensor) and outs[2].shape == ref[2].shape and ref[2].norm() > 0:
                closer_to_paper = rel_error(outs[2].to(E_paper), E_paper) < rel_error(outs[2].to(ref[2]), ref[2])
                conv = "paper" if closer_to_paper else "otelab"
            want = (ref[0], ref[1], E_paper if conv == "paper" else ref[2])
            from_W, A1 = ote.aligned_update(W, K, V, A)
            no_carry = post(ote.aligned_update(W + E, K, V, A)[0])
            hints = [("take the aligned step from the virtual weights W + E, not from W",
                      (post(from_W + E), A1, None)),
                     ("post-process the step plus the carried error, D = Δ + E", (no_carry, None, None)),
                     ("the new error is what the operator removed: E_new = D − post(D) "
                      "(or, in the paper's convention, (post(D) − D) A)", (ref[0], ref[1], -want[2]))]
            worst, bad = compare_outputs(tuple(outs), want, ("Δ̂", "A", "E"), step, worst, hints)
            if bad is not None:
                return bad
            W, A, E = W + ref[0], ref[1], ref[2]
    how = " (the paper's convention, E_paper = −E·A)" if conv == "paper" else ""
    return report_match(worst, f"your Algorithm 1{how} (RECT and PRUNE)")


def check_eq4(fn: Callable) -> CheckResult:
    """Memorize-the-latest with the preserved term (Eq. 4 as printed): ``fn(W, K, V, S, P, C0, lam) -> Δ``.

    ``Δ [(C0 + K Kᵀ) P + λ I] = (V − W K) Kᵀ P − S C0 P`` with ``S = W − W0``.
    Reference: :func:`otelab.ote.memorize_latest_full`. Runs a 5-step stream with a
    null-space projector, then one with a random non-symmetric P (which does not
    commute with C0, so ``S C0 P``, ``S P C0`` and ``P``-on-the-left answers differ).
    """
    worst = 0.0
    for kind in ("projector", "random"):
        w = exercise_world(31 if kind == "projector" else 32)
        C0, lam = w.C0w, w.cfg.lam
        if kind == "projector":
            P = w.P
        else:
            g = torch.Generator().manual_seed(33)
            d = w.cfg.d_i
            P = torch.eye(d, dtype=torch.float64) + 0.5 * torch.randn(d, d, dtype=torch.float64, generator=g) / d ** 0.5
        W = w.W0.clone()
        for step, (K, V, _) in enumerate(w.batches, start=1):
            S = W - w.W0
            out, err = call_learner(fn, step, W.clone(), K.clone(), V.clone(), S.clone(), P, C0, lam)
            if err is not None:
                return err
            ref = ote.memorize_latest_full(W, K, V, S, P=P, C0=C0, lam=lam)
            A = ote.system_matrix(K, P=P, C0=C0, lam=lam)
            R = (V - W @ K) @ K.T @ P
            hints = [("that is Eq. 3: Eq. 4 keeps C0 in the system matrix and the preserved term −S C0 P on the right",
                      (ote.memorize_latest_nullspace(W, K, V, P, lam),)),
                     ("that is the re-centred rule (Eq. 32, −S (C0 P + λ I)); Eq. 4 as printed has no −λ S",
                      (ote.memorize_latest_recentred(W, K, V, S, P=P, C0=C0, lam=lam),)),
                     ("the preserved term is −S C0 P: P on the right of C0, not −S P C0",
                      (ote.solve_normal(R - S @ P @ C0, A),)),
                     ("the system matrix is (C0 + K Kᵀ) P + λ I: C0 belongs in it too",
                      (ote.solve_normal(R - S @ C0 @ P, ote.system_matrix(K, P=P, lam=lam)),))]
            worst, bad = compare_outputs((out,), (ref,), ("Δ",), step, worst, hints)
            if bad is not None:
                return bad
            W = W + ref
    return report_match(worst, "your Eq. 4 step")


def check_conflict_step(fn: Callable) -> CheckResult:
    """Re-valuing edited keys (Prop. 3.5): ``fn(W, A_prev, K, V_old, V_new, P) -> Δ``.

    ``W`` is on the OTE path of a constraint set that holds ``K`` with values ``V_old``;
    the step moves it to the OTE of the same set with ``V_new``:
    ``Δ A = (V_new − V_old) Kᵀ P`` (``A`` unchanged). Reference:
    :func:`otelab.ote.conflict_update`.
    """
    worst = 0.0
    for step, use_P in enumerate((False, True, False), start=1):
        w = exercise_world(40 + step)
        P = w.P if use_P else None
        ed = ote.SequentialEditor(w.cfg.d_i, "conflict", P=P, C0=w.C0w, lam=w.cfg.lam)
        W = w.W0.clone()
        for K, V, ids in w.batches[:3]:
            W = W + ed.step(K, V, W, ids=ids)
        K, V_old, _ = w.batches[1]
        V_new = w.batches[4][1]
        out, err = call_learner(fn, step, W.clone(), ed.A.clone(), K.clone(), V_old.clone(), V_new.clone(), P)
        if err is not None:
            return err
        ref, _ = ote.conflict_update(W, ed.A, P=P, K_changed=K, V_old=V_old, V_resolved=V_new)
        as_new, _ = ote.conflict_update(W, ed.A, P=P, K_new=K, V_new=V_new)
        B = (V_new - W @ K) @ K.T                                   # [d_o, d_i]
        resid = ote.solve_normal(B if P is None else B @ P, ed.A)
        hints = [("the key is already a constraint: it keeps its place in A (do not add K Kᵀ P again)",
                  (as_new,)),
                 ("the right-hand side is (V_new − V_old) Kᵀ P: W already fits the old values only in the "
                  "least-squares sense, so V − W K is not the change of target", (resid,))]
        worst, bad = compare_outputs((out,), (ref,), ("Δ",), step, worst, hints)
        if bad is not None:
            return bad
    return report_match(worst, "your conflict step")
