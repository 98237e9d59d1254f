"""otelab.workbench.stream on a tiny random model: retention matrix, weight statistics, run_stream end to end and resume."""
from __future__ import annotations

import json

import pytest
import torch

from otelab.workbench import stream as S
from otelab.data.loaders import load_probes
from otelab.engine.session import EditSession
from otelab.models.loading import tiny_model
from otelab.engine.values import compute_values

SUBJECTS = ["Alice Smith", "Bob Jones", "Carol King", "Dan Brown", "Eve Adams", "Frank Moore"]
NEW = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Oslo"]


def records():
    return [dict(case_id=10 + i, subject=s, prompt="{} was born in the city of", target_new=n, target_true="London",
                 paraphrase_prompts=[f"The birthplace of {s} is"],
                 neighborhood_prompts=[f"{SUBJECTS[(i + 1) % 6]} was born in the city of", "Tom Hardy lives in"])
            for i, (s, n) in enumerate(zip(SUBJECTS, NEW))]


def cov(lm):
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(d_i, 4 * d_i, generator=g)
    return {l: 1e-2 * X @ X.T / X.shape[1] for l in lm.layers}


def fresh():
    lm = tiny_model("llama", seed=3)
    lm.preset = lm.preset.replace(v_steps=3)
    return lm


def evaluator(lm):
    tasks = {"sst2": load_probes("sst2", 4), "mmlu": load_probes("mmlu", 3)}
    return S.StreamEval(lm, records(), 2, texts=["The river flows through the old town and into the sea."] * 2,
                        tasks=tasks, sample_per_batch=1, seed=0, n_boot=50, progress=False)


def strip_times(x):
    if isinstance(x, dict):
        return {k: strip_times(v) for k, v in x.items()
                if k not in ("seconds", "timings", "reference_seconds", "session_dir")}
    if isinstance(x, list):
        return [strip_times(v) for v in x]
    return x


def test_retention_matrix_constructed_case():
    # 3 batches of 2 records; checkpoints after 0, 2 and 3 steps
    batch_of = [0, 0, 1, 1, 2, 2]
    scores = [{0: 1.0, 2: 1.0},                        # before editing: nothing counts
              {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0},  # record 4 (batch 3) not yet edited
              {0: 0.0, 1: 0.0, 2: 1.0, 3: float("nan"), 4: 1.0, 5: 0.0}]
    r = S.retention_matrix(scores, [0, 2, 3], batch_of, 3)
    assert r["steps"] == [0, 2, 3]
    assert r["share"] == [[None, 0.5, 0.0], [None, 1.0, 1.0], [None, None, 0.5]]
    assert r["n"] == [[0, 2, 2], [0, 2, 1], [0, 0, 2]]
    with pytest.raises(ValueError, match="2 checkpoint score sets for 3"):
        S.retention_matrix(scores[:2], [0, 2, 3], batch_of, 3)


def test_weight_stats_track_the_edit():
    lm = fresh()
    s = EditSession(lm, "memit", "aligned", cov=cov(lm), progress=False)
    st = S.weight_stats(s)
    for l in s.layers:
        W0 = s.W0[l].double()
        assert st["dW"][str(l)] == 0.0
        sv = torch.linalg.svdvals(W0)
        assert st["cond"][str(l)] == pytest.approx(float(sv.max() / sv.min()))
    s.step([{k: records()[0][k] for k in ("prompt", "subject", "target_new")}])
    st = S.weight_stats(s)
    for l in s.layers:
        W = lm.adapter.get_W(lm.model, l).double()
        assert st["dW"][str(l)] == pytest.approx(float((W - s.W0[l].double()).norm()))
        assert st["dW"][str(l)] > 0


