"""Mutation test of ``otelab verify``: each deliberate break of the core must make it fail.

Every mutation is a small monkeypatch of :mod:`otelab.ote` (or the toy's rule table);
``verify(seeds=2, quick=True)`` runs in about two seconds, and must report
``passed = False`` with at least one failing row. The unmutated core must pass.
"""
from __future__ import annotations

import pytest
import torch

from otelab import ote

from otelab.toy import world as toy

from otelab.toy import verify
_system_matrix, _aligned, _rls, _rect = ote.system_matrix, ote.aligned_update, ote.rls_step, ote.rect


def _p_wrong_side(K, *, P=None, C0=None, lam=0.0, d_i=None, like=None):
    A = _system_matrix(K, C0=C0, d_i=d_i, like=like)                      # (C0 + K Kᵀ)
    A = A if P is None else P @ A                                          # P on the left
    return A + lam * torch.eye(A.shape[0], dtype=A.dtype) if lam else A


def _lam_on_c0(K, *, P=None, C0=None, lam=0.0, d_i=None, like=None):
    C0 = None if C0 is None else (1 + lam) * C0
    return _system_matrix(K, P=P, C0=C0, lam=lam, d_i=d_i, like=like)


def _no_carry(W, K, V, A_prev, *, P=None):
    delta, _ = _aligned(W, K, V, A_prev, P=P)
    return delta, A_prev                                                   # A_t not accumulated


def _alg1_without_e(W, K, V, A_prev, E, post, *, P=None):
    delta, A = _aligned(W + E, K, V, A_prev, P=P)
    applied = post(delta)                                                  # D_t = Δ_t, E dropped
    return applied, A, delta - applied


def _alg1_from_w(W, K, V, A_prev, E, post, *, P=None):
    delta, A = _aligned(W, K, V, A_prev, P=P)                              # step from W, not W + E
    D = delta + E
    applied = post(D)
    return applied, A, D - applied


def _rect_smallest(D, W_ref, keep=0.2):
    rel = (D / W_ref.abs()).abs().flatten()
    k = max(1, int(round(keep * rel.numel())))
    mask = torch.zeros_like(rel, dtype=torch.bool)
    mask[torch.topk(rel, k, largest=False).indices] = True
    return D * mask.view_as(D)


def _rls_no_q(W, K, V, Q):
    delta, _ = _rls(W, K, V, Q)
    return delta, Q


MUTATIONS = {
    "P on the wrong side of the system matrix": (ote, "system_matrix", _p_wrong_side),
    "λ also weights C0": (ote, "system_matrix", _lam_on_c0),
    "aligned rule drops the carried A_t": (ote, "aligned_update", _no_carry),
    "Algorithm 1 without E": (ote, "corrected_step", _alg1_without_e),
    "Algorithm 1 stepping from W": (ote, "corrected_step", _alg1_from_w),
    "PRUNE -> 0": (ote, "prune", lambda D, sigma_ref: torch.zeros_like(D)),
    "PRUNE -> identity": (ote, "prune", lambda D, sigma_ref: D),
    "RECT keeps the smallest entries": (ote, "rect", _rect_smallest),
    "Eq. 4 without its C0 term": (ote, "omitted_term", lambda S, P=None, C0=None: torch.zeros_like(S)),
    "Eq. 4 re-centred (the old −λS)": (ote, "memorize_latest_full", ote.memorize_latest_recentred),
    "resolve latest returns the old value": (ote, "resolve_latest", ote.resolve_first),
    "resolve first returns the new value": (ote, "resolve_first", ote.resolve_latest),
    "resolve mean returns the new value": (ote, "resolve_mean", ote.resolve_latest),
    "RLSEdit without its Q update": (ote, "rls_step", _rls_no_q),
    "naive step -> 0": (ote, "naive_update", lambda W, K, V, **kw: torch.zeros_like(W)),
    "Eq. 3 := Eq. 4 in the toy": (toy.RULES, "memorize-nullspace", toy.RULES["memorize-full"]),
}


def test_unmutated_core_passes():
    res = verify.verify(seeds=2, quick=True)
    assert res["passed"], verify.format_report(res)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutation_is_caught(name, monkeypatch):
    target, attr, broken = MUTATIONS[name]
    if isinstance(target, dict):
        monkeypatch.setitem(target, attr, broken)
    else:
        monkeypatch.setattr(target, attr, broken)
    res = verify.verify(seeds=2, quick=True)
    failed = [r["name"] for r in res["identities"] + res["negatives"] if not r["passed"]]
    if not res["toy_collapse"]["passed"]:
        failed.append("toy collapse")
    assert not res["passed"] and failed, f"verify did not notice: {name}"


def test_at_least_twelve_mutations():
    assert len(MUTATIONS) >= 12
