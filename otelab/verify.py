r"""``otelab verify``: every identity of the paper, checked numerically in float64.

Each check runs one rule of :mod:`otelab.ote` over a random edit stream (the toy
world of :mod:`otelab.toy` at several sizes, up to ``d_i = 256, d_o = 128``, 50
steps) and compares it with an independent reference: the one-time edit solved
from scratch on the stacked data, or ``torch.linalg.lstsq`` of the stacked
least-squares problem. The reported number is the largest relative residual
``‖X − X_ref‖_F / ‖X_ref‖_F`` over steps and seeds; an identity passes below 1e-9.

The negatives (the naive rule, PRUNE/RECT without Algorithm 1) are shown as
"expected to drift" rows: their distance from the OTE path at a few steps.
Finally the toy collapse of notebook 01 (Eq. 3 vs Eq. 4).
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
    from otelab.toy import ToyConfig, make_world

    s = _sizes(i, quick)
    cfg = ToyConfig(d_o=s["d_o"], d_i=s["d_i"], n0=2 * s["d_i"], r=max(1, s["d_i"] // 4), n=s["n"],
                    T=s["T"], seed=1000 + i, threshold=0.05, lam=0.1, mu=10.0)
    return make_world(cfg, **over)


def _rel(X, Y) -> float:
    return float((X - Y).norm() / Y.norm().clamp_min(1e-300))


def _random_P(d: int, seed: int):
    """A random, non-symmetric, well-conditioned P (Prop. 3.2 holds for any P)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.eye(d, dtype=torch.float64) + 0.5 * torch.randn(d, d, dtype=torch.float64, generator=g) / math.sqrt(d)


def _run_against_ote(world, editor, *, P, C0, lam, every: int = 1) -> float:
    """Max over steps of ‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖ for all edits so far."""
    import torch

    from otelab.ote import ote_update

    W, Ks, Vs, worst = world.W0.clone(), [], [], 0.0
    for t, (K, V, _) in enumerate(world.batches, start=1):
        W = W + editor.step(K, V, W)
        Ks.append(K), Vs.append(V)
        if t % every == 0 or t == len(world.batches):
            D = ote_update(world.W0, torch.cat(Ks, 1), torch.cat(Vs, 1), P=P, C0=C0, lam=lam)
            worst = max(worst, _rel(W - world.W0, D))
    return worst


# --------------------------------------------------------------------------- identities

def lemma_3_1(i: int, quick: bool) -> float:
    """Sequential AlphaEdit (Eq. 2, carried K_p K_pᵀ) sums to the OTE of its objective."""
    import torch

    from otelab.ote import alphaedit_update, ote_update

    w = _world(i, quick)
    lam = 1.0
    W, Kp, Ks, Vs, worst = w.W0.clone(), None, [], [], 0.0
    for K, V, _ in w.batches:
        W = W + alphaedit_update(W, K, V, w.P, Kp, lam=lam)
        Kp = K @ K.T if Kp is None else Kp + K @ K.T
        Ks.append(K), Vs.append(V)
        D = ote_update(w.W0, torch.cat(Ks, 1), torch.cat(Vs, 1), P=w.P, lam=lam)
        worst = max(worst, _rel(W - w.W0, D))
    return worst


def prop_3_2(lam: float, kind: str):
    def check(i: int, quick: bool) -> float:
        from otelab.ote import SequentialEditor

        w = _world(i, quick)
        P = None if kind == "I" else _random_P(w.cfg.d_i, 77 + i)
        ed = SequentialEditor(w.cfg.d_i, "aligned", P=P, C0=w.C0w, lam=lam)
        return _run_against_ote(w, ed, P=P, C0=w.C0w, lam=lam)
    return check


