"""Tests for otelab.toy.verify (``otelab verify``): JSON keys, exit status, the failing path."""
from __future__ import annotations

import argparse
import json

import pytest

from otelab.toy import verify
def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    verify.add_arguments(p)
    return p.parse_args(list(argv))


def test_quick_json_passes(capsys):
    assert verify.run(_args("--json", "--quick", "--seeds", "2")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"identities", "negatives", "toy_collapse", "passed"} <= set(out)
    assert out["toy_collapse"]["passed"] and out["toy_collapse"]["config"]["d_i"] == verify.QUICK_TOY["d_i"]
    names = [r["name"] for r in out["identities"]]
    assert len(names) == len(verify.IDENTITIES) >= 12
    for r in out["identities"]:
        assert set(r) >= {"name", "ref", "reference", "max_rel_residual", "passed"}
        assert r["passed"] and r["max_rel_residual"] < 1e-9
        assert r["reference"]                               # every row names its independent reference
    refs = " ".join(r["ref"] for r in out["identities"])
    for ref in ("Lemma 3.1", "Prop. 3.2", "Remark A.1", "Cor. A.2", "Prop. A.3", "Prop. 3.5", "Remark A.4",
                "Eq. 4", "Eq. 3", "RLSEdit"):
        assert ref in refs
    for r in out["negatives"]:
        assert r["passed"] and r["min_final_distance"] > r["threshold"] and r["reference"]


@pytest.mark.parametrize("seed", range(6))
def test_thresholds_hold_with_margin_across_seeds(seed):
    """The pass/fail bars of the negatives and the quick toy collapse hold with a 2× margin on seeds 0-5."""
    for _, _, rule, threshold in verify.NEGATIVES:
        assert verify._drift(seed, True, rule)[-1] > 2 * threshold
    toy = verify.toy_collapse(True, seed=seed)
    assert toy["rising"] and toy["final_ratio"] > 1.5 * toy["min_ratio"]


def test_references_do_not_use_the_core(monkeypatch):
    """The references are numpy: breaking the core's solver must not change them."""
    import numpy as np
    import torch

    from otelab import ote
    w = verify.problem_world(0, True)
    K, V, _ = w.batches[0]
    before = verify.ote_ref(w, K, V, P=w.P, lam=0.1)
    monkeypatch.setattr(ote, "solve_normal", lambda B, A, **kw: torch.zeros_like(B))
    monkeypatch.setattr(ote, "system_matrix", lambda *a, **kw: None)
    assert np.array_equal(verify.ote_ref(w, K, V, P=w.P, lam=0.1), before)


def test_prune_and_rect_references_follow_their_definitions():
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(6, 9, dtype=torch.float64, generator=g)
    D = 5 * torch.randn(6, 9, dtype=torch.float64, generator=g)
    ref, n_big = verify.prune_ref(D, W0)
    smax = float(torch.linalg.matrix_norm(W0, ord=2))
    s_ref = np.linalg.svd(ref, compute_uv=False)
    s_D = torch.linalg.svdvals(D).numpy()
    assert n_big >= 1 and np.allclose(s_ref[:n_big], smax + np.log(s_D[:n_big] / smax))
    kept = verify.rect_ref(D, W0, 0.4)
    assert (kept != 0).sum() == round(0.4 * 54)
    rel = np.abs(D.numpy() / W0.numpy())
    assert rel[kept != 0].min() >= rel[kept == 0].max()


def test_table_output(capsys):
    assert verify.main(["--quick", "--seeds", "1"]) == 0
    text = capsys.readouterr().out
    assert "Lemma 3.1" in text and "pass" in text and "identities hold" in text


def test_failing_identity_exits_1(monkeypatch, capsys):
    broken = list(verify.IDENTITIES) + [("a broken identity", "nowhere", "none", lambda i, quick: 0.5)]
    monkeypatch.setattr(verify, "IDENTITIES", broken)
    assert verify.run(_args("--json", "--quick", "--seeds", "1")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and out["identities"][-1]["passed"] is False


def test_bad_seeds():
    with pytest.raises(ValueError, match="seeds"):
        verify.verify(seeds=0)


@pytest.mark.slow
def test_full_verify_json(capsys):
    assert verify.run(_args("--json")) == 0
    out = json.loads(capsys.readouterr().out)
    toy = out["toy_collapse"]
    assert len(toy["nullspace_preserved_error_by_step"]) == len(toy["full_preserved_error_by_step"]) == 200
    assert toy["acceptance"] and toy["passed"] and out["passed"]


def test_a_raising_rule_is_a_failed_row(monkeypatch):
    def boom(i, quick):
        raise RuntimeError("broken rule")
    monkeypatch.setattr(verify, "IDENTITIES", [("raises", "nowhere", "none", boom)])
    res = verify.verify(seeds=1, quick=True)
    assert not res["passed"] and res["identities"][0]["error"] == "RuntimeError: broken rule"
