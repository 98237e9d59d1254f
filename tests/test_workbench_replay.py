"""Replay mode of the workbench on a tiny random model: banked values, the scored sample, the missing-values error.

The SmolLM2 run (the recorded 2,000-edit stream, 100 edits per click) is notebook 06 and tests/test_browser.py.
"""
from __future__ import annotations

import os

import pytest
import torch

import otelab.engine.session
import otelab.eval.metrics
import otelab.engine.values
from otelab.data.loaders import load_factbank
from otelab.models.loading import tiny_model
from otelab.views.widgets import WorkbenchUI
from otelab.workbench.bench import (REPLAY_DRAW, BankValues, Sizes, Workbench, WorkbenchData, WorkbenchError,
                              replay_data)

TEXTS = ["The cat sat on the mat and looked at the door.", "Water is a liquid. The sun is a star in the sky."]


def first2(before, after):
    return before[:, :2].numpy(), after[:, :2].numpy()


def make_lm():
    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=3)
    return lm


def eye_cov(lm):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    return {l: torch.eye(d_i) for l in lm.layers}


@pytest.fixture(scope="module")
def data():
    bank = load_factbank(20)
    # a stream of 8 in batches of 4; the edit metrics score positions 1, 2 (batch 1) and 5 (batch 2)
    return WorkbenchData(stream=bank[:8], texts=TEXTS, latent_records=[bank[1], bank[12]],
                         latent_stream_index=[1, None], sample=[1, 2, 5])


def replay_wb(data, tmp_path, **kw):
    lm = make_lm()
    return Workbench(lm, data, compare=("memit", "naive"), batch_size=4, eval_every=0, cov=eye_cov(lm),
                     projector=first2, values=BankValues(lm, path=tmp_path / "bank"), **kw)


def weights(lm):
    return {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}


class Calls:
    """Counts calls of a function it replaces (and passes them on)."""

    def __init__(self, monkeypatch, module, name):
        self.n, self.args, orig = 0, [], getattr(module, name)

        def spy(*a, **kw):
            self.n += 1
            self.args.append(a)
            return orig(*a, **kw)
        monkeypatch.setattr(module, name, spy)


def test_replay_step_reads_banked_values_once_for_both_sessions_and_scores_the_sample(data, tmp_path, monkeypatch):
    wb = replay_wb(data, tmp_path)
    assert wb.values_note()[1] is False
    assert wb.fill_values() == 8 and wb.values_note()[1] is True
    optimised = Calls(monkeypatch, otelab.engine.session, "compute_values")     # values inside session.step
    computed = Calls(monkeypatch, otelab.engine.values, "compute_values")      # any value optimisation at all
    scored = Calls(monkeypatch, otelab.eval.metrics, "edit_scores")
    wb.step(2)
    assert optimised.n == 0 and computed.n == 0
    a, b = (t.session for t in wb.tracks)
    assert torch.equal(a.last_values.z, b.last_values.z)               # the same targets in both sessions
    want = wb.values.bank.get([r.request() for r in data.stream[4:8]], compute=False)
    assert torch.equal(a.last_values.z, want.z)
    # edit metrics on the sample only: step 1 scores positions 1, 2; step 2 scores 1, 2, 5
    subjects = [[r.subject for r in call[2]] for call in scored.args]
    s = [r.subject for r in data.stream]
    assert subjects == [[s[1], s[2]]] * 2 + [[s[1], s[2], s[5]]] * 2
    rep = wb.tracks[0].report.wide()
    assert list(rep.index) == [0, 1, 2] and rep.loc[2, "edits"] == 8
    assert rep.loc[2, "efficacy_latest"] in (0.0, 1.0)                  # one scored record in batch 2
    assert "glue_mean" not in rep.columns