def test_run_stream_checkpoints_and_resume(tmp_path):
    lm = fresh()
    ev = evaluator(lm)
    assert ev.sample[0] in (0, 1) and ev.sample[1] in (2, 3) and len(ev.sample) == 3
    s = EditSession(lm, "memit", "naive", cov=cov(lm), progress=False)
    full = S.run_stream(s, ev, tmp_path / "full.json", values=lambda reqs: compute_values(lm, reqs),
                        checkpoint_every=2, session_dir=tmp_path / "full-session", settings={"lam": 1.0},
                        progress=False)
    on_disk = json.loads((tmp_path / "full.json").read_text())
    assert strip_times(on_disk) == strip_times(json.loads(json.dumps(S._json_safe(full))))
    assert [st["step"] for st in full["steps"]] == [1, 2, 3]
    assert [c["step"] for c in full["checkpoints"]] == [0, 2, 3]
    assert all(st["dW"][str(l)] > 0 for st in full["steps"] for l in lm.layers)
    ck0, ck2, ck3 = full["checkpoints"]
    assert ck0["lm"]["top1_agreement"] == 1.0 and ck0["lm"]["ppl"] == pytest.approx(ck0["lm"]["ppl_unedited"])
    assert ck0["capability"]["sst2"]["agreement"] == 1.0 and "edit_sample" not in ck0
    assert ck2["edit_sample"]["n"] == 2 and ck3["edit_sample"]["n"] == 3
    lo, hi = ck2["edit_sample"]["efficacy_ci"]
    assert lo <= ck2["edit_sample"]["efficacy"] <= hi
    final = full["final"]
    assert final["n"] == 6 and len(final["efficacy_per_record"]) == 6
    # the final sample numbers are the all-record scores of the sampled records
    assert ck3["efficacy"] == {str(i): final["efficacy_per_record"][i] for i in ev.sample}
    ret = full["retention"]
    assert ret["steps"] == [0, 2, 3] and len(ret["share"]) == 3
    assert ret["share"][2][1] is None and ret["n"][2][2] == 2          # final column: every record
    assert ret["share"][0][2] == pytest.approx(sum(final["efficacy_per_record"][:2]) / 2)
    assert ret["n"][0][1] == 1 and ret["share"][0][1] == ck2["efficacy"][str(ev.sample[0])]
    rep = S.stream_report(full, "naive")
    assert "retention/1" in rep.metrics and "ppl" in rep.metrics and f"cond/{lm.layers[0]}" in rep.metrics

    # an interrupted run: the value provider dies in step 3, after the checkpoint at step 2
    lm2 = fresh()
    ev2 = evaluator(lm2)
    s2 = EditSession(lm2, "memit", "naive", cov=cov(lm2), progress=False)

    def dying(reqs):
        if s2.n_steps == 2:
            raise KeyboardInterrupt
        return compute_values(lm2, reqs)

    with pytest.raises(KeyboardInterrupt):
        S.run_stream(s2, ev2, tmp_path / "cut.json", values=dying, checkpoint_every=2,
                     session_dir=tmp_path / "cut-session", settings={"lam": 1.0}, progress=False)
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["session_step"] == 2 and cut["final"] is None
    with pytest.raises(S.StreamError, match="exists; pass resume=True"):
        S.run_stream(s2, ev2, tmp_path / "cut.json", progress=False)
    with pytest.raises(S.StreamError, match="other editor settings \\(mode differ"):
        S.run_stream(EditSession(fresh(), "memit", "aligned", cov=cov(lm2), progress=False), ev2,
                     tmp_path / "cut.json", resume=True, progress=False)
    with pytest.raises(S.StreamError, match="session given is at step 0"):
        S.run_stream(EditSession(fresh(), "memit", "naive", cov=cov(lm2), progress=False), ev2,
                     tmp_path / "cut.json", resume=True, progress=False)

    lm3 = fresh()
    ev3 = evaluator(lm3)  # the references come from the unedited model, before the session is restored
    s3 = EditSession.load(tmp_path / "cut-session", lm3, cov=cov(lm3), progress=False)
    resumed = S.run_stream(s3, ev3, tmp_path / "cut.json", values=lambda reqs: compute_values(lm3, reqs),
                           checkpoint_every=2, session_dir=tmp_path / "cut-session", resume=True, progress=False)
    a, b = strip_times(S._json_safe(full)), strip_times(S._json_safe(resumed))
    assert a.keys() == b.keys() and a["sample"] == b["sample"] and a["stream"] == b["stream"]
    assert [st["step"] for st in b["steps"]] == [1, 2, 3] and b["session_step"] == 3
    for x, y in zip(a["steps"], b["steps"]):
        for l in x["dW"]:
            assert y["dW"][l] == pytest.approx(x["dW"][l], rel=1e-6)
    assert b["final"]["efficacy_per_record"] == a["final"]["efficacy_per_record"]
    assert b["retention"] == a["retention"]
    assert b["checkpoints"][-1]["lm"]["ppl"] == pytest.approx(a["checkpoints"][-1]["lm"]["ppl"], rel=1e-6)


def test_bad_stream_fails_before_model_work():
    lm = fresh()
    bad = records()
    del bad[3]["target_new"]
    with pytest.raises(ValueError, match="record 3 .*target_new"):
        S.StreamEval(lm, bad, 2, progress=False)
    with pytest.raises(S.StreamError, match="batch_size"):
        S.StreamEval(lm, records(), 0, progress=False)


