"""The workbench driven headlessly: buttons clicked with .click(), controls set, sessions and fig.data checked.

Tiny random models keep these fast; the SmolLM2 run is notebook 06 (nbval) and tests/test_browser.py.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from otelab.views import panels
from otelab.data.loaders import load_factbank, load_probes
from otelab.eval.drift import hidden_states_at_subject
from otelab.eval.metrics import Baseline, greedy_generate
from otelab.models.loading import tiny_model
from otelab.eval.report import Report
from otelab.views.widgets import CUSTOM, NO_COMPARE, WorkbenchUI
from otelab.workbench.bench import (LatentProjection, Sizes, Workbench, WorkbenchData, WorkbenchError, ci_size,
                              unedited_weights, valid_modes)

TEXTS = ["The cat sat on the mat and looked at the door.", "Water is a liquid. The sun is a star in the sky."]


def first2(before, after):
    """A cheap stand-in for UMAP: the first two coordinates."""
    return before[:, :2].numpy(), after[:, :2].numpy()


@pytest.fixture(scope="module")
def data():
    bank = load_factbank(30)
    return WorkbenchData(stream=bank[:8], glue={"sst2": load_probes("sst2", 4), "mmlu": load_probes("mmlu", 3)},
                         texts=TEXTS, latent_records=bank[:4] + bank[20:26],
                         latent_stream_index=[0, 1, 2, 3] + [None] * 6)


def make_lm():
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=4)
    return lm


def eye_cov(lm):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    return {l: torch.eye(d_i) for l in lm.layers}


def make_wb(data, compare=("memit", "naive"), **kw):
    lm = make_lm()
    kw.setdefault("eval_every", 2)
    return Workbench(lm, data, compare=compare, cov=eye_cov(lm), projector=first2, **kw)


def weights(lm):
    return {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}


def same(a, b):
    return all(torch.equal(a[l], b[l]) for l in a)


def n_points(fig):
    return [len(t.x) for t in fig.data]


# ---------------------------------------------------------------- the stepper


def test_step_button_edits_both_sessions_and_adds_a_point_to_every_curve(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    edit = ui.figures["edit"]
    assert len(edit.data) == 2 * 5 and set(n_points(edit)) == {1}   # two sessions × five metrics, step 0 only
    fig_id = id(edit)
    ui.step_button.click()
    assert [t.session.n_steps for t in wb.tracks] == [1, 1]
    assert [r.subject for r in wb.tracks[0].session.requests] == [r.subject for r in data.stream[:2]]
    assert [r.subject for r in wb.tracks[1].session.requests] == [r.subject for r in data.stream[:2]]
    assert ui.figures["edit"] is edit and id(edit) == fig_id          # updated in place, not replaced
    assert set(n_points(edit)) == {2} and all(list(t.customdata) == [0, 1] for t in edit.data)   # the true steps
    # session A's markers at the steps, B's a little to the right (equal curves stay visible)
    assert {tuple(t.x) for t in edit.data if "MEMIT aligned" in t.name} == {(0, 1)}
    assert {tuple(t.x) for t in edit.data if "MEMIT naive" in t.name} == {(panels.OFFSET, 1 + panels.OFFSET)}
    assert set(n_points(ui.figures["lm"])) == {2}
    assert "step 1" in ui.status.value and "2 edits" in ui.status.value
    assert not ui.step_button.disabled and not ui.undo_button.disabled
    assert "error" not in ui.message.value and "step 1 done" in ui.message.value


def test_step_k_runs_k_steps_and_sessions_use_separate_models(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    assert wb.tracks[0].loaded.model is not wb.tracks[1].loaded.model
    ui.k.value = 3
    ui.step_k_button.click()
    assert wb.n_steps == 3 and wb.n_edits == 6
    assert set(n_points(ui.figures["edit"])) == {4}
    # aligned and naive MEMIT agree on the first step and part ways afterwards
    wa, wn = weights(wb.tracks[0].loaded), weights(wb.tracks[1].loaded)
    assert not same(wa, wn)


def test_buttons_disabled_and_progress_reported_while_a_step_computes(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    seen = []
    orig = wb.tracks[1].session.step

    def spy(reqs, values=None):
        seen.append((ui.step_button.disabled, ui.undo_button.disabled, ui.reset_button.disabled,
                     ui.method.disabled, ui.progress.value, ui.progress.max, ui.status.value))
        return orig(reqs, values=values)

    wb.tracks[1].session.step = spy
    expected_phases = wb.phases(1)
    ui.step_button.click()
    (step_d, undo_d, reset_d, method_d, value, vmax, status), = seen
    assert step_d and undo_d and reset_d and method_d
    assert vmax == expected_phases and 0 < value < vmax
    assert "computing" in status and "MEMIT naive" in status
    # idle: an empty grey bar, not a full blue one
    assert ui.progress.value == 0 and ui.progress.description == "idle" and not ui.step_button.disabled
    assert ui.progress.style.bar_color != "#1f77b4"


def test_a_click_while_busy_is_ignored(data):
    ui = WorkbenchUI(make_wb(data, compare=None))
    wb = ui.workbench
    orig = wb.tracks[0].session.step

    def reentrant(reqs, values=None):
        ui.step_button.click()   # a second click arriving while the first step computes
        return orig(reqs, values=values)

    wb.tracks[0].session.step = reentrant
    ui.step_button.click()
    assert wb.n_steps == 1


def test_undo_restores_weights_metrics_and_panels(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    ui.step_button.click()
    after1 = [weights(t.loaded) for t in wb.tracks]
    rows1 = wb.report().to_frame()
    ui.step_button.click()
    assert set(n_points(ui.figures["edit"])) == {3}
    ui.undo_button.click()
    assert wb.n_steps == 1 and "undid step 2" in ui.message.value
    assert all(same(w, weights(t.loaded)) for w, t in zip(after1, wb.tracks))
    assert wb.report().to_frame().equals(rows1)
    assert set(n_points(ui.figures["edit"])) == {2}
    assert wb.projection is None            # the only UMAP was at step 2


def test_undo_depth_is_enforced_with_a_message(data):
    ui = WorkbenchUI(make_wb(data, compare=None, undo_depth=1))
    wb = ui.workbench
    ui.k.value = 2
    ui.step_k_button.click()
    ui.undo_button.click()
    assert wb.n_steps == 1 and ui.undo_button.disabled
    with pytest.raises(WorkbenchError, match="only the last 1 step"):
        wb.undo()
    assert wb.n_steps == 1


def test_reset_returns_to_the_unedited_model(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    w0 = [weights(t.loaded) for t in wb.tracks]
    ui.k.value = 2
    ui.step_k_button.click()
    ui.reset_button.click()
    assert wb.n_steps == 2 and "2 steps" in ui.confirm_text.value     # asked first
    ui.confirm_button.click()
    assert wb.n_steps == 0 and "discarded 2 steps" in ui.message.value
    assert all(same(w, weights(t.loaded)) for w, t in zip(w0, wb.tracks))
    assert all(t.report.steps == [0] for t in wb.tracks)
    assert set(n_points(ui.figures["edit"])) == {1}
    assert ui.undo_button.disabled


def test_stream_end_disables_step_and_refuses_more(data):
    ui = WorkbenchUI(make_wb(data, compare=None, eval_every=0))
    wb = ui.workbench
    ui.k.value = 5                             # the stream holds 4 batches of 2
    ui.step_k_button.click()
    assert wb.n_steps == 0 and "4 full batches" in ui.message.value and "#b00020" in ui.message.value
    ui.k.value = 4
    ui.step_k_button.click()
    assert wb.n_steps == 4 and wb.steps_left == 0
    assert ui.step_button.disabled and ui.step_k_button.disabled
    with pytest.raises(WorkbenchError, match="0 full batch"):
        wb.step()


def test_a_failing_step_changes_nothing_in_either_session(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    ui.step_button.click()
    before = [weights(t.loaded) for t in wb.tracks]
    rows = wb.report().to_frame()

    def boom(reqs, values=None):
        raise RuntimeError("solver exploded")

    wb.tracks[1].session.step = boom
    ui.step_button.click()
    assert "solver exploded" in ui.message.value and "#b00020" in ui.message.value
    assert [t.session.n_steps for t in wb.tracks] == [1, 1]
    assert all(same(w, weights(t.loaded)) for w, t in zip(before, wb.tracks))
    assert wb.report().to_frame().equals(rows)
    assert not ui.step_button.disabled


# ---------------------------------------------------------------- settings


def test_changing_the_mode_rebuilds_from_the_unedited_model(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    w0 = weights(wb.tracks[0].loaded)
    ui.step_button.click()
    ui.mode.value = "naive"
    assert wb.tracks[0].mode == "aligned" and wb.n_steps == 1          # nothing discarded before the answer
    ui.confirm_button.click()
    assert wb.tracks[0].mode == "naive" and wb.n_steps == 0
    assert "rebuilt" in ui.message.value and "MEMIT naive" in ui.message.value
    assert "discarded 2 edits from 1 step)" in ui.message.value
    assert same(w0, weights(wb.tracks[0].loaded))
    assert set(n_points(ui.figures["edit"])) == {1}
    assert any("MEMIT naive (B)" in t.name for t in ui.figures["edit"].data)   # equal editors stay apart


def test_changing_the_editor_updates_the_mode_list(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    assert "no-ec" not in ui.mode.options
    ui.mode.value = "memorize-full"
    ui.method.value = "prune"          # PRUNE has no memorize-full: falls back to aligned, one rebuild
    assert "no-ec" in ui.mode.options and ui.mode.value == "aligned"
    assert (wb.tracks[0].method, wb.tracks[0].mode) == ("prune", "aligned")
    ui.method.value = "rlsedit"
    assert list(ui.mode.options) == valid_modes("rlsedit") == ["aligned", "naive"]
    assert wb.tracks[0].method == "rlsedit"


def test_batch_size_and_side_by_side_controls(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    ui.batch_size.value = 3
    assert wb.batch_size == 3 and "batch 3" in ui.message.value and wb.steps_left == 2
    ui.compare_method.value = NO_COMPARE
    assert len(wb.tracks) == 1 and ui.compare_mode.disabled and len(ui.figures["edit"].data) == 5
    ui.step_button.click()
    assert wb.n_edits == 3
    ui.compare_method.value = "alphaedit"     # session B comes back with the mode it had
    ui.confirm_button.click()
    assert [t.label for t in wb.tracks] == ["MEMIT aligned", "AlphaEdit naive"] and not ui.compare_mode.disabled
    assert wb.n_steps == 0 and len(ui.figures["edit"].data) == 10


def test_invalid_settings_are_refused_and_nothing_changes(data):
    wb = make_wb(data)
    wb.step()
    w = [weights(t.loaded) for t in wb.tracks]
    with pytest.raises(WorkbenchError, match="no-ec"):
        wb.configure("memit", "no-ec")
    with pytest.raises(WorkbenchError, match="batch_size"):
        wb.configure(batch_size=0)
    with pytest.raises(WorkbenchError, match="exceeds the stream"):
        wb.configure(batch_size=99)
    with pytest.raises(WorkbenchError, match="unknown method 'rome'"):
        wb.configure(compare=("rome", "aligned"))
    assert wb.n_steps == 1 and all(same(a, weights(t.loaded)) for a, t in zip(w, wb.tracks))


def test_eval_every_controls_the_slow_metrics(data):
    ui = WorkbenchUI(make_wb(data, compare=None, eval_every=2))
    wb = ui.workbench
    ui.k.value = 2
    ui.step_k_button.click()
    df = wb.report().wide()
    assert math.isnan(df.loc[1, "glue/sst2/acc"]) and not math.isnan(df.loc[2, "glue/sst2/acc"])
    assert sorted(wb.projections) == [2]
    ui.eval_every.value = 1
    assert wb.eval_every == 1 and wb.n_steps == 2        # no rebuild for this one
    ui.step_button.click()
    assert not math.isnan(wb.report().wide().loc[3, "glue/sst2/acc"]) and sorted(wb.projections) == [2, 3]
    assert len(ui.figures["capability"].data[0].x) == 3   # steps 0, 2, 3


def _latent_note(ui) -> str:
    return " ".join(a.text for a in ui.figures["latent"].layout.annotations if "UMAP" in (a.text or "")
                    and a.text != "UMAP")


def test_the_latent_panel_says_when_its_umap_comes_or_that_none_will(data):
    ui = WorkbenchUI(make_wb(data, compare=None, eval_every=2))
    assert "after step 2" in _latent_note(ui)                   # before the first slow evaluation
    ui.eval_every.value = 0                                      # replay mode's setting: never
    ui.step_button.click()
    assert ui.workbench.projection is None and "slow evaluations are off" in _latent_note(ui)
    ui.eval_every.value = 3
    ui.step_button.click()
    assert "after step 3" in _latent_note(ui)                   # 2 steps done: due at the next multiple


# ---------------------------------------------------------------- unedited reference


def test_baselines_are_computed_once_on_the_unedited_model(data, monkeypatch):
    calls = []
    orig = Baseline.compute.__func__

    def counting(cls, *a, **k):
        calls.append(1)
        return orig(cls, *a, **k)

    monkeypatch.setattr(Baseline, "compute", classmethod(counting))
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    ui.step_button.click()
    ui.mode.value = "naive"
    ui.confirm_button.click()
    ui.batch_size.value = 3
    ui.step_button.click()
    assert len(calls) == 1
    fresh = make_lm()    # same seed: the unedited weights
    ref = hidden_states_at_subject(fresh.model, fresh.tokenizer, data.latent_records, wb.latent_layer)
    assert torch.equal(ref, wb.baseline.latent.states)
    row0 = wb.tracks[0].report.wide().loc[0]
    assert row0["top1_agreement"] == 1.0 and row0["specificity_retained"] == 1.0 and row0["latent_drift"] == 0.0


def test_latent_drift_marks_edited_records(data):
    wb = make_wb(data, compare=None, eval_every=1)
    wb.step()
    p = wb.projection
    assert p.edited == [True, True, False, False] + [False] * 6
    assert p.before.shape == (10, 2) and p.after["MEMIT aligned"].shape == (10, 2)
    r = wb.tracks[0].report.latest()
    assert r["latent_drift_edited"] > r["latent_drift_unrelated"] >= 0


def test_probe_shows_unedited_and_current_models_and_restores_the_edit(data):
    ui = WorkbenchUI(make_wb(data), probe_prompt="Alice lives in", max_new_tokens=6)
    wb = ui.workbench
    ui.k.value = 2
    ui.step_k_button.click()
    edited = [weights(t.loaded) for t in wb.tracks]
    ui.probe_button.click()
    fresh = make_lm()
    want = greedy_generate(fresh.model, fresh.tokenizer, ["Alice lives in"], 6)[0]
    assert ui.generations["unedited"] == want
    assert set(ui.generations) == {"unedited", "MEMIT aligned", "MEMIT naive"}
    for t in wb.tracks:
        assert ui.generations[t.label] == greedy_generate(t.loaded.model, t.loaded.tokenizer, ["Alice lives in"], 6)[0]
    assert all(same(w, weights(t.loaded)) for w, t in zip(edited, wb.tracks))
    assert "Alice lives in" in ui.probe_output.value and "unedited" in ui.probe_output.value
    out = ui.probe_output.value
    ui.step_button.click()            # the box follows the steps once used
    assert ui.probe_output.value and set(ui.generations) == {"unedited", "MEMIT aligned", "MEMIT naive"}
    ui.probe.value = " "
    ui.probe_button.click()
    assert "empty" in ui.message.value and ui.probe_output.value != ""
    assert out


def test_unedited_weights_restores_even_after_an_error(data):
    wb = make_wb(data, compare=None)
    wb.step()
    s = wb.tracks[0].session
    edited = weights(s.loaded)
    with pytest.raises(RuntimeError):
        with unedited_weights(s):
            assert same(s.W0, weights(s.loaded))
            raise RuntimeError("inside")
    assert same(edited, weights(s.loaded))


def test_sizes_follow_the_ci_switch(monkeypatch):
    monkeypatch.setenv("OTELAB_CI_SIZE", "1")
    assert ci_size() and Sizes.default().n_records < Sizes().n_records
    monkeypatch.setenv("OTELAB_CI_SIZE", "0")
    assert not ci_size() and Sizes.default() == Sizes()


def test_workbench_data_is_validated():
    with pytest.raises(WorkbenchError, match="empty"):
        WorkbenchData(stream=[])
    with pytest.raises(WorkbenchError, match="record 0 .*request"):
        WorkbenchData(stream=[{"prompt": "x"}])
    bank = load_factbank(3)
    with pytest.raises(WorkbenchError, match="latent_stream_index"):
        WorkbenchData(stream=bank, latent_records=bank[:2], latent_stream_index=[0])


# ---------------------------------------------------------------- panels (pure functions)


def two_runs():
    a, b = Report("aligned"), Report("naive")
    for s in range(3):
        a.add(s, efficacy_all=1.0, paraphrase_all=0.5, efficacy_latest=1.0, paraphrase_latest=0.5,
              specificity=0.9 - 0.1 * s, ppl=10 + s, top1_agreement=1 - 0.05 * s,
              latent_drift_edited=0.1 * s, latent_drift_unrelated=0.01 * s)
        b.add(s, efficacy=0.5, specificity=float("nan") if s == 1 else 0.8, ppl=12.0)
    a.add(0, {"glue/sst2/acc": 0.9, "glue/mmlu/acc": 0.3})
    a.add(2, {"glue/sst2/acc": 0.8, "glue/mmlu/acc": 0.25})
    return Report.combine(a, b)


def test_edit_panel_overlays_runs_and_skips_missing_values():
    fig = panels.edit_metrics_figure(two_runs())
    names = [t.name for t in fig.data]
    assert "efficacy (all edits) · aligned" in names and "specificity · naive" in names
    assert "efficacy (all edits) · naive" in names            # plain "efficacy" stands in for efficacy_all
    assert "paraphrase (all edits) · naive" not in names
    spec_b = next(t for t in fig.data if t.name == "specificity · naive")
    assert list(spec_b.customdata) == [0, 2]                  # NaN at step 1 left out
    dash = {t.name.split(" · ")[1]: t.line.dash for t in fig.data}
    assert dash == {"aligned": "solid", "naive": "dash"}
    assert isinstance(panels.edit_metrics_figure(two_runs(), widget=True), go.FigureWidget)


def test_capability_lm_and_latent_panels():
    rep = two_runs()
    cap = panels.capability_figure(rep)
    assert sorted(t.name for t in cap.data) == ["mmlu · aligned", "sst2 · aligned"]
    assert list(cap.data[0].customdata) == [0, 2]
    lm = panels.lm_figure(rep)
    assert {t.name for t in lm.data} == {"ppl · aligned", "top1_agreement · aligned", "ppl · naive"}
    proj = LatentProjection(step=2, before=np.zeros((3, 2)), after={"aligned": np.ones((3, 2))},
                            edited=[True, False, False], names=["a", "b", "c"])
    lat = panels.latent_figure(rep, proj)
    scat = [t for t in lat.data if t.xaxis == "x"]
    assert sum(len(t.x) for t in scat) == 6 and any(t.marker.symbol == "star" for t in scat)
    assert "step 2" in lat.layout.annotations[0].text
    empty = panels.latent_figure(Report("x"))
    assert not empty.data and any("UMAP appears" in a.text for a in empty.layout.annotations)
    assert set(panels.all_panels(rep, proj)) == {"edit", "capability", "lm", "latent"}


def test_refresh_updates_in_place_and_handles_changed_traces():
    a = Report("aligned")
    a.add(0, efficacy_all=0.0, specificity=1.0)
    fw = panels.edit_metrics_figure(a, widget=True)
    traces = list(fw.data)
    a.add(1, efficacy_all=1.0, specificity=0.9)
    panels.refresh(fw, panels.edit_metrics_figure(a))
    assert [list(t.x) for t in fw.data] == [[0, 1], [0, 1]] and fw.data[0] is traces[0]
    panels.refresh(fw, panels.edit_metrics_figure(two_runs()))
    assert len(fw.data) == len(panels.edit_metrics_figure(two_runs()).data)


@pytest.mark.slow
def test_default_projector_is_umap(data):
    """The real UMAP (numba compiles on first use, hence slow)."""
    lm = make_lm()
    wb = Workbench(lm, data, cov=eye_cov(lm), eval_every=1)
    wb.step()
    p = wb.projection
    assert p.before.shape == (10, 2) and np.isfinite(p.before).all() and np.isfinite(p.after["MEMIT aligned"]).all()


# ---------------------------------------------------------------- lecturing from it (issue 16)


def test_session_b_is_dashed_and_a_solid_whatever_their_names(data):
    ui = WorkbenchUI(make_wb(data))
    ui.compare_method.value = "alphaedit"   # "AlphaEdit naive" sorts before "MEMIT aligned": style must not follow
    wb = ui.workbench
    assert [t.label for t in wb.tracks] == ["MEMIT aligned", "AlphaEdit naive"]
    for key in ("edit", "lm", "latent"):
        traces = [t for t in ui.figures[key].data if t.mode == "lines+markers"]
        assert {t.line.dash for t in traces if t.name.endswith("MEMIT aligned")} == {"solid"}, key
        assert {t.line.dash for t in traces if t.name.endswith("AlphaEdit naive")} == {"dash"}, key
        assert all(t.showlegend is False for t in ui.figures[key].data)   # one key line instead of legends
    texts = [a.text for a in ui.figures["edit"].layout.annotations]
    assert any("A: MEMIT aligned" in t and "B: AlphaEdit naive" in t and "- -" in t for t in texts)
    assert panels.style_heading(["MEMIT aligned", "AlphaEdit naive"]) == "solid: MEMIT aligned, dashed: AlphaEdit naive"


def test_a_browser_click_queued_while_busy_does_not_run_a_second_step(data):
    ui = WorkbenchUI(make_wb(data, compare=None, eval_every=0))
    wb = ui.workbench
    browser_click = {"event": "click"}
    ui.step_button._handle_button_msg(None, browser_click, [])
    assert wb.n_steps == 1
    ui.step_button._handle_button_msg(None, browser_click, [])   # the double click's second half, handled just after
    assert wb.n_steps == 1
    ui._busy = True                                               # a click reaching the handler mid-step
    ui.step_button._handle_button_msg(None, browser_click, [])
    ui._busy = False
    assert wb.n_steps == 1
    ui._ended -= 1.0                                              # a deliberate click, later on
    ui.step_button._handle_button_msg(None, browser_click, [])
    assert wb.n_steps == 2
    # a fast click on ANOTHER button right after an action is not a double click: it runs
    # (the browser test's Rebuild click, 0.2 s after a Generate ended, was dropped before)
    ui.undo_button._handle_button_msg(None, browser_click, [])
    assert wb.n_steps == 1


def test_enter_in_the_probe_box_generates(data):
    ui = WorkbenchUI(make_wb(data, compare=None), max_new_tokens=4)
    assert ui.probe_output.value == ""
    ui.probe.value = "Alice lives in"        # what Enter does with continuous_update=False
    assert set(ui.generations) == {"unedited", "MEMIT aligned"} and "Alice lives in" in ui.probe_output.value
    assert "generated 4 tokens" in ui.message.value


def test_cancel_keeps_the_steps_and_puts_the_controls_back(data):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    ui.step_button.click()
    w = [weights(t.loaded) for t in wb.tracks]
    ui.method.value = "prune"
    assert ui.confirm_row.layout.display != "none" and "1 step (2 edits)" in ui.confirm_text.value
    assert ui.step_button.disabled and ui.reset_button.disabled          # answer the question first
    ui.cancel_button.click()
    assert wb.n_steps == 1 and ui.method.value == "memit" and "no-ec" not in ui.mode.options
    assert all(same(a, weights(t.loaded)) for a, t in zip(w, wb.tracks))
    assert ui.confirm_row.layout.display == "none" and not ui.step_button.disabled
    ui.reset_button.click()
    ui.cancel_button.click()
    assert wb.n_steps == 1 and "kept 1 step" in ui.message.value


def test_a_named_pair_sets_both_sessions_and_rebuilds_once(data, monkeypatch):
    ui = WorkbenchUI(make_wb(data))
    wb = ui.workbench
    assert ui.pair.value == "Tables 2/5: aligned vs naive"
    ui.step_button.click()
    calls = []
    orig = wb.configure
    monkeypatch.setattr(wb, "configure", lambda *a, **k: calls.append(1) or orig(*a, **k))
    ui.pair.value = "Table 1: Eq. 4 vs Eq. 3 (memorize the latest)"
    assert not calls and wb.n_steps == 1
    ui.confirm_button.click()
    assert len(calls) == 1 and wb.n_steps == 0
    assert [(t.method, t.mode) for t in wb.tracks] == [("alphaedit", "memorize-full"), ("alphaedit", "memorize-nullspace")]
    assert (ui.method.value, ui.mode.value, ui.compare_mode.value) == ("alphaedit", "memorize-full", "memorize-nullspace")
    ui.pair.value = "Algorithm 1: RECT with vs without error correction"   # no steps: no question
    assert len(calls) == 2 and [t.mode for t in wb.tracks] == ["aligned", "no-ec"]
    ui.compare_mode.value = "naive"                                        # a hand-made setting: no pair
    assert ui.pair.value == CUSTOM


def test_every_action_shows_its_phase_while_it_runs(data):
    ui = WorkbenchUI(make_wb(data, compare=None, eval_every=0))
    wb = ui.workbench
    ui.step_button.click()
    seen = []
    orig = wb.undo

    def spy():
        seen.append((ui.message.value, ui.progress.description, ui.progress.style.bar_color, ui.undo_button.disabled))
        return orig()

    wb.undo = spy
    ui.undo_button.click()
    (msg, desc, colour, disabled), = seen
    assert "working: undoing" in msg and "undoing" in desc and colour == "#1f77b4" and disabled
    assert "undid step 1" in ui.message.value and ui.progress.description == "idle"


def test_status_line_splits_edit_and_evaluation_time_and_counts_properly(data):
    wb = make_wb(data, compare=None, batch_size=1, eval_every=0)
    assert "0 edits" in wb.status_line()
    wb.step()
    line = wb.status_line()
    assert "1 edit ·" in line and "edit " in line and "evaluation " in line and "7 steps left" in line
    assert "(discarded 1 edit from 1 step)" in wb.configure(batch_size=2)


def test_step_axes_have_integer_ticks_and_ppl_a_sensible_range():
    rep = Report("A")
    for s in range(3):
        rep.add(s, efficacy_all=1.0, ppl=20.0 + 0.01 * s, ppl_unedited=20.0, top1_agreement=1.0)
    for fig in (panels.edit_metrics_figure(rep), panels.lm_figure(rep)):
        assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tick0 == 0
    long = Report("A")
    for s in range(40):
        long.add(s, efficacy_all=1.0)
    dt = panels.edit_metrics_figure(long).layout.xaxis.dtick
    assert dt == int(dt) and dt > 1
    lm = panels.lm_figure(rep)
    lo, hi = lm.layout.yaxis.range
    assert lo <= 19.0 and hi >= 21.0                         # ±0.01 noise stays small on the axis
    assert lm.layout.yaxis.title.text
    dotted = [s for s in lm.layout.shapes if s.line.dash == "dot" and s.y0 == 20.0]
    assert dotted and dotted[0].yref == "y"


def _title_boxes(fig, width=620):
    """Subplot titles as pixel intervals (centred text, ~0.6 em per character)."""
    m = fig.layout.margin
    plot = width - m.l - m.r
    out = []
    for a in fig.layout.annotations[:len(fig._grid_ref[0])]:
        w = len(a.text) * 0.6 * a.font.size
        out.append((a.x * plot - w / 2, a.x * plot + w / 2, a.x))
    return out, plot


def test_subplot_titles_do_not_overlap_and_fit_their_plots():
    rep = two_runs()
    proj = LatentProjection(step=12, before=np.zeros((3, 2)), after={"aligned": np.ones((3, 2))},
                            edited=[True, False, False], names=["a", "b", "c"])
    for fig in (panels.lm_figure(rep), panels.latent_figure(rep, proj), panels.latent_figure(rep)):
        (l1, r1, x1), (l2, r2, x2), plot = *_title_boxes(fig)[0], _title_boxes(fig)[1]
        half = (1 - panels.SPACING) / 2 * plot                      # one domain's width in px
        assert r1 < l2 and r1 - l1 <= half and r2 - l2 <= half
    empty = panels.latent_figure(Report("x"))
    note = next(a for a in empty.layout.annotations if "UMAP appears" in a.text)
    assert note.xref == "x domain" and note.x == 0.5 and empty.layout.xaxis.visible is False


def test_capability_panel_marks_chance_and_shows_agreement_with_the_unedited_answers(data):
    wb = make_wb(data, compare=None, eval_every=1)
    wb.step()
    row = wb.tracks[0].report.wide().loc[1]
    assert 0 <= row["glue/sst2/agreement"] <= 1 and not math.isnan(row["glue/sst2/margin"])
    assert wb.tracks[0].report.wide().loc[0, "glue/sst2/agreement"] == 1.0
    fig = panels.capability_figure(wb.report(), flat=["sst2"])
    assert {t.name for t in fig.data} >= {"sst2", "sst2 agreement", "mmlu agreement"}
    assert sorted(s.y0 for s in fig.layout.shapes if s.line.dash == "dot") == [0.25, 0.5]
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "cannot move on sst2" in texts and "chance" in texts
    ref = wb.glue_reference
    assert wb.flat_tasks() == [t for t in ref.gold if len(set(ref.predictions(t))) == 1]


def test_order_of_runs_is_checked():
    with pytest.raises(ValueError, match="order names run 'zzz'"):
        panels.edit_metrics_figure(two_runs(), order=["zzz"])
