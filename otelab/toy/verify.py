r"""``otelab verify``: every identity of the paper, checked numerically in float64.

Each check runs one rule of :mod:`otelab.ote` over a random edit stream (the toy
world of :mod:`otelab.toy.world` at several sizes, up to ``d_i = 256, d_o = 128``, 50
steps) and compares it with a reference built **independently** of the core: the
stacked least-squares problem solved by ``numpy.linalg.lstsq`` (or, for a
non-symmetric P that has no least-squares form, the normal equation assembled
and solved by ``numpy.linalg.solve``), in float64, from the raw keys, values and
request list, never through the core's ``system_matrix``/``solve_normal`` or an
editor's state. PRUNE and RECT are checked against their definitions (a numpy
SVD; a numpy sort), conflict policies against the active set rebuilt from the raw
requests. The reported number is the largest relative residual
``‖X − X_ref‖_F / ‖X_ref‖_F`` over steps and seeds; an identity passes below 1e-9.
Every row's JSON names its reference (``reference``).

The negatives (the naive rule, PRUNE/RECT without Algorithm 1) must leave the
OTE path by more than a threshold, and the toy collapse of notebook 01 (Eq. 3
vs Eq. 4) must reproduce: both count towards pass/fail. On seeds 0–5 the negatives
clear their thresholds by 2× or more and the quick toy's ratio clears its bar (4×) by
1.5× or more (``tests/test_verify.py``); the full toy's bar is notebook 01's acceptance
(10×), met by 13.3–14.8× on seeds 0–4.
"""
from __future__ import annotations

import argparse
import json
import math
import time

TOL = 1e-9


# --------------------------------------------------------------------------- problems

def _sizes(i: int, quick: bool) -> dict:
    """Problem size of seed index ``i``: the first is the largest, the rest vary."""
    if quick:
        table = [(48, 24, 2), (17, 9, 1), (32, 40, 3)]
        return dict(zip(("d_i", "d_o", "n"), table[i % len(table)]), T=8)
    table = [(256, 128, 2), (64, 48, 3), (33, 17, 1), (128, 96, 4), (96, 128, 2)]
    return dict(zip(("d_i", "d_o", "n"), table[i % len(table)]), T=50)


