"""Tests for otelab.exercises: each checker accepts the reference and rejects classic mistakes with a hint."""
from __future__ import annotations

from otelab import exercises as ex
from otelab import ote


def test_ote_update_checker(capsys):
    assert ex.check_ote_update(lambda W0, K, V, C0, lam: ote.ote_update(W0, K, V, C0=C0, lam=lam))
    assert "✓" in capsys.readouterr().out
    res = ex.check_ote_update(lambda W0, K, V, C0, lam: ote.ote_update(W0, K, V, lam=lam))
    assert not res and "C0 belongs in the system matrix" in res.message
    res = ex.check_ote_update(lambda W0, K, V, C0, lam: ote.ote_update(W0, K, V, C0=C0, lam=lam).T)
    assert not res and "expected a tensor of shape [7, 12]" in res.message


def test_aligned_step_checker():
    assert ex.check_aligned_step(lambda W, K, V, A, P: ote.aligned_update(W, K, V, A, P=P))

    def half(W, K, V, A, P):                  # right A, wrong Δ
        d, A_new = ote.aligned_update(W, K, V, A, P=P)
        return 0.5 * d, A_new
    res = ex.check_aligned_step(half)
    assert not res and res.step == 1 and res.max_rel_error > 1e-3

    def forgot_gram(W, K, V, A, P):          # (C0 + K Kᵀ) P + λ I with the latest batch only
        C0 = ex._world(11).C0w
        return ote.naive_update(W, K, V, P=P, C0=C0, lam=0.1), ote.system_matrix(K, P=P, C0=C0, lam=0.1)
    res = ex.check_aligned_step(forgot_gram)
    assert not res and res.step == 2 and "accumulated Gram matrix" in res.message


def test_aligned_step_checker_reports_exceptions_and_bad_returns():
    def boom(W, K, V, A, P):
        raise RuntimeError("boom")
    res = ex.check_aligned_step(boom)
    assert not res and "RuntimeError" in res.message and "boom" in res.message
    res = ex.check_aligned_step(lambda W, K, V, A, P: None)
    assert not res and "tuple (Δ, A)" in res.message


def test_prop_a3_checker():
    assert ex.check_prop_a3(lambda W, K, V, A, E, post: ote.corrected_step(W, K, V, A, E, post))

    def from_W(W, K, V, A, E, post):
        d, A2 = ote.aligned_update(W, K, V, A)
        D = d + E
        return post(D), A2, D - post(D)
    res = ex.check_prop_a3(from_W)
    assert not res and "virtual weights W + E" in res.message


def test_eq4_checker():
    assert ex.check_eq4(lambda W, K, V, S, P, C0, lam: ote.memorize_latest_full(W, K, V, S, P=P, C0=C0, lam=lam))
    res = ex.check_eq4(lambda W, K, V, S, P, C0, lam: ote.memorize_latest_nullspace(W, K, V, P, lam))
    assert not res and "Eq. 3" in res.message and "omitted term" in res.message


def test_conflict_checker():
    assert ex.check_conflict_step(
        lambda W, A, K, Vo, Vn, P: ote.conflict_update(W, A, P=P, K_changed=K, V_old=Vo, V_resolved=Vn)[0])
    res = ex.check_conflict_step(lambda W, A, K, Vo, Vn, P: ote.conflict_update(W, A, P=P, K_new=K, V_new=Vn)[0])
    assert not res and "keeps its place in A" in res.message
