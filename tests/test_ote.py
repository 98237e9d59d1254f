"""Unit and property tests for otelab.ote: every rule, every identity, the editor's state and errors."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelab import ote
from otelab.ote import EditError, SequentialEditor, SolveError

F64 = torch.float64
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- problems

def rel(x, y) -> float:
    return float((x - y).norm() / y.norm().clamp_min(1e-300))


def problem(seed: int, d_i: int = 10, d_o: int = 6, n: int = 2, T: int = 4, P: str = "none",
            dtype=F64) -> dict:
    """A random stream: W0, a full-rank C0 (so λ = 0 is solvable), T batches, a P of the given kind."""
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, dtype=F64, generator=g)  # noqa: E731
    K0 = rn(d_i, 3 * d_i)
    C0 = K0 @ K0.T / (3 * d_i)
    C0 = (C0 + C0.T) / 2
    if P == "none":
        Pm = None
    elif P == "random":                                   # any P: Prop. 3.2 does not need a projector
        Pm = torch.eye(d_i, dtype=F64) + 0.3 * rn(d_i, d_i) / math.sqrt(d_i)
    else:                                                 # a random orthogonal projector of rank ~ d_i/2
        Q, _ = torch.linalg.qr(rn(d_i, d_i))
        U = Q[:, : max(1, d_i // 2)]
        Pm = U @ U.T
    batches = [(rn(d_i, n), rn(d_o, n)) for _ in range(T)]
    out = dict(W0=rn(d_o, d_i), K0=K0, C0=C0, P=Pm, batches=batches)
    return {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in out.items()} | (
        {"batches": [(K.to(dtype), V.to(dtype)) for K, V in batches]})


def stacked(batches, upto=None):
    bs = batches[:upto]
    return torch.cat([K for K, _ in bs], 1), torch.cat([V for _, V in bs], 1)


shapes = st.fixed_dictionaries({
    "seed": st.integers(0, 10_000), "d_i": st.integers(2, 12), "d_o": st.integers(1, 8),
    "n": st.integers(1, 4), "T": st.integers(1, 5),
})
objectives = st.sampled_from([("none", 0.0), ("none", 0.1), ("random", 0.0), ("random", 10.0),
                              ("projector", 0.1), ("projector", 10.0)])


# --------------------------------------------------------------------------- normal equation

def test_system_matrix_matches_definition():
    p = problem(0, P="random")
    K = p["batches"][0][0]
    A = ote.system_matrix(K, P=p["P"], C0=p["C0"], lam=0.3)
    want = (p["C0"] + K @ K.T) @ p["P"] + 0.3 * torch.eye(10, dtype=F64)
    assert rel(A, want) < 1e-14
    A0 = ote.system_matrix(None, lam=2.0, d_i=4, like=K)
    assert torch.equal(A0, 2.0 * torch.eye(4, dtype=F64))
    with pytest.raises(EditError, match="size"):
        ote.system_matrix(None)


@pytest.mark.parametrize("kind", ["spd", "general"])
def test_solve_normal_solves_right_multiplied_system(kind):
    g = torch.Generator().manual_seed(1)
    M = torch.randn(8, 8, dtype=F64, generator=g)
    A = M @ M.T + torch.eye(8, dtype=F64) if kind == "spd" else M + 4 * torch.eye(8, dtype=F64)
    B = torch.randn(5, 8, dtype=F64, generator=g)
    X = ote.solve_normal(B, A)
    assert rel(X @ A, B) < 1e-12


def test_solve_normal_singular_raises():
    K = torch.randn(6, 2, dtype=F64)
    with pytest.raises(SolveError, match="singular"):
        ote.solve_normal(torch.randn(3, 6, dtype=F64), K @ K.T)                 # rank 2 of 6, SPD path
    with pytest.raises(SolveError, match="singular"):
        ote.solve_normal(torch.randn(3, 6, dtype=F64), torch.zeros(6, 6, dtype=F64).index_fill(0, torch.tensor([0]), 1.0))


# --------------------------------------------------------------------------- one-time edit

def test_ote_update_is_memit_least_squares():
    """P = I: Δ minimises ‖(W0 + Δ)K − V‖² + ‖Δ K0‖² + λ‖Δ‖² (checked with lstsq of the stack)."""
    p = problem(2)
    K, V = stacked(p["batches"])
    lam = 0.5
    D = ote.ote_update(p["W0"], K, V, C0=p["K0"] @ p["K0"].T, lam=lam)
    X = torch.cat([K, p["K0"], math.sqrt(lam) * torch.eye(10, dtype=F64)], 1)
    Y = torch.cat([V - p["W0"] @ K, torch.zeros(6, p["K0"].shape[1] + 10, dtype=F64)], 1)
    assert rel(D, torch.linalg.lstsq(X.T, Y.T).solution.T) < 1e-10


@given(shapes, objectives)
@PROPS
def test_ote_update_satisfies_normal_equation(s, obj):
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"], P=obj[0])
    K, V = stacked(p["batches"])
    D = ote.ote_update(p["W0"], K, V, P=p["P"], C0=p["C0"], lam=obj[1])
    P = p["P"] if p["P"] is not None else torch.eye(s["d_i"], dtype=F64)
    lhs = D @ ((p["C0"] + K @ K.T) @ P + obj[1] * torch.eye(s["d_i"], dtype=F64))
    assert rel(lhs, (V - p["W0"] @ K) @ K.T @ P) < 1e-9


@pytest.mark.parametrize("bad,match", [
    (dict(K=torch.randn(9, 2, dtype=F64)), "W has shape"),
    (dict(V=torch.randn(6, 3, dtype=F64)), "V has shape"),
    (dict(V=torch.randn(5, 2, dtype=F64)), "V has shape"),
    (dict(P=torch.eye(9, dtype=F64)), "P has shape"),
    (dict(C0=torch.eye(9, dtype=F64)), "C0 has shape"),
    (dict(K=torch.randn(10, dtype=F64)), "K must be 2-D"),
    (dict(K=torch.randn(10, 0, dtype=F64), V=torch.randn(6, 0, dtype=F64)), "no columns"),
])
def test_ote_update_shape_errors_name_the_tensor(bad, match):
    p = problem(3)
    args = dict(K=p["batches"][0][0], V=p["batches"][0][1], P=None, C0=p["C0"]) | bad
    with pytest.raises(EditError, match=match):
        ote.ote_update(p["W0"], args["K"], args["V"], P=args["P"], C0=args["C0"])


def test_ote_update_rejects_nan():
    p = problem(4)
    K, V = p["batches"][0]
    V = V.clone()
    V[0, 0] = float("nan")
    with pytest.raises(EditError, match="V contains non-finite"):
        ote.ote_update(p["W0"], K, V)


# --------------------------------------------------------------------------- Lemma 3.1 / Prop. 3.2

@given(shapes, objectives)
@PROPS
def test_aligned_steps_sum_to_the_ote(s, obj):
    """Lemma 3.1 / Prop. 3.2: Σ_τ Δ_τ = Δ_total,t at every t, for any P and λ."""
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"], P=obj[0])
    P, lam = p["P"], obj[1]
    A = ote.system_matrix(None, P=P, C0=p["C0"], lam=lam, d_i=s["d_i"], like=p["W0"])
    W = p["W0"].clone()
    for t in range(1, s["T"] + 1):
        K, V = p["batches"][t - 1]
        d, A = ote.aligned_update(W, K, V, A, P=P)
        W = W + d
        Kt, Vt = stacked(p["batches"], t)
        assert rel(W - p["W0"], ote.ote_update(p["W0"], Kt, Vt, P=P, C0=p["C0"], lam=lam)) < 1e-8
        assert rel(A, ote.system_matrix(Kt, P=P, C0=p["C0"], lam=lam)) < 1e-12      # Remark A.1


def test_alphaedit_update_is_aligned_without_c0():
    p = problem(5, P="projector")
    W, Kp = p["W0"].clone(), None
    for t, (K, V) in enumerate(p["batches"], start=1):
        W = W + ote.alphaedit_update(W, K, V, p["P"], Kp, lam=0.5)
        Kp = K @ K.T if Kp is None else Kp + K @ K.T
        Kt, Vt = stacked(p["batches"], t)
        assert rel(W - p["W0"], ote.ote_update(p["W0"], Kt, Vt, P=p["P"], lam=0.5)) < 1e-10
        # the update lives in the projector's range: it leaves the null space of P alone
        assert float(((W - p["W0"]) @ (torch.eye(10, dtype=F64) - p["P"])).norm()) < 1e-10


def test_naive_rule_is_a_fresh_ote_and_drifts():
    p = problem(6, T=6)
    W_n, W_a = p["W0"].clone(), p["W0"].clone()
    A = ote.system_matrix(None, C0=p["C0"], lam=0.1, d_i=10, like=p["W0"])
    dists = []
    for t, (K, V) in enumerate(p["batches"], start=1):
        d = ote.naive_update(W_n, K, V, C0=p["C0"], lam=0.1)
        assert rel(d, ote.ote_update(W_n, K, V, C0=p["C0"], lam=0.1)) == 0
        W_n = W_n + d
        da, A = ote.aligned_update(W_a, K, V, A)
        W_a = W_a + da
        dists.append(rel(W_n, W_a))
    assert dists[0] < 1e-12 and dists[-1] > 1e-3            # identical at t = 1, then apart


# --------------------------------------------------------------------------- memorize-the-latest

def test_memorize_nullspace_is_eq3():
    p = problem(7, P="projector")
    K, V = p["batches"][0]
    W = p["W0"] + 0.1
    d = ote.memorize_latest_nullspace(W, K, V, p["P"], lam=0.2)
    A = K @ K.T @ p["P"] + 0.2 * torch.eye(10, dtype=F64)
    assert rel(d @ A, (V - W @ K) @ K.T @ p["P"]) < 1e-12


@given(shapes, st.sampled_from([("none", 0.0), ("none", 0.5), ("projector", 0.1), ("random", 1.0)]))
@PROPS
def test_memorize_recentred_lands_on_the_latest_ote(s, obj):
    """Eq. 32 (re-centred): W0 + S_{t−1} + Δ_t is the OTE of the latest batch (with C0, P, λ)."""
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"], P=obj[0])
    P, lam = p["P"], obj[1]
    W = p["W0"].clone()
    for K, V in p["batches"]:
        S = W - p["W0"]
        W = W + ote.memorize_latest_recentred(W, K, V, S, P=P, C0=p["C0"], lam=lam)
        assert rel(W - p["W0"], ote.ote_update(p["W0"], K, V, P=P, C0=p["C0"], lam=lam)) < 1e-8


@given(shapes, st.sampled_from([("none", 0.0), ("none", 0.5), ("projector", 0.1), ("random", 1.0)]))
@PROPS
def test_memorize_full_is_the_printed_eq4(s, obj):
    """Eq. 4 as printed: Δ [(C0 + KKᵀ)P + λI] = R KᵀP − S C0 P; the latest OTE only when λ = 0."""
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"], P=obj[0])
    P, lam = p["P"], obj[1]
    Pm = torch.eye(s["d_i"], dtype=F64) if P is None else P
    W = p["W0"].clone()
    for K, V in p["batches"]:
        S = W - p["W0"]
        d = ote.memorize_latest_full(W, K, V, S, P=P, C0=p["C0"], lam=lam)
        A = (p["C0"] + K @ K.T) @ Pm + lam * torch.eye(s["d_i"], dtype=F64)
        B = (V - W @ K) @ K.T @ Pm - S @ p["C0"] @ Pm
        assert rel(d @ A, B) < 1e-8
        W = W + d
        if lam == 0:
            assert rel(W - p["W0"], ote.ote_update(p["W0"], K, V, P=P, C0=p["C0"])) < 1e-8


def test_eq4_and_recentred_differ_by_lambda_s():
    p = problem(5, P="projector", T=4)
    full = ote.SequentialEditor(10, "memorize-full", P=p["P"], C0=p["C0"], lam=0.5)
    rec = ote.SequentialEditor(10, "memorize-recentred", P=p["P"], C0=p["C0"], lam=0.5)
    Wf = Wr = p["W0"].clone()
    for K, V in p["batches"]:
        Wf, Wr = Wf + full.step(K, V, Wf), Wr + rec.step(K, V, Wr)
    assert rel(Wf, Wr) > 1e-3                                # λ > 0: the two rules are different
    assert torch.equal(full.S, Wf - p["W0"]) or rel(full.S, Wf - p["W0"]) < 1e-12


def test_omitted_term_formula_and_eq3_vs_eq4():
    p = problem(8, P="projector")
    S = torch.randn(6, 10, dtype=F64)
    om = ote.omitted_term(S, P=p["P"], C0=p["C0"])
    assert rel(om, -S @ p["C0"] @ p["P"]) < 1e-14
    assert torch.equal(ote.omitted_term(S), torch.zeros_like(S))
    # Eq. 4 with C0 = 0 and S = 0 is Eq. 3
    K, V = p["batches"][0]
    assert rel(ote.memorize_latest_full(p["W0"], K, V, torch.zeros_like(p["W0"]), P=p["P"], lam=0.3),
               ote.memorize_latest_nullspace(p["W0"], K, V, p["P"], 0.3)) < 1e-12
    with pytest.raises(EditError, match="S has shape"):
        ote.memorize_latest_full(p["W0"], K, V, S.T, P=p["P"], lam=0.3)


def test_float32_state_is_solved_in_float64():
    """An ill-conditioned C0 (cond ≈ 1e7) with a float32 state: the step matches the float64 solve."""
    g = torch.Generator().manual_seed(3)
    d_i, d_o = 24, 8
    U, _ = torch.linalg.qr(torch.randn(d_i, d_i, dtype=F64, generator=g))
    C0 = (U * torch.logspace(0, -7, d_i, dtype=F64)) @ U.T                  # [d_i, d_i], cond 1e7
    C0 = ((C0 + C0.T) / 2).float()
    W = torch.randn(d_o, d_i, generator=g).float()
    K = (0.01 * torch.randn(d_i, 2, dtype=F64, generator=g)).float()
    V = W @ K + 0.1 * torch.randn(d_o, 2, generator=g).float()
    ed = ote.SequentialEditor(d_i, "aligned", C0=C0, dtype=torch.float32)
    delta = ed.step(K, V, W)
    assert delta.dtype == torch.float32
    A32, B32 = ed.A, (V - W @ K) @ K.T                                      # the float32 system the step solves
    ref = torch.linalg.solve(A32.double(), B32.double().T).T                 # its exact (float64) solution
    assert rel(delta.double(), ref) < 1e-6                                   # float32 rounding of the result only
    # what a float32 solve of the same system gives: off by orders of magnitude more
    f32 = torch.linalg.solve(A32, B32.T).T
    assert rel(f32.double(), ref) > 100 * rel(delta.double(), ref)


# --------------------------------------------------------------------------- projector, PRUNE, RECT

def test_nullspace_projector():
    g = torch.Generator().manual_seed(9)
    U, _ = torch.linalg.qr(torch.randn(8, 8, dtype=F64, generator=g))
    evals = torch.tensor([5, 3, 1, 0.5, 0.01, 0.005, 0.001, 0.0], dtype=F64)
    C0 = U @ torch.diag(evals) @ U.T
    P = ote.nullspace_projector(C0, 0.02)
    assert rel(P @ P, P) < 1e-12 and rel(P, P.T) < 1e-14
    assert round(float(torch.trace(P))) == 4
    assert float((C0 @ P).norm()) < 0.02
    assert round(float(torch.trace(ote.nullspace_projector(C0, 0.2, relative=True)))) == 5   # cut at 1.0
    with pytest.raises(EditError, match="square"):
        ote.nullspace_projector(torch.zeros(3, 4, dtype=F64))


def test_prune_squashes_only_large_singular_values():
    g = torch.Generator().manual_seed(10)
    U, _ = torch.linalg.qr(torch.randn(6, 6, dtype=F64, generator=g))
    Vh, _ = torch.linalg.qr(torch.randn(6, 6, dtype=F64, generator=g))
    s = torch.tensor([20.0, 5.0, 2.0, 0.5, 0.1, 0.0], dtype=F64)
    D = (U * s) @ Vh.T
    out = torch.linalg.svdvals(ote.prune(D, sigma_ref=2.0))
    want = torch.tensor([2 + math.log(10), 2 + math.log(2.5), 2.0, 0.5, 0.1, 0.0], dtype=F64)
    assert torch.allclose(out, want, atol=1e-12)
    assert rel(ote.Prune(2.0)(D), ote.prune(D, 2.0)) == 0
    W0 = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))
    assert ote.Prune.for_weights(W0).sigma_ref == pytest.approx(3.0)


def test_rect_keeps_top_relative_changes():
    W = torch.tensor([[1.0, 10.0], [0.1, 1.0]], dtype=F64)
    D = torch.tensor([[0.5, 1.0], [0.3, 0.2]], dtype=F64)            # |D/W| = .5, .1, 3, .2
    out = ote.rect(D, W, keep=0.5)
    assert torch.equal(out, torch.tensor([[0.5, 0.0], [0.3, 0.0]], dtype=F64))
    assert int((ote.Rect(W, keep=0.25)(D) != 0).sum()) == 1
    with pytest.raises(EditError, match="keep"):
        ote.rect(D, W, keep=0.0)
    with pytest.raises(EditError, match="shape"):
        ote.rect(D, W[:1], keep=0.5)


# --------------------------------------------------------------------------- Algorithm 1

@given(shapes, st.sampled_from(["prune", "rect"]))
@PROPS
def test_corrected_step_keeps_w_plus_e_on_the_ote_path(s, op):
    """Prop. A.3: W_t + E_t = W0 + Δ_total,t, whatever the operator removes."""
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"])
    post = ote.Prune(0.2) if op == "prune" else ote.Rect(p["W0"], keep=0.3)
    A = ote.system_matrix(None, C0=p["C0"], lam=0.1, d_i=s["d_i"], like=p["W0"])
    W, E = p["W0"].clone(), torch.zeros_like(p["W0"])
    for t in range(1, s["T"] + 1):
        K, V = p["batches"][t - 1]
        d, A, E = ote.corrected_step(W, K, V, A, E, post)
        W = W + d
        Kt, Vt = stacked(p["batches"], t)
        assert rel(W + E - p["W0"], ote.ote_update(p["W0"], Kt, Vt, C0=p["C0"], lam=0.1)) < 1e-8


def test_uncorrected_post_processing_drifts():
    p = problem(11, T=6)
    post = ote.Rect(p["W0"], keep=0.3)
    ed = SequentialEditor(10, "aligned", C0=p["C0"], lam=0.1, post=post, correct=False)
    W = p["W0"].clone()
    for K, V in p["batches"]:
        W = W + ed.step(K, V, W)
    Kt, Vt = stacked(p["batches"])
    assert rel(W - p["W0"], ote.ote_update(p["W0"], Kt, Vt, C0=p["C0"], lam=0.1)) > 0.05
    assert ed.E is None


def test_corrected_step_rejects_bad_operator_output():
    p = problem(12)
    K, V = p["batches"][0]
    A = ote.system_matrix(None, C0=p["C0"], d_i=10, like=p["W0"])
    with pytest.raises(SolveError, match="non-finite"):
        ote.corrected_step(p["W0"], K, V, A, torch.zeros_like(p["W0"]), lambda D: D * float("nan"))
    with pytest.raises(EditError, match="E has shape"):
        ote.corrected_step(p["W0"], K, V, A, torch.zeros(3, 3, dtype=F64), lambda D: D)


# --------------------------------------------------------------------------- conflicts (Prop. 3.5)

def test_resolvers():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    assert torch.equal(ote.resolve_latest(a, b), b)
    assert torch.equal(ote.resolve_first(a, b), a)
    assert torch.equal(ote.resolve_mean(a, b), torch.tensor([2.0, 4.0]))
    assert ote.resolve_forget(a, b) is None


@given(shapes, st.sampled_from(["latest", "first", "mean", "forget"]),
       st.sampled_from([("none", 0.1), ("random", 0.0), ("projector", 1.0)]))
@PROPS
def test_conflict_mode_tracks_the_ote_of_the_resolved_set(s, how, obj):
    """Prop. 3.5: after re-edits (and forgetting), W − W0 is the OTE of the active constraints."""
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"] + 1, P=obj[0])
    resolve = getattr(ote, f"resolve_{how}")
    ed = SequentialEditor(s["d_i"], "conflict", P=p["P"], C0=p["C0"], lam=obj[1], resolve=resolve)
    W = p["W0"].clone()
    g = torch.Generator().manual_seed(s["seed"])
    next_id = 0
    for t, (K, V) in enumerate(p["batches"]):
        ids = []
        for _ in range(K.shape[1]):                    # re-edit an active id half of the time
            active = [i for i in ed.key_ids() if i not in ids]
            if active and float(torch.rand(1, generator=g)) < 0.5:
                ids.append(active[int(torch.randint(len(active), (1,), generator=g))])
            else:
                ids.append(next_id)
                next_id += 1
        W = W + ed.step(K, V, W, ids=ids)
        if t == 2 and len(ed.keys) > 1:
            W = W + ed.forget(ed.key_ids()[:1], W)
        if ed.keys:
            Ka = torch.stack([k for k, _ in ed.keys.values()], 1)
            Va = torch.stack([v for _, v in ed.keys.values()], 1)
            ref = ote.ote_update(p["W0"], Ka, Va, P=p["P"], C0=p["C0"], lam=obj[1])
            assert rel(W - p["W0"], ref) < 1e-8
        else:
            assert float((W - p["W0"]).norm()) < 1e-8 * float(p["W0"].norm())


def test_memorize_latest_is_conflict_mode_with_forgetting():
    """Remark A.4: dropping the previous batch each step (Eq. 31) reproduces Eq. 32 (the re-centred rule)."""
    p = problem(13, P="projector", T=5)
    conf = SequentialEditor(10, "conflict", P=p["P"], C0=p["C0"], lam=0.1, resolve=ote.resolve_forget)
    full = SequentialEditor(10, "memorize-recentred", P=p["P"], C0=p["C0"], lam=0.1)
    Wc, Wf, prev = p["W0"].clone(), p["W0"].clone(), None
    for t, (K, V) in enumerate(p["batches"]):
        ids = [(t, j) for j in range(K.shape[1])]
        if prev:
            Wc = Wc + conf.forget(prev, Wc)
        Wc = Wc + conf.step(K, V, Wc, ids=ids)
        Wf = Wf + full.step(K, V, Wf)
        prev = ids
        assert rel(Wc - p["W0"], Wf - p["W0"]) < 1e-10


def test_conflict_update_rejects_bad_shapes():
    p = problem(14)
    A = ote.system_matrix(None, C0=p["C0"], d_i=10, like=p["W0"])
    K, V = p["batches"][0]
    with pytest.raises(EditError, match="V has shape"):
        ote.conflict_update(p["W0"], A, K_new=K, V_new=V[:, :1])


# --------------------------------------------------------------------------- RLSEdit

@given(shapes, st.sampled_from([0.1, 1.0, 10.0]), st.sampled_from([0.0, 1.0, 100.0]))
@PROPS
def test_rls_recursion_is_the_closed_form_ote(s, lam, mu):
    p = problem(s["seed"], s["d_i"], s["d_o"], s["n"], s["T"])
    C0 = mu * p["C0"] if mu else None
    Q = ote.rls_init(s["d_i"], C0=C0, lam=lam, like=p["W0"])
    assert rel(Q, torch.linalg.inv(ote.system_matrix(None, C0=C0, lam=lam, d_i=s["d_i"], like=p["W0"]))) < 1e-10
    W = p["W0"].clone()
    for t in range(1, s["T"] + 1):
        K, V = p["batches"][t - 1]
        d, Q = ote.rls_step(W, K, V, Q)
        W = W + d
        Kt, Vt = stacked(p["batches"], t)
        assert rel(W - p["W0"], ote.ote_update(p["W0"], Kt, Vt, C0=C0, lam=lam)) < 1e-8


def test_rls_init_needs_positive_definite():
    with pytest.raises(SolveError, match="positive definite"):
        ote.rls_init(4, lam=0.0, like=torch.empty(0, dtype=F64))


# --------------------------------------------------------------------------- SequentialEditor

def make_editor(mode: str, p: dict, **kw) -> SequentialEditor:
    args = dict(P=p["P"] if mode in ("memorize-nullspace",) else None, C0=p["C0"], lam=0.1)
    if mode == "memorize-nullspace":
        args["C0"] = None
    return SequentialEditor(10, mode, **(args | kw))


MODES_KW = [("aligned", {}), ("naive", {}), ("memorize-nullspace", {}), ("memorize-full", {}),
            ("conflict", {}), ("rls", {}), ("aligned", {"post": ote.Prune(0.3)}),
            ("aligned", {"post": ote.Prune(0.3), "correct": False})]


def snapshot(ed: SequentialEditor) -> dict:
    return {k: v.clone() for k, v in ed.state_dict().items()} | {"_ids": list(ed.key_ids())}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] == b[k]) if k == "_ids" else torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode,kw", MODES_KW)
def test_bad_input_leaves_editor_state_unchanged(mode, kw):
    p = problem(15, P="projector")
    ed = make_editor(mode, p, **kw)
    W = p["W0"].clone()
    K, V = p["batches"][0]
    W = W + ed.step(K, V, W)
    before = snapshot(ed)
    K2, V2 = p["batches"][1]
    V_nan = V2.clone()
    V_nan[1, 0] = float("nan")
    cases = [((K2[:9], V2, W), "K|W|P|C0"), ((K2, V2[:5], W), "V"), ((K2, V2, W[:, :9]), "W|K|P|C0"),
             ((K2, V_nan, W), "V contains non-finite")]
    for args, match in cases:
        with pytest.raises(EditError, match=match):
            ed.step(*args)
        assert same_state(before, snapshot(ed)), f"state changed after bad input {match}"
    assert ed.t == 1


def test_singular_step_raises_and_leaves_state_unchanged():
    p = problem(16)
    ed = SequentialEditor(10, "aligned", lam=0.0)                 # no C0, no λ: 2 keys cannot pin 10 dims
    before = snapshot(ed)
    K, V = p["batches"][0]
    with pytest.raises(SolveError):
        ed.step(K, V, p["W0"])
    assert same_state(before, snapshot(ed)) and ed.t == 0
    ed_c = SequentialEditor(10, "aligned", lam=0.0, post=lambda D: D * float("nan"), C0=p["C0"])
    before = snapshot(ed_c)
    with pytest.raises(SolveError):
        ed_c.step(K, V, p["W0"])
    assert same_state(before, snapshot(ed_c)) and ed_c.E is None


def test_aligned_state_is_one_matrix():
    p = problem(17)
    ed = SequentialEditor(10, "aligned", C0=p["C0"], lam=0.1)
    W = p["W0"].clone()
    for K, V in p["batches"]:
        W = W + ed.step(K, V, W)
    assert ed.state_shapes() == {"A": (10, 10)}
    edc = SequentialEditor(10, "aligned", C0=p["C0"], lam=0.1, post=ote.Prune(0.5))
    edc.step(*p["batches"][0], p["W0"])
    assert edc.state_shapes() == {"A": (10, 10), "E": (6, 10)}
    assert SequentialEditor(10, "rls", C0=p["C0"], lam=0.1).state_shapes() == {"Q": (10, 10)}


@pytest.mark.parametrize("mode,kw", MODES_KW)
def test_state_dict_round_trip_continues_identically(mode, kw):
    p = problem(18, P="projector", T=4)
    ed = make_editor(mode, p, **kw)
    W = p["W0"].clone()
    for t, (K, V) in enumerate(p["batches"][:2]):
        W = W + ed.step(K, V, W, ids=[(t, j) for j in range(K.shape[1])]) if mode == "conflict" \
            else W + ed.step(K, V, W)
    sd = {k: v.clone() for k, v in ed.state_dict().items()}
    ids = ed.key_ids()
    twin = make_editor(mode, p, **kw)
    twin.load_state_dict(sd, key_ids=ids or None)
    W2 = W.clone()
    for t, (K, V) in enumerate(p["batches"][2:], start=2):
        kw_ids = {"ids": [(t, j) for j in range(K.shape[1])]} if mode == "conflict" else {}
        d1, d2 = ed.step(K, V, W, **kw_ids), twin.step(K, V, W2, **kw_ids)
        assert torch.equal(d1, d2)
        W, W2 = W + d1, W2 + d2
    assert twin.t == ed.t == 4


def test_editor_float32():
    p = problem(19, P="projector", dtype=torch.float32)
    ed = SequentialEditor(10, "aligned", P=p["P"], C0=p["C0"], lam=0.5, dtype=torch.float32)
    W = p["W0"].clone()
    for K, V in p["batches"]:
        d = ed.step(K, V, W)
        assert d.dtype == torch.float32
        W = W + d
    Kt, Vt = stacked(p["batches"])
    ref = ote.ote_update(p["W0"].double(), Kt.double(), Vt.double(), P=p["P"].double(), C0=p["C0"].double(),
                         lam=0.5)
    assert rel(W.double() - p["W0"].double(), ref) < 1e-4


def test_editor_constructor_errors():
    P = torch.eye(4, dtype=F64)
    with pytest.raises(EditError, match="unknown mode"):
        SequentialEditor(4, "magic")
    with pytest.raises(EditError, match="lam"):
        SequentialEditor(4, lam=-1.0)
    with pytest.raises(EditError, match="P=None"):
        SequentialEditor(4, "rls", P=P, lam=1.0)
    with pytest.raises(EditError, match="post-processing"):
        SequentialEditor(4, "memorize-full", post=ote.Prune(1.0))
    with pytest.raises(EditError, match="P has shape"):
        SequentialEditor(4, P=torch.eye(3, dtype=F64))
    with pytest.raises(EditError, match="C0 must be a torch.Tensor"):
        SequentialEditor(4, C0=[[1.0]])


def test_editor_mode_specific_errors():
    p = problem(20)
    K, V = p["batches"][0]
    with pytest.raises(EditError, match="needs the null-space projector"):
        SequentialEditor(10, "memorize-nullspace", lam=0.1).step(K, V, p["W0"])
    with pytest.raises(EditError, match="forget"):
        SequentialEditor(10, "aligned", lam=0.1).forget([0], p["W0"])
    conf = SequentialEditor(10, "conflict", C0=p["C0"], lam=0.1)
    with pytest.raises(EditError, match="distinct ids"):
        conf.step(K, V, p["W0"], ids=[1, 1])
    with pytest.raises(EditError, match="unknown ids"):
        conf.forget(["nope"], p["W0"])
    with pytest.raises(EditError, match="d_i = 10"):
        SequentialEditor(10, "naive", lam=0.1).step(torch.randn(9, 2, dtype=F64), V, p["W0"][:, :9])
    assert "mode='conflict'" in repr(conf)


def test_editor_modes_match_the_functions():
    """Each mode of the editor is exactly its function in ote.py."""
    p = problem(21, P="projector")
    K, V = p["batches"][0]
    W = p["W0"]
    cases = {
        "naive": ote.naive_update(W, K, V, C0=p["C0"], lam=0.1),
        "memorize-nullspace": ote.memorize_latest_nullspace(W, K, V, p["P"], 0.1),
        "memorize-full": ote.memorize_latest_full(W, K, V, torch.zeros_like(W), C0=p["C0"], lam=0.1),
        "rls": ote.rls_step(W, K, V, ote.rls_init(10, C0=p["C0"], lam=0.1))[0],
    }
    for mode, want in cases.items():
        assert rel(make_editor(mode, p).step(K, V, W), want) < 1e-10, mode