def test_missing_values_say_so_and_never_optimise_on_a_click(data, tmp_path, monkeypatch):
    ui = WorkbenchUI(replay_wb(data, tmp_path))
    wb = ui.workbench
    assert "#b00020" in ui.message.value and "otelab values compute --data counterfact --n 2000" in ui.message.value
    assert "8 of 8 in the stream" in ui.message.value
    computed = Calls(monkeypatch, otelab.engine.values, "compute_values")
    before = [weights(t.loaded) for t in wb.tracks]
    ui.step_button.click()
    assert computed.n == 0
    assert "4 of the 4 target values of this step are not in the value bank" in ui.message.value
    assert "otelab values compute" in ui.message.value and "#b00020" in ui.message.value
    assert wb.n_steps == 0 and all(t.session.n_steps == 0 for t in wb.tracks)
    assert all(all(torch.equal(w[l], v) for l, v in weights(t.loaded).items()) for w, t in zip(before, wb.tracks))
    assert wb.report().steps == [0] and not ui.step_button.disabled


def test_a_partly_filled_bank_replays_up_to_its_end(data, tmp_path):
    wb = replay_wb(data, tmp_path)
    assert wb.fill_values(4) == 4
    note, ok = wb.values_note()
    assert not ok and "4 of 8 in the stream" in note
    wb.step()
    with pytest.raises(WorkbenchError, match="not in the value bank"):
        wb.step()
    assert wb.n_steps == 1


def test_fill_values_after_edits_uses_the_unedited_model(data, tmp_path):
    wb = replay_wb(data, tmp_path)
    wb.fill_values(4)
    wb.step()
    assert wb.fill_values() == 4                                     # the second batch, with session A edited
    fresh = BankValues(make_lm(), path=tmp_path / "fresh")
    reqs = [r.request() for r in data.stream[4:8]]
    fresh.bank.compute(reqs)
    assert torch.allclose(wb.values(reqs).z, fresh(reqs).z, atol=1e-5)


def test_bad_values_and_sample_are_refused():
    bank = load_factbank(6)
    with pytest.raises(WorkbenchError, match="sample position 6"):
        WorkbenchData(stream=bank, sample=[0, 6])
    with pytest.raises(WorkbenchError, match="ascending"):
        WorkbenchData(stream=bank, sample=[3, 1])
    lm = make_lm()
    with pytest.raises(WorkbenchError, match="values must be a callable"):
        Workbench(lm, WorkbenchData(stream=bank), cov=eye_cov(lm), values="bank")


def test_replay_sizes_and_data(monkeypatch):
    full, ci = Sizes.replay(ci=False), Sizes.replay(ci=True)
    assert (full.n_records, full.batch_size, full.eval_every, full.glue_n) == (REPLAY_DRAW, 100, 0, 0)
    assert ci.n_records <= 10 and ci.eval_every == 0
    monkeypatch.delenv("OTELAB_DATA_DIR", raising=False)
    with pytest.raises(WorkbenchError, match="OTELAB_DATA_DIR"):
        replay_data(ci)


@pytest.mark.skipif(not os.environ.get("OTELAB_DATA_DIR"), reason="needs $OTELAB_DATA_DIR (CounterFact)")
def test_replay_data_is_the_recorded_draw():
    from otelab.data.loaders import load_counterfact, sample_records

    sizes = Sizes.replay(ci=True)
    d = replay_data(sizes)
    draw = sample_records(load_counterfact(), REPLAY_DRAW, 0)
    assert [r.case_id for r in d.stream] == [r.case_id for r in draw[:sizes.n_records]]
    assert len(d.sample) == sizes.sample_per_batch * (sizes.n_records // sizes.batch_size)
    ids = {r.case_id for r in draw}
    unrelated = [r for r, i in zip(d.latent_records, d.latent_stream_index) if i is None]
    assert unrelated and not any(r.case_id in ids for r in unrelated)
    assert all(d.stream[i] is r for r, i in zip(d.latent_records, d.latent_stream_index) if i is not None)
    assert d.glue == {} and len(d.texts) == sizes.n_texts
