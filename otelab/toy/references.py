"""Verify's references: seeded toy problems and numpy solutions built independently of the core.

``otelab verify`` (:mod:`otelab.toy.verify`) compares every rule of :mod:`otelab.ote` with these: the
stacked least squares solved by ``numpy.linalg.lstsq`` (or the normal equation assembled and solved
by ``numpy.linalg.solve`` for a non-symmetric P), PRUNE and RECT by their definitions, all in float64
from the raw keys and values, never through the core's ``system_matrix``/``solve_normal``.
"""
from __future__ import annotations

import math

# --------------------------------------------------------------------------- problems

def _sizes(i: int, quick: bool) -> dict:
    """Problem size of seed index ``i``: the first is the largest, the rest vary."""
    if quick:
        table = [(48, 24, 2), (17, 9, 1), (32, 40, 3)]
        return dict(zip(("d_i", "d_o", "n"), table[i % len(table)]), T=8)
    table = [(256, 128, 2), (64, 48, 3), (33, 17, 1), (128, 96, 4), (96, 128, 2)]
    return dict(zip(("d_i", "d_o", "n"), table[i % len(table)]), T=50)


def problem_world(i: int, quick: bool, **over):
    from otelab.toy.world import ToyConfig, make_world

    s = _sizes(i, quick)
    cfg = ToyConfig(d_o=s["d_o"], d_i=s["d_i"], n0=2 * s["d_i"], r=max(1, s["d_i"] // 4), n=s["n"],
                    T=s["T"], seed=1000 + i, threshold=0.05, lam=0.1, mu=10.0)
    return make_world(cfg, **over)


def rel_residual(X, Y) -> float:
    import numpy as np

    X, Y = to_np(X), to_np(Y)
    return float(np.linalg.norm(X - Y) / max(np.linalg.norm(Y), 1e-300))


def to_np(X):
    """A float64 numpy copy (references never touch torch's linear algebra)."""
    import numpy as np

    return X.detach().to("cpu").double().numpy().copy() if hasattr(X, "detach") else np.asarray(X, np.float64)


def random_P(d: int, seed: int):
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

    R, K = to_np(R), to_np(K)
    d_o, d_i = R.shape[0], K.shape[0]
    Xs, Ys = [K], [R]
    if K0 is not None:
        K0 = to_np(K0)
        Xs.append(K0), Ys.append(np.zeros((d_o, K0.shape[1])) if Y0 is None else to_np(Y0))
    if lam:
        Xs.append(math.sqrt(lam) * np.eye(d_i))
        Ys.append(np.zeros((d_o, d_i)) if Ylam is None else math.sqrt(lam) * to_np(Ylam))
    X, Y = np.concatenate(Xs, 1), np.concatenate(Ys, 1)                   # [d_i, m], [d_o, m]
    if P is not None:
        X = to_np(P) @ X
    return np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T                      # Δ X ≈ Y


def ref_normal(R, K, *, P=None, C0=None, lam: float = 0.0):
    """``Δ [(C0 + K Kᵀ) P + λ I] = R Kᵀ P`` assembled and solved by numpy (any invertible system)."""
    import numpy as np

    R, K = to_np(R), to_np(K)
    d_i = K.shape[0]
    Pm = np.eye(d_i) if P is None else to_np(P)
    M = K @ K.T + (0 if C0 is None else to_np(C0))
    A = M @ Pm + lam * np.eye(d_i)
    return np.linalg.solve(A.T, (R @ K.T @ Pm).T).T


def ote_ref(w, K, V, *, P=None, C0=True, lam: float = 0.0):
    """The one-time edit of (K, V) from W0: lstsq when P is I or a projector, else the normal equation."""
    if P is not None and not _is_projector(P):
        return ref_normal(to_np(V) - to_np(w.W0) @ to_np(K), K, P=P, C0=to_np(w.C0w) if C0 else None, lam=lam)
    return ref_lstsq(to_np(V) - to_np(w.W0) @ to_np(K), K, P=P, K0=scaled_k0(w) if C0 else None, lam=lam)


def scaled_k0(w):
    """Preserved keys scaled so that ``K0 K0ᵀ = C0w = μ K0K0ᵀ / n0`` (the world's weighted C0)."""
    return to_np(w.K0) * math.sqrt(w.cfg.mu / w.cfg.n0)


def _is_projector(P) -> bool:
    import numpy as np

    P = to_np(P)
    return bool(np.allclose(P, P.T, atol=1e-12) and np.allclose(P @ P, P, atol=1e-10))


def prune_ref(D, W0):
    """PRUNE by its definition: singular values above ``σ_max(W0)`` become ``σ_max + ln(σ/σ_max)``."""
    import numpy as np

    D = to_np(D)
    smax = np.linalg.norm(to_np(W0), 2)
    U, s, Vh = np.linalg.svd(D, full_matrices=False)
    s2 = np.where(s > smax, smax + np.log(np.maximum(s, smax) / smax), s)
    return (U * s2) @ Vh, int((s > smax).sum())


def rect_ref(D, W0, keep: float):
    """RECT by its definition: exactly the ``round(keep · size)`` largest ``|D / W0|`` entries kept."""
    import numpy as np

    D, W0 = to_np(D), to_np(W0)
    rel = np.abs(D / W0).ravel()
    k = max(1, int(round(keep * rel.size)))
    mask = np.zeros(rel.size, bool)
    mask[np.argsort(-rel, kind="stable")[:k]] = True
    return D * mask.reshape(D.shape)



def stacked(Ks, Vs):
    import numpy as np

    return np.concatenate([to_np(k) for k in Ks], 1), np.concatenate([to_np(v) for v in Vs], 1)
