"""Tests for otelab.toy.world: the world is deterministic and shaped as documented; the metrics mean what they say."""
from __future__ import annotations

import math

import pytest
import torch

from otelab import ote
from otelab.ote import EditError
from otelab.toy.world import (RULES, ToyConfig, collapse_summary, collapse_sweep, forgetting_table, make_world,
                        run_rule)

SMALL = ToyConfig(d_o=16, d_i=32, n0=128, r=8, n=2, T=12, seed=3)


@pytest.fixture(scope="module")
def world():
    return make_world(SMALL)


def test_world_is_deterministic_and_shaped(world):
    again = make_world(SMALL)
    assert torch.equal(world.W0, again.W0) and torch.equal(world.K0, again.K0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(world.batches, again.batches))
    other = make_world(SMALL, seed=4)
    assert not torch.equal(world.W0, other.W0)
    assert world.W0.shape == (16, 32) and world.K0.shape == (32, 128) and world.W0.dtype == torch.float64
    assert torch.allclose(world.V0, world.W0 @ world.K0)
    assert torch.allclose(world.C0w, SMALL.mu * world.C0 / SMALL.n0)
    assert len(world.batches) == 12
    K, V, ids = world.batches[0]
    assert K.shape == (32, 2) and V.shape == (16, 2) and ids == [0, 1]


def test_projector_keeps_the_weak_tail(world):
    P = world.P
    assert torch.allclose(P @ P, P, atol=1e-10)
    # the tail (24 dims) plus the strong directions whose variance is under the threshold
    assert 24 <= world.null_dims < 32
    C = world.C0 / SMALL.n0
    assert float(torch.linalg.matrix_norm(C @ P, ord=2)) < SMALL.threshold


def test_edit_keys_reach_further_into_the_null_space(world):
    K = torch.cat([b[0] for b in world.batches], 1)
    frac_edit = float((world.P @ K).norm() ** 2 / K.norm() ** 2)
    frac_k0 = float((world.P @ world.K0).norm() ** 2 / world.K0.norm() ** 2)
    assert frac_edit > 2 * frac_k0


def test_conflicting_re_edits_reuse_keys_with_new_values():
    w = make_world(SMALL, conflict_frac=1.0, conflict_keys=1, T=6)
    first: dict = {}
    re_edits = 0
    for K, V, ids in w.batches:
        for j, i in enumerate(ids):
            if i in first:
                re_edits += 1
                assert torch.equal(K[:, j], first[i][0]) and not torch.equal(V[:, j], first[i][1])
            else:
                first[i] = (K[:, j], V[:, j])
    assert re_edits == 5


@pytest.mark.parametrize("bad,match", [(dict(n=0), "n must"), (dict(r=300), "exceeds d_i"),
                                       (dict(conflict_frac=2.0), "conflict_frac"), (dict(lam=-1.0), "lam")])
def test_config_validation(bad, match):
    with pytest.raises(EditError, match=match):
        ToyConfig(**bad)


@pytest.mark.parametrize("rule", ["memit", "alphaedit", "rls", "memorize-recentred", "memorize-conflict"])
def test_ote_aligned_rules_sit_on_their_ote(world, rule):
    tr = run_rule(world, rule, cond_every=0)
    assert max(tr.ote_distance) < 1e-8


def test_memorize_conflict_equals_memorize_recentred(world):
    a = run_rule(world, "memorize-recentred", cond_every=0)
    b = run_rule(world, "memorize-conflict", cond_every=0)
    assert torch.allclose(a.W_final, b.W_final, atol=1e-10)
    assert a.preserved_error == pytest.approx(b.preserved_error, rel=1e-8)


def test_printed_eq4_is_off_the_latest_ote_by_its_damping(world):
    """Eq. 4 as printed damps the step, not W − W0: close to, but not on, the latest task's OTE (λ > 0)."""
    full = run_rule(world, "memorize-full", cond_every=0)
    rec = run_rule(world, "memorize-recentred", cond_every=0)
    assert max(rec.ote_distance) < 1e-8
    assert 1e-4 < full.ote_distance[-1] < 0.5
    # both keep the preserved keys: their preserved errors are within 20 % of each other
    assert full.preserved_error[-1] == pytest.approx(rec.preserved_error[-1], rel=0.2)


def test_misaligned_rules_leave_the_ote_path(world):
    naive = run_rule(world, "naive", cond_every=0).ote_distance
    assert naive[0] < 1e-10 and naive[-1] > 0.05
    ns = run_rule(world, "memorize-nullspace", cond_every=0)
    assert ns.ote_distance[-1] > 0.1
    assert all(not math.isnan(x) for x in ns.omitted_norm)


def test_conflict_rules_track_the_resolved_set():
    w = make_world(SMALL, conflict_frac=0.5)
    for rule in ("conflict-latest", "conflict-first", "conflict-mean"):
        assert max(run_rule(w, rule, cond_every=0).ote_distance) < 1e-8