def test_paper_stream_cli_runs_and_resumes(tmp_path, monkeypatch):
    """The experiment script end to end on the tiny model (loader, data and covariance patched in)."""
    import importlib.util
    from pathlib import Path

    import otelab.data.texts
    import otelab.engine.covariance
    import otelab.data.loaders
    import otelab.models.loading

    spec = importlib.util.spec_from_file_location(
        "paper_stream", Path(__file__).resolve().parents[1] / "experiments" / "paper_stream.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    monkeypatch.setattr(otelab.models.loading, "load_model", lambda name=None: fresh())
    monkeypatch.setattr(otelab.data.loaders, "load_counterfact", lambda: records() + records()[:2])
    monkeypatch.setattr(otelab.data.loaders, "load_glue", lambda t: load_probes("rte" if t == "nli" else t, 5))
    monkeypatch.setattr(otelab.data.texts, "held_out_texts", lambda n: ["The river flows into the sea."] * n)
    monkeypatch.setattr(otelab.engine.covariance, "get_covariance", lambda lm, layers, **kw: cov(lm))
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))  # the unedited references are stored there
    out = tmp_path / "run.json"
    argv = ["--n", "4", "--batch", "2", "--checkpoint-every", "1", "--values", "unedited", "--glue-n", "2",
            "--shots", "1", "--texts", "2", "--latent-n", "2", "--sample-per-batch", "1", "--cov-weight", "5",
            "--out", str(out)]
    ps.main(argv)
    run = json.loads(out.read_text())
    assert run["settings"]["cov_weight"] == 5.0 and run["session"]["preset"]["cov_weight"] == 5.0
    assert [c["step"] for c in run["checkpoints"]] == [0, 1, 2] and run["final"]["n"] == 4
    assert run["evaluation"]["shots"] == 1 and run["evaluation"]["tasks"]["nli"] == 2
    assert set(run["timings"]) >= {"reference", "stream", "total", "final_all_records"}
    assert run["evaluation"]["reference_cached"] is False and len(list((tmp_path / "cache" / "references").glob("*.pt"))) == 1
    with pytest.raises(SystemExit):  # never overwrites a run
        ps.main(argv)
    assert json.loads(out.read_text()) == run

    # interrupted in step 2 (after the checkpoint of step 1), then resumed
    real = S.value_provider
    calls = []

    def dies_second_time(session, *a, **kw):
        f = real(session, *a, **kw)

        def g(reqs):
            calls.append(len(reqs))
            if len(calls) == 2:
                raise KeyboardInterrupt
            return f(reqs)
        return g

    cut = tmp_path / "cut.json"
    argv_cut = argv[:-1] + [str(cut)]
    monkeypatch.setattr(S, "value_provider", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        ps.main(argv_cut)
    assert json.loads(cut.read_text())["session_step"] == 1
    monkeypatch.setattr(S, "value_provider", real)
    ps.main(argv_cut + ["--resume"])
    again = json.loads(cut.read_text())
    assert again["evaluation"]["reference_cached"] is True  # the first run's references, read back
    assert again["checkpoints"][0]["capability"] == run["checkpoints"][0]["capability"]
    assert again["final"]["efficacy_per_record"] == run["final"]["efficacy_per_record"]
    assert len(again["steps"]) == len(run["steps"]) == 2
    for a, b in zip(again["steps"], run["steps"]):
        assert a["dW"] == pytest.approx(b["dW"], rel=1e-6)


def test_references_cached_read_back_and_recomputed_when_corrupt(tmp_path):
    lm = fresh()
    tasks = {"sst2": load_probes("sst2", 4), "mmlu": load_probes("mmlu", 3)}
    texts = ["The river flows through the old town and into the sea."] * 2

    def ev(cache=tmp_path, **kw):
        return S.StreamEval(lm, records(), 2, texts=texts, tasks=tasks, sample_per_batch=1, seed=0, n_boot=20,
                            progress=False, cache=cache, **kw)

    first = ev()
    assert first.cached is False
    [data] = tmp_path.glob("*.pt")
    again = ev()
    assert again.cached is True and again.settings()["reference_cached"] is True
    assert again.capability == first.capability
    assert again.baseline.lm.top1[0].tolist() == first.baseline.lm.top1[0].tolist()
    assert again.baseline.lm.nll_sum == first.baseline.lm.nll_sum
    assert torch.equal(again.baseline.latent.states, first.baseline.latent.states)
    assert again.baseline.latent.records == first.baseline.latent.records
    for key, st in first.baseline.neighbourhood.items():
        other = again.baseline.neighbourhood[key]
        assert (other.lp_new, other.lp_true, other.top1) == (st.lp_new, st.lp_true, st.top1)
        assert torch.equal(other.topk_ids, st.topk_ids) and torch.equal(other.topk_logprobs, st.topk_logprobs)
    assert again.checkpoint(lm, 1) | {"seconds": 0} == first.checkpoint(lm, 1) | {"seconds": 0}

    assert ev(max_len=16).cached is False  # other inputs, another entry
    assert len(list(tmp_path.glob("*.pt"))) == 2
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    fixed = ev()  # a corrupted entry is recomputed and rewritten
    assert fixed.cached is False and fixed.capability == first.capability
    assert ev().cached is True
    assert ev(cache=False).cached is False and len(list(tmp_path.glob("*.pt"))) == 2  # nothing stored


def test_capability_every_skips_middle_checkpoints_only(tmp_path):
    lm = fresh()
    tasks = {"sst2": load_probes("sst2", 4)}
    with pytest.raises(S.StreamError, match="capability_every"):
        S.StreamEval(lm, records(), 2, tasks=tasks, capability_every=0, progress=False)
    ev = S.StreamEval(lm, records(), 2, tasks=tasks, sample_per_batch=1, capability_every=2, n_boot=20,
                      progress=False)
    assert ev.settings()["capability_every"] == 2
    s = EditSession(lm, "memit", "aligned", cov=cov(lm), progress=False)
    run = S.run_stream(s, ev, tmp_path / "run.json", values=lambda reqs: compute_values(lm, reqs),
                       checkpoint_every=1, progress=False)
    has = {c["step"]: "capability" in c for c in run["checkpoints"]}
    assert has == {0: True, 1: False, 2: True, 3: True}  # step 3 is the final model
    assert all("edit_sample" in c and "lm" not in c for c in run["checkpoints"][1:])


def test_edited_values_with_templates_follow_the_edited_weights():
    lm = fresh()
    s = EditSession(lm, "memit", "aligned", cov=cov(lm), progress=False)
    assert S.value_provider(s, "edited") is None           # session.step optimises them itself
    get = S.value_provider(s, "edited", templates=["{}"])
    reqs = S._requests(records()[2:3])
    before = get(reqs).z.clone()
    assert torch.equal(before, compute_values(lm, reqs, templates=["{}"]).z)
    s.step(S._requests(records()[:2]), values=compute_values(lm, S._requests(records()[:2]), templates=["{}"]))
    assert not torch.equal(get(reqs).z, before)            # re-optimised on the edited model


def test_paper_stream_runs_share_one_process_and_skip_finished(tmp_path, monkeypatch):
    """--runs: several editors after one another on one model; each file equals its single run; reruns skip."""
    import importlib.util
    from pathlib import Path

    import otelab.data.texts
    import otelab.engine.covariance
    import otelab.data.loaders
    import otelab.models.loading

    spec = importlib.util.spec_from_file_location(
        "paper_stream", Path(__file__).resolve().parents[1] / "experiments" / "paper_stream.py")
    ps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ps)
    monkeypatch.setattr(otelab.models.loading, "load_model", lambda name=None: fresh())
    monkeypatch.setattr(otelab.data.loaders, "load_counterfact", lambda: records() + records()[:2])
    monkeypatch.setattr(otelab.data.texts, "held_out_texts", lambda n: ["The river flows into the sea."] * n)
    monkeypatch.setattr(otelab.engine.covariance, "get_covariance", lambda lm, layers, **kw: cov(lm))
    common = ["--n", "4", "--batch", "2", "--checkpoint-every", "1", "--values", "unedited", "--glue-n", "0",
              "--texts", "2", "--latent-n", "2", "--sample-per-batch", "1"]
    with pytest.raises(SystemExit):                           # a bad spec fails before any model work
        ps.main(common + ["--runs", "memit:aligned:lam=5", "memit:sideways", "--out-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    ps.main(common + ["--runs", "memit:naive:lam=5", "memit:aligned:lam=5", "memit:aligned:lam=5:batch=4",
                      "--out-dir", str(tmp_path / "p")])
    names = sorted(f.name for f in (tmp_path / "p").glob("*.json"))
    assert names == ["memit-aligned-values-unedited-lam5.json", "memit-naive-values-unedited-lam5.json",
                     "memit-ote-values-unedited-lam5.json"]
    ps.main(common + ["--cov-weight", "5", "--out", str(tmp_path / "single.json")])   # aligned, on its own
    single = json.loads((tmp_path / "single.json").read_text())
    shared = json.loads((tmp_path / "p" / names[0]).read_text())
    assert shared["final"]["efficacy_per_record"] == single["final"]["efficacy_per_record"]
    for a, b in zip(shared["steps"], single["steps"]):       # the naive run before it left W0 untouched
        assert a["dW"] == pytest.approx(b["dW"], rel=1e-6)
    ote = json.loads((tmp_path / "p" / names[2]).read_text())
    assert len(ote["steps"]) == 1 and ote["final"]["n"] == 4
    before = {n: (tmp_path / "p" / n).read_bytes() for n in names}
    ps.main(common + ["--runs", "memit:naive:lam=5", "--out-dir", str(tmp_path / "p")])
    assert {n: (tmp_path / "p" / n).read_bytes() for n in names} == before