def remark_a_1(i: int, quick: bool) -> float:
    """The carried A_t (one d_i×d_i matrix) equals the closed-form system matrix of all edits."""
    import torch

    from otelab.ote import SequentialEditor, system_matrix

    w = _world(i, quick)
    ed = SequentialEditor(w.cfg.d_i, "aligned", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, Ks, worst = w.W0.clone(), [], 0.0
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        Ks.append(K)
        A = system_matrix(torch.cat(Ks, 1), P=w.P, C0=w.C0w, lam=w.cfg.lam)
        worst = max(worst, _rel(ed.A, A))
    return worst


def eq23_lstsq(W, W0, K, V, K0, lam: float):
    """Δ_t from an independent ``torch.linalg.lstsq`` of the re-centred OLS (Eq. 23, P = I).

    ``argmin_Δ ‖Δ [K_{1:t}, K0, √λ I] − [V_{1:t} − W K_{1:t}, −S K0, −√λ S]‖²`` with
    ``S = W − W0`` (``W = W_{t−1}``); the aligned step with ``C0 = K0 K0ᵀ`` must equal it.

    Arguments:
        W: ``W_{t−1}`` ``[d_o, d_i]``; W0: unedited weights; K, V: all edits so far,
        ``[d_i, N]``, ``[d_o, N]``; K0: preserved keys ``[d_i, n0]``; lam: λ.
    Returns:
        Δ ``[d_o, d_i]``.
    """
    import torch

    S = W - W0                                                              # [d_o, d_i]
    eye = torch.eye(W.shape[1], dtype=W.dtype, device=W.device)
    X = torch.cat([K, K0, math.sqrt(lam) * eye], 1)                         # [d_i, N + n0 + d_i]
    Y = torch.cat([V - W @ K, -S @ K0, -math.sqrt(lam) * S], 1)             # [d_o, N + n0 + d_i]
    return torch.linalg.lstsq(X.T, Y.T).solution.T                          # Δ X ≈ Y


def cor_a_2(i: int, quick: bool) -> float:
    """Each aligned step solves the re-centred OLS (Eq. 23), checked against lstsq."""
    import torch

    from otelab.ote import SequentialEditor

    w = _world(i, quick)
    lam = w.cfg.lam
    ed = SequentialEditor(w.cfg.d_i, "aligned", C0=w.C0, lam=lam)       # C0 = K0 K0ᵀ, P = I
    W, Ks, Vs, worst = w.W0.clone(), [], [], 0.0
    every = max(1, len(w.batches) // 5)
    for t, (K, V, _) in enumerate(w.batches, start=1):
        Ks.append(K), Vs.append(V)
        delta = ed.step(K, V, W)
        if t % every == 0 or t == 1:
            ref = eq23_lstsq(W, w.W0, torch.cat(Ks, 1), torch.cat(Vs, 1), w.K0, lam)
            worst = max(worst, _rel(delta, ref))
        W = W + delta
    return worst


def prop_a_3(op: str):
    def check(i: int, quick: bool) -> float:
        import torch

        from otelab.ote import Prune, Rect, SequentialEditor, ote_update

        # large targets so that PRUNE actually squashes singular values
        w = _world(i, quick, value_noise=8.0)
        post = Prune.for_weights(w.W0) if op == "prune" else Rect(w.W0, keep=0.2)
        ed = SequentialEditor(w.cfg.d_i, "aligned", C0=w.C0w, lam=w.cfg.lam, post=post, correct=True)
        W, Ks, Vs, worst = w.W0.clone(), [], [], 0.0
        for K, V, _ in w.batches:
            W = W + ed.step(K, V, W)
            Ks.append(K), Vs.append(V)
            D = ote_update(w.W0, torch.cat(Ks, 1), torch.cat(Vs, 1), C0=w.C0w, lam=w.cfg.lam)
            worst = max(worst, _rel(W + ed.E - w.W0, D))
        return worst
    return check


def prop_3_5(i: int, quick: bool) -> float:
    """Conflict mode (resolve latest / first / mean, plus forgetting) tracks the OTE of the resolved set."""
    import torch

    from otelab.ote import SequentialEditor, ote_update, resolve_first, resolve_latest, resolve_mean

    w = _world(i, quick, conflict_frac=0.5)
    resolve = (resolve_latest, resolve_first, resolve_mean)[i % 3]
    P = None if i % 2 == 0 else _random_P(w.cfg.d_i, 99 + i)
    ed = SequentialEditor(w.cfg.d_i, "conflict", P=P, C0=w.C0w, lam=w.cfg.lam, resolve=resolve)
    W, worst = w.W0.clone(), 0.0
    for t, (K, V, ids) in enumerate(w.batches, start=1):
        W = W + ed.step(K, V, W, ids=ids)
        if t % 7 == 0 and len(ed.keys) > 1:                                 # drop one constraint now and then
            W = W + ed.forget([next(iter(ed.keys))], W)
        Ka = torch.stack([k for k, _ in ed.keys.values()], 1)
        Va = torch.stack([v for _, v in ed.keys.values()], 1)
        worst = max(worst, _rel(W - w.W0, ote_update(w.W0, Ka, Va, P=P, C0=w.C0w, lam=w.cfg.lam)))
    return worst


def remark_a_4(i: int, quick: bool) -> float:
    """Eq. 31 (conflict mode, each step drops the previous batch) ≡ Eq. 32 (memorize_latest_full)."""
    from otelab.ote import SequentialEditor, resolve_forget

    w = _world(i, quick)
    conf = SequentialEditor(w.cfg.d_i, "conflict", P=w.P, C0=w.C0w, lam=w.cfg.lam, resolve=resolve_forget)
    full = SequentialEditor(w.cfg.d_i, "memorize-full", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    Wc, Wf, prev, worst = w.W0.clone(), w.W0.clone(), None, 0.0
    for K, V, ids in w.batches:
        if prev is not None:
            Wc = Wc + conf.forget(prev, Wc)
        Wc = Wc + conf.step(K, V, Wc, ids=ids)
        Wf = Wf + full.step(K, V, Wf)
        prev = ids
        worst = max(worst, _rel(Wc - w.W0, Wf - w.W0))
    return worst


def eq_4(i: int, quick: bool) -> float:
    """Eq. 4 (full memorize-the-latest) lands on the OTE of the latest task at every step."""
    from otelab.ote import SequentialEditor, ote_update

    w = _world(i, quick)
    ed = SequentialEditor(w.cfg.d_i, "memorize-full", P=w.P, C0=w.C0w, lam=w.cfg.lam)
    W, worst = w.W0.clone(), 0.0
    for K, V, _ in w.batches:
        W = W + ed.step(K, V, W)
        worst = max(worst, _rel(W - w.W0, ote_update(w.W0, K, V, P=w.P, C0=w.C0w, lam=w.cfg.lam)))
    return worst


def rls(i: int, quick: bool) -> float:
    """RLSEdit's Woodbury recursion equals the closed-form OTE with P = I, C0 = μK0K0ᵀ, λ."""
    from otelab.ote import SequentialEditor

    w = _world(i, quick)
    ed = SequentialEditor(w.cfg.d_i, "rls", C0=w.C0w, lam=w.cfg.lam)
    return _run_against_ote(w, ed, P=None, C0=w.C0w, lam=w.cfg.lam)


IDENTITIES = [
    ("Lemma 3.1: sequential AlphaEdit = its OTE", "Lemma 3.1, Eq. 2", lemma_3_1),
    ("aligned = OTE, P = I, λ = 0 (sequential MEMIT)", "Prop. 3.2", prop_3_2(0.0, "I")),
    ("aligned = OTE, random P, λ = 0", "Prop. 3.2", prop_3_2(0.0, "random")),
    ("aligned = OTE, random P, λ = 0.1", "Prop. 3.2", prop_3_2(0.1, "random")),
    ("aligned = OTE, random P, λ = 10", "Prop. 3.2", prop_3_2(10.0, "random")),
    ("carried A_t = closed-form system matrix", "Remark A.1", remark_a_1),
    ("aligned step = lstsq of the re-centred OLS", "Cor. A.2, Eq. 23", cor_a_2),
    ("Algorithm 1 + PRUNE: W_t + E_t = W0 + Δ_total", "Prop. A.3", prop_a_3("prune")),
    ("Algorithm 1 + RECT: W_t + E_t = W0 + Δ_total", "Prop. A.3", prop_a_3("rect")),
    ("conflicts: step = OTE of the resolved set", "Prop. 3.5, Eq. 30", prop_3_5),
    ("memorize-the-latest via conflicts ≡ Eq. 32", "Remark A.4, Eq. 31-32", remark_a_4),
    ("Eq. 4 = OTE of the latest batch", "Eq. 4", eq_4),
    ("RLSEdit recursion = closed-form OTE", "RLSEdit", rls),
]


# --------------------------------------------------------------------------- negatives

def _drift(i: int, quick: bool, rule: str) -> list[float]:
    """Distance from the OTE path, ``‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖``, at a few steps."""
    from otelab.toy import run_rule

    w = _world(i, quick, value_noise=8.0) if rule.startswith(("prune", "rect")) else _world(i, quick)
    tr = run_rule(w, rule, cond_every=0)
    return tr.ote_distance


NEGATIVES = [
    ("naive rule (repeated OTE)", "Lemma 3.1 converse", "naive"),
    ("PRUNE without correction", "Prop. A.3 converse", "prune"),
    ("RECT without correction", "Prop. A.3 converse", "rect"),
]


# --------------------------------------------------------------------------- command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``otelab verify``."""
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=3, help="random problems per identity (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="small problems, 8 steps, no toy collapse (a smoke test)")


def verify(seeds: int = 3, quick: bool = False) -> dict:
    """Run every check; return the results as a JSON-able dict.

    Arguments:
        seeds: random problems per identity; quick: small problems and no toy collapse.
    Returns:
        ``{"identities": [{name, ref, max_rel_residual, passed}], "negatives": [...],
        "toy_collapse": {...} or None, "passed": bool, "tolerance": 1e-9, "seconds": float}``.
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {seeds}")
    start = time.perf_counter()
    rows = []
    for name, ref, fn in IDENTITIES:
        res = max(fn(i, quick) for i in range(seeds))
        rows.append({"name": name, "ref": ref, "max_rel_residual": res,
                     "passed": bool(math.isfinite(res) and res < TOL)})
    negs = []
    for name, ref, rule in NEGATIVES:
        d = _drift(0, quick, rule)
        T = len(d)
        at = sorted({1, max(1, T // 10), max(1, T // 2), T})
        negs.append({"name": name, "ref": ref, "steps": at, "ote_distance": [d[s - 1] for s in at],
                     "grows": bool(d[-1] > d[0])})
    toy = None
    if not quick:
        from otelab.toy import collapse_summary

        toy = collapse_summary()
    return {"identities": rows, "negatives": negs, "toy_collapse": toy,
            "passed": all(r["passed"] for r in rows), "tolerance": TOL,
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
                     f"{'pass' if r['passed'] else 'FAIL'}")
    lines.append("")
    lines.append("expected to drift (distance from the OTE path, ‖W_t − W_OTE,t‖/‖W_OTE,t − W0‖):")
    for r in res["negatives"]:
        pts = ", ".join(f"t={s}: {v:.3g}" for s, v in zip(r["steps"], r["ote_distance"]))
        lines.append(f"  {r['name']:<28}{r['ref']:<20}{pts}  ({'grows' if r['grows'] else 'does not grow'})")
    toy = res.get("toy_collapse")
    if toy:
        lines.append("")
        lines.append(f"toy collapse (notebook 01, memorize-the-latest, {toy['null_dims']} null dims, "
                     f"batch {toy['config']['n']}, seed {toy['config']['seed']}): preserved error ‖W_t K0 − V0‖/‖V0‖")
        lines.append("  step        " + "".join(f"{s:>8}" for s in toy["steps"]))
        lines.append("  Eq. 3 (null)" + "".join(f"{v:>8.3f}" for v in toy["nullspace_at_steps"]))
        lines.append("  Eq. 4 (full)" + "".join(f"{v:>8.3f}" for v in toy["full_at_steps"]))
        lines.append(f"  ratio at step {toy['steps'][-1]}: {toy['final_ratio']:.1f}x, still rising: "
                     f"{toy['rising']} -> {'collapse reproduced' if toy['acceptance'] else 'collapse NOT reproduced'}")
    lines.append("")
    n_fail = sum(not r["passed"] for r in res["identities"])
    lines.append(f"{len(res['identities']) - n_fail}/{len(res['identities'])} identities hold to "
                 f"{res['tolerance']:g} ({res['seconds']:.1f} s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``otelab verify``; exit status 1 if an identity fails."""
    res = verify(seeds=args.seeds, quick=args.quick)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(format_report(res))
    return 0 if res["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run as a script: ``python -m otelab.verify [--json] [--seeds N] [--quick]``."""
    parser = argparse.ArgumentParser(prog="otelab verify", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