def test_trace_metrics_and_frame(world):
    tr = run_rule(world, "memit", cond_every=5, ote_every=3)
    assert tr.steps == list(range(1, 13))
    # preserved error from its definition, at the last step
    want = float((tr.W_final @ world.K0 - world.V0).norm() / world.V0.norm())
    assert tr.preserved_error[-1] == pytest.approx(want, rel=1e-10)
    assert tr.delta_norm[-1] == pytest.approx(float((tr.W_final - world.W0).norm()))
    assert tr.cond[-1] == pytest.approx(float(torch.linalg.cond(tr.W_final)), rel=1e-8)
    assert math.isnan(tr.cond[1]) and not math.isnan(tr.cond[4])
    assert math.isnan(tr.ote_distance[1]) and not math.isnan(tr.ote_distance[2])
    assert all(math.isnan(x) for x in tr.omitted_norm)                 # not a memorize rule
    df = tr.to_frame()
    assert list(df.columns[:3]) == ["rule", "task", "step"] and len(df) == 12
    assert set(tr.to_dict()) >= {"step", "preserved_error", "latest_error", "ote_distance"}


def test_run_rule_accepts_a_factory_and_rejects_unknown(world):
    def mine(w):
        return ote.SequentialEditor(w.cfg.d_i, "aligned", C0=w.C0w, lam=w.cfg.lam)
    tr = run_rule(world, mine, T=4, cond_every=0)
    assert tr.rule == "mine" and tr.task == "all" and len(tr.steps) == 4 and max(tr.ote_distance) < 1e-8
    with pytest.raises(EditError, match="unknown toy rule"):
        run_rule(world, "memitt")
    with pytest.raises(EditError, match="unknown task"):
        run_rule(world, "memit", task="everything")
    assert {"memit", "alphaedit", "naive", "rls", "prune-corrected", "rect"} <= set(RULES)


def test_forgetting_table(world):
    traces = [run_rule(world, r, cond_every=0) for r in ("memit", "memorize-full")]
    df = forgetting_table(world, traces).set_index("rule")
    # aligned editing keeps the old edits (up to the preserved-knowledge compromise);
    # memorize-the-latest lets them go back towards their pre-edit values
    assert df.loc["memit", "still_edited"] > 0.5
    assert df.loc["memorize-full", "still_edited"] < 0.5 * df.loc["memit", "still_edited"]


def test_collapse_sweep_shape():
    df = collapse_sweep(SMALL, grid={"n": [1, 3]}, seeds=(0, 1), T=5)
    assert len(df) == 4 and set(df.columns) >= {"n", "seed", "null_dims", "nullspace", "full", "ratio"}
    assert (df.ratio == df.nullspace / df.full).all()


@pytest.mark.slow
def test_default_toy_collapses():
    """Notebook 01's acceptance bar: Eq. 3 ≥ 10× Eq. 4 after 200 steps and still rising."""
    s = collapse_summary()
    assert len(s["nullspace_preserved_error_by_step"]) == 200
    assert s["final_ratio"] >= 10 and s["rising"] and s["acceptance"]
    assert max(s["full_preserved_error_by_step"]) < 0.1


def test_plots_and_explorer_update_in_place(world):
    from otelab.toy import plots
    ns = run_rule(world, "memorize-nullspace", cond_every=0)
    full = run_rule(world, "memorize-full", cond_every=0)
    fig = plots.collapse_figure(ns, full)
    assert len(fig.data) == 4 and list(fig.data[0].y) == pytest.approx(ns.preserved_error)
    assert len(plots.metric_figure([ns], "cond").data[0].x) == 0       # cond was never computed
    box = plots.collapse_explorer(SMALL, traces=(ns, full))
    fw = box.children[-1]
    box.sliders["steps"].value = 20                                    # re-runs the toy, same widget
    assert box.children[-1] is fw and len(fw.data[0].x) == 20
    assert "null dims" in box.children[1].value


def test_sweep_figure_labels_every_sampled_value_on_its_log_axis():
    """plotly's own log ticks read "9, 1, 2 … 10" and left n = 16 unlabelled; each sampled n gets a tick."""
    import pandas as pd

    from otelab.toy import plots
    df = pd.DataFrame([{"n": n, "null_dims": d, "seed": s, "ratio": 10 / n ** 0.3 + d / 100 + s}
                       for n in (1, 4, 16) for d in (193, 212) for s in (0, 1)])
    fig = plots.sweep_figure(df)
    ax = fig.layout.xaxis
    assert ax.type == "log" and list(ax.tickvals) == [1, 4, 16] and list(ax.ticktext) == ["1", "4", "16"]
    assert ax.title.text == "batch size n (log scale)" and fig.layout.yaxis.title.text == "Eq. 3 / Eq. 4 preserved error"
    assert [t.name for t in fig.data] == ["null dims = 193", "null dims = 212"]
    assert list(fig.data[0].y) == pytest.approx([10 / n ** 0.3 + 1.93 + 0.5 for n in (1, 4, 16)])   # seed mean
    many = pd.DataFrame({"n": range(1, 31), "null_dims": 212, "ratio": 1.0})
    assert list(plots.sweep_figure(many).layout.xaxis.tickvals) == [1, 2, 5, 10, 20]


def test_error_norm_is_algorithm_1s_carried_error(world):
    big = make_world(SMALL, value_noise=8.0)
    tr = run_rule(big, "rect-corrected", cond_every=0)
    plain = run_rule(big, "rect", cond_every=0)
    assert all(v > 0 for v in tr.error_norm)                 # RECT removes something at every step
    assert all(v != v for v in plain.error_norm)             # no carried error without correction: NaN
    # ‖E_t‖ is the gap between the applied and the virtual weights: ‖W_t + E_t − W_OTE‖ = 0 while ‖W_t − W_OTE‖ > 0
    assert max(tr.virtual_ote_distance) < 1e-9 and tr.ote_distance[-1] > 0
