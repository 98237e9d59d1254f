"""Tests for otelab.toy.exercises: each checker accepts the reference and rejects classic mistakes with a hint."""
from __future__ import annotations

import pytest

from otelab.toy import exercises as ex
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
        C0 = ex.exercise_world(11).C0w
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
    assert not res and "Eq. 3" in res.message and "preserved term" in res.message


def test_conflict_checker():
    assert ex.check_conflict_step(
        lambda W, A, K, Vo, Vn, P: ote.conflict_update(W, A, P=P, K_changed=K, V_old=Vo, V_resolved=Vn)[0])
    res = ex.check_conflict_step(lambda W, A, K, Vo, Vn, P: ote.conflict_update(W, A, P=P, K_new=K, V_new=Vn)[0])
    assert not res and "keeps its place in A" in res.message


def test_eq4_checker_accepts_the_printed_equation_and_rejects_the_recentred_one():
    import torch

    def printed(W, K, V, S, P, C0, lam):                  # the paper's Eq. 4, written out
        I = torch.eye(W.shape[1], dtype=W.dtype)
        A = (C0 + K @ K.T) @ P + lam * I
        B = (V - W @ K) @ K.T @ P - S @ C0 @ P
        return torch.linalg.solve(A.T, B.T).T
    assert ex.check_eq4(printed)
    res = ex.check_eq4(lambda W, K, V, S, P, C0, lam:
                       ote.memorize_latest_recentred(W, K, V, S, P=P, C0=C0, lam=lam))
    assert not res and "Eq. 32" in res.message


def test_eq4_checker_uses_a_p_that_does_not_commute_with_c0():
    """−S P C0 equals −S C0 P when P commutes with C0; the random-P stream must catch it."""
    import torch

    def wrong_order(W, K, V, S, P, C0, lam):
        A = ote.system_matrix(K, P=P, C0=C0, lam=lam)
        return ote.solve_normal((V - W @ K) @ K.T @ P - S @ P @ C0, A)
    res = ex.check_eq4(wrong_order)
    assert not res and "P on the right" in res.message


def test_prop_a3_checker_accepts_the_papers_verbatim_algorithm(capsys):
    import torch

    def paper(W, K, V, C_prev, E, post):                  # Algorithm 1 with the error on the right-hand side
        C = C_prev + K @ K.T
        D = torch.linalg.solve(C.T, ((V - W @ K) @ K.T - E).T).T
        applied = post(D)
        return applied, C, (applied - D) @ C
    res = ex.check_prop_a3(paper)
    assert res and "paper's convention" in res.message

    def paper_wrong_sign(W, K, V, C_prev, E, post):
        applied, C, E_new = paper(W, K, V, C_prev, E, post)
        return applied, C, -E_new
    assert not ex.check_prop_a3(paper_wrong_sign)


def test_every_checker_has_a_solution_that_passes_it(capsys):
    checkers = {n[len("check_"):] for n in ex.__all__ if n.startswith("check_")}
    assert set(ex.SOLUTIONS) == checkers
    for name, sol in ex.SOLUTIONS.items():
        assert getattr(ex, f"check_{name}")(sol.define()), name
    assert capsys.readouterr().out.count("✓") == len(checkers)


def test_solution_is_shown_only_when_asked_for(capsys):
    sol = ex.solution("eq4")
    assert capsys.readouterr().out == ""                   # nothing printed by the call itself
    assert sol.source.startswith("import torch") and "- S @ C0 @ P" in sol.source
    assert str(sol) == repr(sol) == sol.source
    assert sol._repr_markdown_() == f"```python\n{sol.source}```"
    with pytest.raises(KeyError, match="no exercise 'eq3'.*eq4"):
        ex.solution("eq3")