def _world(i: int, quick: bool, **over):
    from otelab.toy.world import ToyConfig, make_world

    s = _sizes(i, quick)
    cfg = ToyConfig(d_o=s["d_o"], d_i=s["d_i"], n0=2 * s["d_i"], r=max(1, s["d_i"] // 4), n=s["n"],
                    T=s["T"], seed=1000 + i, threshold=0.05, lam=0.1, mu=10.0)
    return make_world(cfg, **over)


def _rel(X, Y) -> float:
    import numpy as np

    X, Y = _np(X), _np(Y)
    return float(np.linalg.norm(X - Y) / max(np.linalg.norm(Y), 1e-300))


def _np(X):
    """A float64 numpy copy (references never touch torch's linear algebra)."""
    import numpy as np

    return X.detach().to("cpu").double().numpy().copy() if hasattr(X, "detach") else np.asarray(X, np.float64)


def _random_P(d: int, seed: int):
    """A random, non-symmetric, well-conditioned P (Prop. 3.2 holds for any P)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.eye(d, dtype=torch.float64) + 0.5 * torch.randn(d, d, dtype=torch.float64, generator=g) / math.sqrt(d)


# --------------------------------------------------------------------------- independent references (numpy)

REF_LSTSQ = "numpy lstsq of the stacked least squares"
REF_NORMAL = "numpy solve of the normal equation assembled from the raw inputs"


def ref_lstsq(R, K, *, P=None, K0=None, lam: float = 0.0, Y0=None, Ylam=None):
    """``argmin_Δ ‖Δ P K − R‖² + ‖Δ P K0 − Y0‖² + ‖√λ Δ P − Ylam‖²`` (minimum norm), by numpy lstsq.

    ``P`` must be ``None`` (identity) or a symmetric projector; the minimum-norm
    solution then satisfies ``Δ = Δ P``, the form the paper's normal equations have.

    Arguments:
        R: targets of the edited keys ``[d_o, n]``; K: keys ``[d_i, n]``.
        K0: preserved keys, already scaled so that ``K0 K0ᵀ`` is the weighted C0; Y0: their
            targets (zero if None); lam, Ylam: the Tikhonov rows and their targets (zero if None).
    Returns:
        Δ as a numpy array ``[d_o, d_i]``.
    """
    import numpy as np

    R, K = _np(R), _np(K)
    d_o, d_i = R.shape[0], K.shape[0]
    Xs, Ys = [K], [R]
    if K0 is not None:
        K0 = _np(K0)
        Xs.append(K0), Ys.append(np.zeros((d_o, K0.shape[1])) if Y0 is None else _np(Y0))
    if lam:
        Xs.append(math.sqrt(lam) * np.eye(d_i))
        Ys.append(np.zeros((d_o, d_i)) if Ylam is None else math.sqrt(lam) * _np(Ylam))
    X, Y = np.concatenate(Xs, 1), np.concatenate(Ys, 1)                   # [d_i, m], [d_o, m]
    if P is not None:
        X = _np(P) @ X
    return np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T                      # Δ X ≈ Y


def ref_normal(R, K, *, P=None, C0=None, lam: float = 0.0):
    """``Δ [(C0 + K Kᵀ) P + λ I] = R Kᵀ P`` assembled and solved by numpy (any invertible system)."""
    import numpy as np

    R, K = _np(R), _np(K)
    d_i = K.shape[0]
    Pm = np.eye(d_i) if P is None else _np(P)
    M = K @ K.T + (0 if C0 is None else _np(C0))
    A = M @ Pm + lam * np.eye(d_i)
    return np.linalg.solve(A.T, (R @ K.T @ Pm).T).T


def _ote_ref(w, K, V, *, P=None, C0=True, lam: float = 0.0):
    """The one-time edit of (K, V) from W0: lstsq when P is I or a projector, else the normal equation."""
    if P is not None and not _is_projector(P):
        return ref_normal(_np(V) - _np(w.W0) @ _np(K), K, P=P, C0=_np(w.C0w) if C0 else None, lam=lam)
    return ref_lstsq(_np(V) - _np(w.W0) @ _np(K), K, P=P, K0=_k0(w) if C0 else None, lam=lam)


def _k0(w):
    """Preserved keys scaled so that ``K0 K0ᵀ = C0w = μ K0K0ᵀ / n0`` (the world's weighted C0)."""
    return _np(w.K0) * math.sqrt(w.cfg.mu / w.cfg.n0)


def _is_projector(P) -> bool:
    import numpy as np

    P = _np(P)
    return bool(np.allclose(P, P.T, atol=1e-12) and np.allclose(P @ P, P, atol=1e-10))


def prune_ref(D, W0):
    """PRUNE by its definition: singular values above ``σ_max(W0)`` become ``σ_max + ln(σ/σ_max)``."""
    import numpy as np

    D = _np(D)
    smax = np.linalg.norm(_np(W0), 2)
    U, s, Vh = np.linalg.svd(D, full_matrices=False)
    s2 = np.where(s > smax, smax + np.log(np.maximum(s, smax) / smax), s)
    return (U * s2) @ Vh, int((s > smax).sum())


def rect_ref(D, W0, keep: float):
    """RECT by its definition: exactly the ``round(keep · size)`` largest ``|D / W0|`` entries kept."""
    import numpy as np

    D, W0 = _np(D), _np(W0)
    rel = np.abs(D / W0).ravel()
    k = max(1, int(round(keep * rel.size)))
    mask = np.zeros(rel.size, bool)
    mask[np.argsort(-rel, kind="stable")[:k]] = True
    return D * mask.reshape(D.shape)


# --------------------------------------------------------------------------- identities

def _stacked(Ks, Vs):
    import numpy as np

    return np.concatenate([_np(k) for k in Ks], 1), np.concatenate([_np(v) for v in Vs], 1)


def lemma_3_1(i: int, quick: bool) -> float:
    """Sequential AlphaEdit (Eq. 2, carried K_p K_pᵀ) sums to the OTE of its objective."""
    from otelab import ote
    w = _world(i, quick)
    lam = 1.0
    W, Kp, Ks, Vs, worst = w.W0.clone(), None, [], [], 0.0
    for K, V, _ in w.batches:
        W = W + ote.alphaedit_update(W, K, V, w.P, Kp, lam=lam)
        Kp = K @ K.T if Kp is None else Kp + K @ K.T
        Ks.append(K), Vs.append(V)
        Ka, Va = _stacked(Ks, Vs)
        worst = max(worst, _rel(W - w.W0, ref_lstsq(Va - _np(w.W0) @ Ka, Ka, P=w.P, lam=lam)))
    return worst


def _aligned_vs_ote(w, ed, *, P, lam) -> float:
    W, Ks, Vs, worst = w.W0.clone(), [], [], 0.0
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        Ks.append(K), Vs.append(V)
        Ka, Va = _stacked(Ks, Vs)
        worst = max(worst, _rel(W - w.W0, _ote_ref(w, Ka, Va, P=P, lam=lam)))
    return worst


def prop_3_2(lam: float, kind: str):
    def check(i: int, quick: bool) -> float:
        from otelab import ote
        w = _world(i, quick)
        P = {"I": None, "random": _random_P(w.cfg.d_i, 77 + i), "projector": w.P}[kind]
        ed = ote.SequentialEditor(w.cfg.d_i, "aligned", P=P, C0=w.C0w, lam=lam)
        return _aligned_vs_ote(w, ed, P=P, lam=lam)
    return check


def remark_a_1(i: int, quick: bool) -> float:
    """The carried A_t (one d_i×d_i matrix) equals (C0 + Σ K Kᵀ) P + λI assembled by numpy."""
    import numpy as np

    from otelab import ote
    w = _world(i, quick)
    ed = ote.SequentialEditor(w.cfg.d_i, "aligned", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, Ks, worst = w.W0.clone(), [], 0.0
    k0 = _k0(w)
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        Ks.append(_np(K))
        Ka = np.concatenate(Ks, 1)
        A = (k0 @ k0.T + Ka @ Ka.T) @ _np(w.P) + w.cfg.lam * np.eye(w.cfg.d_i)
        worst = max(worst, _rel(ed.A, A))
    return worst


def eq23_lstsq(W, W0, K, V, K0, lam: float):
    """Δ_t from an independent numpy lstsq of the re-centred OLS (Eq. 23, P = I).

    ``argmin_Δ ‖Δ [K_{1:t}, K0, √λ I] − [V_{1:t} − W K_{1:t}, −S K0, −√λ S]‖²`` with
    ``S = W − W0`` (``W = W_{t−1}``); the aligned step with ``C0 = K0 K0ᵀ`` must equal it.

    Arguments:
        W: ``W_{t−1}`` ``[d_o, d_i]``; W0: unedited weights; K, V: all edits so far,
        ``[d_i, N]``, ``[d_o, N]``; K0: preserved keys ``[d_i, n0]``; lam: λ.
    Returns:
        Δ ``[d_o, d_i]``, a torch tensor (float64, on the CPU) computed by numpy.
    """
    import torch

    S = _np(W) - _np(W0)
    K0 = _np(K0)
    return torch.from_numpy(ref_lstsq(_np(V) - _np(W) @ _np(K), K, K0=K0, Y0=-S @ K0, lam=lam, Ylam=-S))


def cor_a_2(i: int, quick: bool) -> float:
    """Each aligned step solves the re-centred OLS (Eq. 23), checked against lstsq."""
    from otelab import ote
    w = _world(i, quick)
    lam = w.cfg.lam
    ed = ote.SequentialEditor(w.cfg.d_i, "aligned", C0=w.C0, lam=lam)   # C0 = K0 K0ᵀ, P = I
    W, Ks, Vs, worst = w.W0.clone(), [], [], 0.0
    every = max(1, len(w.batches) // 5)
    for t, (K, V, _) in enumerate(w.batches, start=1):
        Ks.append(K), Vs.append(V)
        delta = ed.step(K, V, W)
        if t % every == 0 or t == 1:
            Ka, Va = _stacked(Ks, Vs)
            worst = max(worst, _rel(delta, eq23_lstsq(W, w.W0, Ka, Va, w.K0, lam)))
        W = W + delta
    return worst


def prop_a_3(op: str):
    """Algorithm 1: ``W_t + E_t`` on the OTE path, and each applied step is ``op(Δ̂_t + E_t)`` by definition."""
    def check(i: int, quick: bool) -> float:
        from otelab import ote
        # large targets so that PRUNE actually squashes singular values
        w = _world(i, quick, value_noise=8.0)
        keep = (0.2, 0.4)[i % 2]                                          # the paper's RECT-20 % and the seed code's 40 %
        post = ote.Prune.for_weights(w.W0) if op == "prune" else ote.Rect(w.W0, keep=keep)
        ed = ote.SequentialEditor(w.cfg.d_i, "aligned", C0=w.C0w, lam=w.cfg.lam, post=post, correct=True)
        W, Ks, Vs, worst, squashed = w.W0.clone(), [], [], 0.0, 0
        for K, V, _ in w.batches:
            applied = ed.step(K, V, W)
            W = W + applied
            Ks.append(K), Vs.append(V)
            Ka, Va = _stacked(Ks, Vs)
            worst = max(worst, _rel(W + ed.E - w.W0, _ote_ref(w, Ka, Va, lam=w.cfg.lam)))
            D = applied + ed.E                                            # what the operator was given
            if op == "prune":
                ref, n_big = prune_ref(D, w.W0)
                squashed += n_big
            else:
                ref = rect_ref(D, w.W0, keep)
            worst = max(worst, _rel(applied, ref))
        if op == "prune" and squashed == 0:
            return math.inf                                               # the definition was never exercised
        return worst
    return check


def _resolve_ref(policy: str, old, new):
    """The conflict policies by their definitions (independent of :mod:`otelab.ote`)."""
    return {"latest": new, "first": old, "mean": (_np(old) + _np(new)) / 2}[policy]


def prop_3_5(policy: str):
    """Conflict mode tracks the OTE of the active set rebuilt from the raw request list."""
    def check(i: int, quick: bool) -> float:
        import numpy as np

        from otelab import ote
        w = _world(i, quick, conflict_frac=0.5)
        P = None if i % 2 == 0 else _random_P(w.cfg.d_i, 99 + i)
        resolve = getattr(ote, f"resolve_{policy}")
        ed = ote.SequentialEditor(w.cfg.d_i, "conflict", P=P, C0=w.C0w, lam=w.cfg.lam, resolve=resolve)
        active: dict = {}                                                  # id -> (k, v), from the requests
        W, worst = w.W0.clone(), 0.0
        for t, (K, V, ids) in enumerate(w.batches, start=1):
            W = W + ed.step(K, V, W, ids=ids)
            for j, key_id in enumerate(ids):
                k, v = _np(K[:, j]), _np(V[:, j])
                active[key_id] = (active[key_id][0], _np(_resolve_ref(policy, active[key_id][1], v))) \
                    if key_id in active else (k, v)
            if t % 5 == 0 and len(active) > 1:                             # forget the oldest constraint now and then
                oldest = next(iter(active))
                W = W + ed.forget([oldest], W)
                del active[oldest]
            Ka = np.stack([k for k, _ in active.values()], 1)
            Va = np.stack([v for _, v in active.values()], 1)
            worst = max(worst, _rel(W - w.W0, _ote_ref(w, Ka, Va, P=P, lam=w.cfg.lam)))
        return worst
    return check


def _latest_ref(w, K, V):
    return _ote_ref(w, K, V, P=w.P, lam=w.cfg.lam)


def remark_a_4(i: int, quick: bool) -> float:
    """Eq. 31 (conflict mode, each step drops the previous batch) = the OTE of the latest task."""
    from otelab import ote
    w = _world(i, quick)
    conf = ote.SequentialEditor(w.cfg.d_i, "conflict", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, prev, worst = w.W0.clone(), None, 0.0
    for K, V, ids in w.batches:
        if prev is not None:
            W = W + conf.forget(prev, W)
        W = W + conf.step(K, V, W, ids=ids)
        prev = ids
        worst = max(worst, _rel(W - w.W0, _latest_ref(w, K, V)))
    return worst


def eq_32(i: int, quick: bool) -> float:
    """The re-centred memorize-the-latest rule (Eq. 32) = the OTE of the latest task at every step."""
    from otelab import ote
    w = _world(i, quick)
    ed = ote.SequentialEditor(w.cfg.d_i, "memorize-recentred", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, worst = w.W0.clone(), 0.0
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        worst = max(worst, _rel(W - w.W0, _latest_ref(w, K, V)))
    return worst


def _memorize_steps(w, mode: str, ref) -> float:
    """Max over steps of ‖Δ_t − ref(W_{t−1}, K_t, V_t)‖ for a memorize mode run from W0."""
    from otelab import ote
    ed = ote.SequentialEditor(w.cfg.d_i, mode, P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, worst = w.W0.clone(), 0.0
    for K, V, _ in w.batches:
        delta = ed.step(K, V, W)
        worst = max(worst, _rel(delta, ref(W, K, V)))
        W = W + delta
    return worst


def _eq4_ref(w):
    def ref(W, K, V):
        S, k0 = _np(W) - _np(w.W0), _k0(w)
        return ref_lstsq(_np(V) - _np(W) @ _np(K), K, P=w.P, K0=k0, Y0=-S @ k0, lam=w.cfg.lam)
    return ref


def _eq3_ref(w):
    def ref(W, K, V):
        return ref_lstsq(_np(V) - _np(W) @ _np(K), K, P=w.P, lam=w.cfg.lam)
    return ref


def eq_4(i: int, quick: bool) -> float:
    """Eq. 4 as printed: each step minimises ‖ΔPK − R‖² + ‖(S + ΔP)K0‖² + λ‖ΔP‖²."""
    w = _world(i, quick)
    return _memorize_steps(w, "memorize-full", _eq4_ref(w))


def eq_3(i: int, quick: bool) -> float:
    """Eq. 3: each step minimises ‖ΔPK − R‖² + λ‖ΔP‖² (no preserved keys)."""
    w = _world(i, quick)
    return _memorize_steps(w, "memorize-nullspace", _eq3_ref(w))


def eq_4_exact_null(i: int, quick: bool) -> float:
    """With an exact null space (no key tail, C0 P = 0) the printed Eq. 4 coincides with Eq. 3."""
    w = _world(i, quick, k0_tail=0.0, threshold=1e-9)               # P: exactly the complement of the r key directions
    return _memorize_steps(w, "memorize-full", _eq3_ref(w))


def naive(i: int, quick: bool) -> float:
    """The naive step is the one-time edit of the latest batch from the current weights."""
    from otelab import ote
    w = _world(i, quick)
    ed = ote.SequentialEditor(w.cfg.d_i, "naive", C0=w.C0w, lam=w.cfg.lam)
    W, worst = w.W0.clone(), 0.0
    for K, V, _ in w.batches:
        delta = ed.step(K, V, W)
        worst = max(worst, _rel(delta, ref_lstsq(_np(V) - _np(W) @ _np(K), K, K0=_k0(w), lam=w.cfg.lam)))
        W = W + delta
    return worst


def rls(i: int, quick: bool) -> float:
    """RLSEdit's Woodbury recursion equals the OTE with P = I, C0 = μK0K0ᵀ, λ."""
    from otelab import ote
    w = _world(i, quick)
    ed = ote.SequentialEditor(w.cfg.d_i, "rls", C0=w.C0w, lam=w.cfg.lam)
    return _aligned_vs_ote(w, ed, P=None, lam=w.cfg.lam)


def projector(i: int, quick: bool) -> float:
    """AlphaEdit's projector = U_null U_nullᵀ from numpy's eigendecomposition of K0K0ᵀ/n0."""
    import numpy as np

    w = _world(i, quick)
    C = _np(w.K0) @ _np(w.K0).T / w.cfg.n0
    ev, U = np.linalg.eigh((C + C.T) / 2)
    Un = U[:, ev < w.cfg.threshold]
    return _rel(w.P, Un @ Un.T)


IDENTITIES = [
    ("Lemma 3.1: sequential AlphaEdit = its OTE", "Lemma 3.1, Eq. 2", REF_LSTSQ + " (projector, min-norm)", lemma_3_1),
    ("aligned = OTE, P = I, λ = 0 (sequential MEMIT)", "Prop. 3.2", REF_LSTSQ, prop_3_2(0.0, "I")),
    ("aligned = OTE, projector P, λ = 0.1", "Prop. 3.2", REF_LSTSQ + " (projector, min-norm)",
     prop_3_2(0.1, "projector")),
    ("aligned = OTE, random P, λ = 0", "Prop. 3.2", REF_NORMAL, prop_3_2(0.0, "random")),
    ("aligned = OTE, random P, λ = 0.1", "Prop. 3.2", REF_NORMAL, prop_3_2(0.1, "random")),
    ("aligned = OTE, random P, λ = 10", "Prop. 3.2", REF_NORMAL, prop_3_2(10.0, "random")),
    ("carried A_t = (C0 + Σ K Kᵀ) P + λI", "Remark A.1", "numpy sum of the raw keys' Gram matrices", remark_a_1),
    ("aligned step = lstsq of the re-centred OLS", "Cor. A.2, Eq. 23", REF_LSTSQ + " (Eq. 23 rows)", cor_a_2),
    ("Algorithm 1 + PRUNE: W_t + E_t = OTE; step = PRUNE(D_t)", "Prop. A.3",
     REF_LSTSQ + "; numpy SVD with σ > σ_max(W0) → σ_max + ln(σ/σ_max)", prop_a_3("prune")),
    ("Algorithm 1 + RECT: W_t + E_t = OTE; step = RECT(D_t)", "Prop. A.3",
     REF_LSTSQ + "; numpy sort keeping the top 20 % / 40 % of |D/W0|", prop_a_3("rect")),
    ("conflicts, latest: W_t = OTE of the resolved set", "Prop. 3.5", "active set from the raw requests; "
     + REF_LSTSQ + " (P = I) or " + REF_NORMAL + " (random P)", prop_3_5("latest")),
    ("conflicts, first: W_t = OTE of the resolved set", "Prop. 3.5", "as above", prop_3_5("first")),
    ("conflicts, mean: W_t = OTE of the resolved set", "Prop. 3.5", "as above", prop_3_5("mean")),
    ("memorize via conflicts (Eq. 31) = OTE of the latest task", "Remark A.4, Eq. 31",
     REF_LSTSQ + " of the latest batch (projector, min-norm)", remark_a_4),
    ("re-centred memorize (Eq. 32) = OTE of the latest task", "Remark A.4, Eq. 32", "as above", eq_32),
    ("Eq. 4 as printed: step minimises latest + ‖(S+Δ)K0‖² + λ‖Δ‖²", "Eq. 4",
     REF_LSTSQ + " of the step (projector, min-norm)", eq_4),
    ("Eq. 3: step minimises latest + λ‖Δ‖²", "Eq. 3", REF_LSTSQ + " of the step (projector, min-norm)", eq_3),
    ("exact null space: Eq. 4 = Eq. 3", "Eq. 3-4", REF_LSTSQ + " of the Eq. 3 step", eq_4_exact_null),
    ("naive step = OTE of the latest batch from W_{t-1}", "Table 2 ablation", REF_LSTSQ, naive),
    ("RLSEdit recursion = OTE", "RLSEdit", REF_LSTSQ, rls),
    ("null-space projector = U_null U_nullᵀ", "AlphaEdit", "numpy eigh of K0K0ᵀ/n0", projector),
]


# --------------------------------------------------------------------------- negatives

# name, paper, rule, the smallest final distance from the OTE path that counts as drift
# (quick problems, seeds 0-5, clear at least 2× these: tests/test_verify.py)
NEGATIVES = [
    ("naive rule (repeated OTE)", "Lemma 3.1 converse", "naive", 0.05),
    ("PRUNE without correction", "Prop. A.3 converse", "prune", 0.05),
    ("RECT without correction", "Prop. A.3 converse", "rect", 0.05),
]


def _drift(i: int, quick: bool, rule: str) -> list[float]:
    """Distance from the OTE path, ``‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖`` (numpy reference), per step."""
    from otelab import ote
    w = _world(i, quick, value_noise=8.0) if rule in ("prune", "rect") else _world(i, quick)
    post = {"prune": lambda: ote.Prune.for_weights(w.W0), "rect": lambda: ote.Rect(w.W0, keep=0.2)}.get(rule)
    ed = ote.SequentialEditor(w.cfg.d_i, "naive" if rule == "naive" else "aligned", C0=w.C0w, lam=w.cfg.lam,
                              post=post() if post else None, correct=False)
    W, Ks, Vs, out = w.W0.clone(), [], [], []
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        Ks.append(K), Vs.append(V)
        Ka, Va = _stacked(Ks, Vs)
        ref = _ote_ref(w, Ka, Va, lam=w.cfg.lam)
        out.append(_rel(_np(W) - _np(w.W0), ref))
    return out


# --------------------------------------------------------------------------- toy collapse

# the quick toy: 53 of 64 dims in the projector; over seeds 0-5 its final ratio is 6.9-10.3
QUICK_TOY = dict(d_o=32, d_i=64, n0=500, r=16, T=60)
TOY_MIN_RATIO = {False: 10.0, True: 4.0}


def toy_collapse(quick: bool, seed: int = 0) -> dict:
    """Notebook 01's collapse (Eq. 3 vs printed Eq. 4), with its pass/fail bar.

    Returns:
        :func:`otelab.toy.world.collapse_summary` plus ``min_ratio`` and ``passed`` (ratio ≥ min_ratio
        and Eq. 3's preserved error still rising).
    """
    from otelab.toy.world import ToyConfig, collapse_summary

    cfg = ToyConfig(seed=seed, **(QUICK_TOY if quick else {}))
    res = collapse_summary(cfg, steps=(1, 10, 20, 30, cfg.T) if quick else (1, 10, 20, 50, 100, 200))
    res["min_ratio"] = TOY_MIN_RATIO[quick]
    res["passed"] = bool(math.isfinite(res["final_ratio"]) and res["final_ratio"] >= res["min_ratio"]
                         and res["rising"])
    res["reference"] = "notebook 01's toy: preserved error of Eq. 3 / Eq. 4 at the last step"
    return res


# --------------------------------------------------------------------------- command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``otelab verify``."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=3, help="random problems per identity (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="small problems, 8 steps, a small toy collapse (seconds)")


def verify(seeds: int = 3, quick: bool = False) -> dict:
    """Run every check; return the results as a JSON-able dict.

    Arguments:
        seeds: random problems per identity; quick: small problems and the small toy.
    Returns:
        ``{"identities": [{name, ref, reference, max_rel_residual, passed}],
        "negatives": [{name, ref, reference, steps, ote_distance, threshold, grows, passed}],
        "toy_collapse": {..., passed}, "passed": bool, "tolerance": 1e-9, "seconds": float}``;
        ``passed`` is true only when every identity holds, every negative drifts past its
        threshold on every seed and the toy collapse reproduces.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {seeds}")
    start = time.perf_counter()
    rows = []
    for name, ref, reference, fn in IDENTITIES:
        row = {"name": name, "ref": ref, "reference": reference}
        try:
            res = max(fn(i, quick) for i in range(seeds))
        except Exception as err:  # a broken rule may raise instead of answering wrongly: that is a failure too
            res, row["error"] = math.inf, f"{type(err).__name__}: {err}"
        rows.append({**row, "max_rel_residual": res, "passed": bool(math.isfinite(res) and res < TOL)})
    negs = []
    for name, ref, rule, threshold in NEGATIVES:
        try:
            runs = [_drift(i, quick, rule) for i in range(seeds)]
        except Exception:  # noqa: BLE001 -- reported as a failed row (no distance)
            runs = [[math.nan]]
        d = runs[0]
        T = len(d)
        at = sorted({1, max(1, T // 10), max(1, T // 2), T})
        final = min(r[-1] for r in runs)
        negs.append({"name": name, "ref": ref, "reference": REF_LSTSQ + " of all edits so far",
                     "steps": at, "ote_distance": [d[s - 1] for s in at], "min_final_distance": final,
                     "threshold": threshold, "grows": bool(d[-1] > d[0]),
                     "passed": bool(math.isfinite(final) and final > threshold)})
    try:
        toy = toy_collapse(quick)
    except Exception as err:  # noqa: BLE001 -- reported as a failed row
        toy = {"passed": False, "error": f"{type(err).__name__}: {err}"}
    ok = all(r["passed"] for r in rows) and all(r["passed"] for r in negs) and toy["passed"]
    return {"identities": rows, "negatives": negs, "toy_collapse": toy, "passed": bool(ok), "tolerance": TOL,
            "seconds": time.perf_counter() - start}


def _fmt(x: float) -> str:
    return f"{x:.1e}" if x else "0"


def format_report(res: dict) -> str:
    """The human-readable table of :func:`verify`'s result."""
    lines = []
    w = max(len(r["name"]) for r in res["identities"]) + 2
    wr = max(len(r["ref"]) for r in res["identities"]) + 2
    lines.append(f"{'identity':<{w}}{'paper':<{wr}}{'max rel. residual':>18}  result")
    lines.append("-" * (w + wr + 26))
    for r in res["identities"]:
        lines.append(f"{r['name']:<{w}}{r['ref']:<{wr}}{_fmt(r['max_rel_residual']):>18}  "
                     f"{'pass' if r['passed'] else 'FAIL'}" + (f"  ({r['error']})" if "error" in r else ""))
    lines.append("")
    lines.append("expected to drift (distance from the OTE path, ‖W_t − W_OTE,t‖/‖W_OTE,t − W0‖):")
    for r in res["negatives"]:
        pts = ", ".join(f"t={s}: {v:.3g}" for s, v in zip(r["steps"], r["ote_distance"]))
        lines.append(f"  {r['name']:<28}{r['ref']:<20}{pts}  (needs > {r['threshold']:g}: "
                     f"{'pass' if r['passed'] else 'FAIL'})")
    toy = res.get("toy_collapse")
    if toy and "error" in toy:
        lines += ["", f"toy collapse: FAIL ({toy['error']})"]
    elif toy:
        lines.append("")
        lines.append(f"toy collapse (notebook 01, memorize-the-latest, {toy['null_dims']} null dims, "
                     f"batch {toy['config']['n']}, seed {toy['config']['seed']}): preserved error ‖W_t K0 − V0‖/‖V0‖")
        lines.append("  step        " + "".join(f"{s:>8}" for s in toy["steps"]))
        lines.append("  Eq. 3 (null)" + "".join(f"{v:>8.3f}" for v in toy["nullspace_at_steps"]))
        lines.append("  Eq. 4 (full)" + "".join(f"{v:>8.3f}" for v in toy["full_at_steps"]))
        lines.append(f"  ratio at step {toy['steps'][-1]}: {toy['final_ratio']:.1f}x (needs ≥ {toy['min_ratio']:g}), "
                     f"still rising: {toy['rising']} -> "
                     f"{'pass: collapse reproduced' if toy['passed'] else 'FAIL: collapse NOT reproduced'}")
    lines.append("")
    n_fail = sum(not r["passed"] for r in res["identities"])
    lines.append(f"{len(res['identities']) - n_fail}/{len(res['identities'])} identities hold to "
                 f"{res['tolerance']:g}; {sum(r['passed'] for r in res['negatives'])}/{len(res['negatives'])} "
                 f"negatives drift; toy collapse {'reproduced' if toy and toy['passed'] else 'NOT reproduced'}: "
                 f"{'PASS' if res['passed'] else 'FAIL'} ({res['seconds']:.1f} s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``otelab verify``; exit status 1 if any row fails."""
    res = verify(seeds=args.seeds, quick=args.quick)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(format_report(res))
    return 0 if res["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run as a script: ``python -m otelab.toy.verify [--json] [--seeds N] [--quick]``."""
    parser = argparse.ArgumentParser(prog="otelab verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
