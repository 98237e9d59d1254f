"""Tests for otelab.paper.protocol: the recorded 2,000-edit protocol as tables, curves and verdicts.

Synthetic runs (the ``otelab-stream/1`` layout, numbers chosen here) check the arithmetic and the
wording; the recorded λ = 1,000 aligned MEMIT run checks that a real file reads back unchanged.
"""
from __future__ import annotations

import copy
import json
import math
import runpy
from pathlib import Path

import pytest

from otelab.paper import claims as paper

from otelab.toy import plots

from otelab.paper import protocol as P
ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "experiments" / "results" / "stream2000-memit-aligned-lam1000.json"
TASKS = ("sst2", "mmlu")


def checkpoint(step, edits, ppl, top1, agree, margin, drift, eff=None):
    ck = {"step": step, "edits": edits, "lm": {"ppl": ppl, "ppl_unedited": 50.0, "top1_agreement": top1},
          "latent": {"cos_drift": drift, "cos_drift_unrelated": drift, "cos_drift_edited": 2 * drift},
          "capability": {t: {"acc": 0.5, "f1": 0.4, "agreement": agree + d, "margin": margin + d,
                             "margin_change": 0.0} for t, d in zip(TASKS, (-0.01, 0.01))},
          "capability_mean": {"acc": 0.5, "f1": 0.4, "agreement": agree, "margin": margin, "margin_change": 0.0}}
    if eff is not None:
        ck["edit_sample"] = {"n": 4, **{k: eff for k in P.SCORES}, **{k + "_ci": [eff - 0.1, eff + 0.1]
                                                                        for k in P.SCORES}}
    return ck


def synthetic_run(method="memit", mode="aligned", lam=3000.0, eff=0.9, half=0.02, ppl=60.0, top1=0.8, agree=0.9,
                  keep=0.2, values="bank", n=40, batch=10, complete=True):
    """A run of ``n`` edits in steps of ``batch``: scores ``eff ± half`` (all three), final PPL / top-1 / agreement."""
    steps = n // batch
    run = {"format": "otelab-stream/1",
           "settings": {"method": method, "mode": mode, "cov_weight": lam, "values": values, "rect_keep": keep},
           "session": {"method": method, "mode": mode, "layers": [3, 4]},
           "stream": {"case_ids": list(range(n)), "batch_size": batch},
           "steps": [{"step": s, "edits": s * batch, "dW": {"3": 10.0 * s, "4": 20.0 * s}, "cond": {"3": 9, "4": 9},
                      "timings": {"total": 2.0, "provider_values": 0.5}} for s in range(1, steps + 1)],
           "checkpoints": [checkpoint(0, 0, 50.0, 1.0, 1.0, 2.0, 0.0)],
           "final": None, "retention": None}
    if steps > 1:
        run["checkpoints"].append(checkpoint(steps // 2, steps // 2 * batch, (50 + ppl) / 2, (1 + top1) / 2,
                                             (1 + agree) / 2, 1.0, 0.05, eff))
    if complete:
        run["checkpoints"].append(checkpoint(steps, n, ppl, top1, agree, 0.5, 0.1, eff))
        run["final"] = {"n": n, "seconds": 1.0, **{k: eff for k in P.SCORES},
                        **{k + "_ci": [eff - half, eff + half] for k in P.SCORES}}
    else:
        run["steps"] = run["steps"][:steps // 2]
    return run


def write(folder: Path, runs: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, run in runs.items():
        (folder / name).write_text(json.dumps(run))
    return folder


@pytest.fixture
def protocol_folder(tmp_path):
    return write(tmp_path / "paper2000", {
        "memit-aligned-lam1000.json": synthetic_run(lam=1000.0, eff=0.80, ppl=100.0, top1=0.6),
        "memit-aligned-lam3000.json": synthetic_run(eff=0.95, ppl=60.0, top1=0.8),
        "memit-naive-lam3000.json": synthetic_run(mode="naive", eff=0.55, ppl=400.0, top1=0.3, agree=0.6),
        "alphaedit-aligned-lam3000.json": synthetic_run("alphaedit", eff=0.90, ppl=61.0),
        "alphaedit-naive-lam3000.json": synthetic_run("alphaedit", "naive", eff=0.89, ppl=62.0),
        "rect-aligned-keep0.4-lam3000.json": synthetic_run("rect", keep=0.4, eff=0.93),
        "rect-aligned-lam3000.json": synthetic_run("rect", eff=0.92),
        "memit-ote-lam3000.json": synthetic_run(eff=0.97, batch=40, ppl=58.0),
        "prune-aligned-lam3000.json": synthetic_run("prune", complete=False),
    })


def test_runs_are_read_ordered_and_split(protocol_folder, tmp_path):
    extra = write(tmp_path / "other", {"a.json": synthetic_run(lam=1000.0, eff=0.1),
                                       "b.json": synthetic_run(lam=10000.0)})
    runs = P.protocol_runs(protocol_folder, extra / "a.json", extra / "b.json")
    assert list(runs) == ["MEMIT aligned λ=1000", "MEMIT aligned λ=3000", "MEMIT aligned λ=10000",
                          "MEMIT naive λ=3000", "MEMIT one-time edit λ=3000", "AlphaEdit aligned λ=3000",
                          "AlphaEdit naive λ=3000", "PRUNE aligned λ=3000", "RECT aligned λ=3000",
                          "RECT aligned 40% λ=3000"]
    assert runs["MEMIT aligned λ=1000"]["final"]["efficacy"] == 0.80          # the folder's run wins over a.json
    assert P.protocol_lambda(runs) == 3000.0
    assert list(P.sweep_runs(runs)) == ["MEMIT aligned λ=1000", "MEMIT aligned λ=3000", "MEMIT aligned λ=10000"]
    assert all(P.setting(r, "cov_weight") == 3000.0 for r in P.editors(runs).values())
    assert P.in_progress(runs) == ["PRUNE aligned λ=3000: 20 of 40 edits"]
    assert P.run_spec(runs["MEMIT one-time edit λ=3000"]) == "memit:one-time"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        P.protocol_runs(protocol_folder, tmp_path / "nope.json")
    assert list(P.protocol_runs(tmp_path / "missing", extra / "a.json")) == ["MEMIT aligned λ=1000"]


def test_final_scores_read_the_final_model(protocol_folder):
    runs = P.editors(P.protocol_runs(protocol_folder))
    df = P.final_scores(runs)
    assert list(df.index)[0] == "unedited" and "PRUNE aligned λ=3000" not in df.index   # incomplete: left out
    u = df.loc["unedited"]
    assert (u["ppl"], u["top1_agreement"], u["capability_agreement"], u["dW_sum"]) == (50.0, 1.0, 1.0, 0.0)
    r = df.loc["MEMIT naive λ=3000"]
    assert (r["efficacy"], r["efficacy_lo"], r["efficacy_hi"]) == (0.55, pytest.approx(0.53), pytest.approx(0.57))
    assert (r["ppl"], r["top1_agreement"], r["capability_agreement"]) == (400.0, 0.3, 0.6)
    assert r["dW_sum"] == 4 * 10.0 + 4 * 20.0                                # Σ over layers, after the last step
    assert r["edit_seconds"] == pytest.approx(4 * 2.5)                       # step time + value fetch, 4 steps
    assert r["edits"] == 40 and r["mode"] == "naive"
    assert df.loc["MEMIT one-time edit λ=3000", "mode"] == "one-time"
    st = P.settings_table(P.protocol_runs(protocol_folder))
    assert st.loc["PRUNE aligned λ=3000", "edits"] == "20 / 40" and st.loc["MEMIT one-time edit λ=3000", "batch"] == 40


def test_beside_paper_picks_the_printed_rows(protocol_folder):
    runs = P.editors(P.protocol_runs(protocol_folder))
    bp = P.beside_paper(runs)
    row = lambda ed, metric: bp[(bp["editor"] == ed) & (bp["metric"] == P.METRIC_NAMES[metric])]  # noqa: E731
    naive = row("MEMIT naive λ=3000", "efficacy_all")
    assert naive["paper"].item() == pytest.approx(0.5735) and naive["otelab"].item() == 0.55
    assert row("MEMIT naive λ=3000", "ppl")["paper"].item() == 54062861
    ote = row("MEMIT one-time edit λ=3000", "efficacy_all")
    assert ote["paper"].item() == pytest.approx(0.9980) and "OTE column" in ote["paper row"].item()
    # RECT keeping 40 % is the paper's RECT (Tables 2/5, 7); keeping 20 % is its Table 6
    assert set(bp[bp["editor"] == "RECT aligned 40% λ=3000"]["paper table"]) == {"Tables 2 and 5", "Table 7",
                                                                                  "Table 11"}
    assert set(bp[bp["editor"] == "RECT aligned λ=3000"]["paper table"]) == {"Table 6"}
    assert row("RECT aligned λ=3000", "efficacy_all")["paper"].item() == pytest.approx(0.985)
    assert row("unedited", "glue_mean")["paper"].item() == pytest.approx(0.627)
    assert row("MEMIT aligned λ=3000", "glue_mean")["paper"].item() == pytest.approx(0.555)
    assert any("LLaMA-3" in s for s in P.paper_settings(bp)) and any("10,000" in s for s in P.paper_settings(bp))


def test_lambda_sweep_marks_the_protocol_lambda(protocol_folder):
    sw = P.lambda_sweep(P.protocol_runs(protocol_folder))
    assert list(sw.index) == [1000.0, 3000.0] and list(sw["protocol"]) == [False, True]
    assert list(sw["ppl"]) == [100.0, 60.0] and list(sw["efficacy"]) == [0.80, 0.95]


def test_verdicts_follow_the_numbers(protocol_folder):
    runs = P.protocol_runs(protocol_folder)
    text = "\n".join(P.verdicts(runs))
    memit = next(v for v in P.verdicts(runs) if v.startswith("**MEMIT aligned λ=3000 vs MEMIT naive"))
    assert "efficacy 0.950 [0.930, 0.970] vs 0.550 [0.530, 0.570]: aligned higher" in memit
    assert "PPL 60.0 vs 400.0 (unedited 50.0): aligned lower" in memit
    assert "top-1 agreement 0.800 vs 0.300: aligned higher" in memit
    assert "the same direction shows here" in memit
    alpha = next(v for v in P.verdicts(runs) if v.startswith("**AlphaEdit"))
    assert "efficacy 0.900 [0.880, 0.920] vs 0.890 [0.870, 0.910]: not separated (the 95 % intervals overlap)" in alpha
    assert "PPL 61.0 vs 62.0 (unedited 50.0): within 10% of each other" in alpha
    assert "here the two are not separated" in alpha
    assert "**MEMIT aligned λ=3000 vs MEMIT one-time edit λ=3000**" in text
    assert "λ sweep of aligned MEMIT** (λ = 1000, 3000)" in text and "other editors ran at λ = 3000" in text
    assert "efficacy 0.800 [0.780, 0.820] vs 0.950 [0.930, 0.970]: λ = 1000 lower" in text
    assert "PRUNE aligned λ=3000: 20 of 40 edits" in text
    # a naive run better than aligned is said so, not hidden
    flipped = copy.deepcopy(runs)
    flipped["MEMIT naive λ=3000"]["final"].update(efficacy=0.99, efficacy_ci=[0.98, 1.0])
    memit = next(v for v in P.verdicts(flipped) if v.startswith("**MEMIT aligned λ=3000 vs MEMIT naive"))
    assert "aligned lower" in memit and "the opposite direction shows here" in memit


def test_curves_and_their_figure(protocol_folder):
    runs = P.protocol_runs(protocol_folder)
    df = P.curves(runs)
    assert set(df["metric"]) == {m for m, _ in P.CURVES}
    naive = df[(df["label"] == "MEMIT naive λ=3000") & (df["metric"] == "capability_agreement")]
    assert list(naive["edits"]) == [0, 20, 40] and list(naive["value"]) == pytest.approx([1.0, 0.8, 0.6])
    prune = df[(df["label"] == "PRUNE aligned λ=3000") & (df["metric"] == "ppl")]
    assert list(prune["edits"]) == [0, 20]                                   # in progress: up to its checkpoint
    fig = plots.curves_figure(df, P.CURVES, title="t")
    assert len(fig.data) == len(runs) * len(P.CURVES)
    assert sum(t.showlegend is not False for t in fig.data) == len(runs)
    assert fig.layout.yaxis.type == "log"                                    # PPL spans 50 to 400 (8×): log axis
    assert fig.layout.yaxis2.type != "log"


def test_markdown_and_the_script(protocol_folder, capsys):
    runs = P.protocol_runs(protocol_folder)
    md = P.markdown(runs)
    for part in ("#### Final scores (λ = 3000)", "#### Beside the paper", "#### λ sweep of aligned MEMIT",
                 "#### What the numbers say", "| MEMIT naive λ=3000 | 3,000 | 40 | 0.550 [0.530, 0.570]",
                 "SmolLM2-135M", "LLaMA-3 (8B)"):
        assert part in md, part
    assert "λ=1000" not in md.split("#### λ sweep")[0]                        # the sweep's other λ: own table only
    main = runpy.run_path(str(ROOT / "experiments" / "paper_tables.py"))["main"]
    assert main(["--folder", str(protocol_folder), "--extra"]) == 0
    assert capsys.readouterr().out.strip() == md.strip()
    assert main(["--folder", str(protocol_folder / "none"), "--extra"]) == 2
    assert "no recorded run" in capsys.readouterr().err


def test_the_recorded_lam1000_run_reads_back():
    rec = json.loads(RECORDED.read_text())
    runs = P.protocol_runs(None, RECORDED)
    assert list(runs) == ["MEMIT aligned λ=1000"]
    df = P.final_scores(runs)
    r = df.loc["MEMIT aligned λ=1000"]
    for k in P.SCORES:
        assert (r[k], [r[k + "_lo"], r[k + "_hi"]]) == (rec["final"][k], rec["final"][k + "_ci"])
    last = rec["checkpoints"][-1]
    assert r["ppl"] == last["lm"]["ppl"] and r["capability_margin"] == last["capability_mean"]["margin"]
    assert df.loc["unedited", "ppl"] == rec["checkpoints"][0]["lm"]["ppl"]
    assert r["dW_sum"] == pytest.approx(sum(rec["steps"][-1]["dW"].values()))
    assert r["edit_seconds"] == pytest.approx(sum(s["timings"]["total"] + s["timings"]["provider_values"]
                                                  for s in rec["steps"]))
    cv = P.curves(runs)
    agree = cv[cv["metric"] == "capability_agreement"]
    assert list(agree["edits"]) == [c["edits"] for c in rec["checkpoints"]]
    assert list(agree["value"]) == pytest.approx([c["capability_mean"]["agreement"] for c in rec["checkpoints"]])
    bp = P.beside_paper(runs)
    assert set(bp["paper table"]) == {"Tables 2 and 5", "Table 7", "Table 11"}
    assert P.lambda_sweep(runs).index.tolist() == [1000.0]
    assert P.verdicts(runs) == []            # one run: nothing to compare, nothing claimed


def test_paper_table3_ote_column_and_table7_naive_rows():
    fig = paper.claim("table3").paper_numbers["rect:one-time"]
    assert fig.which == "OTE" and fig.value("efficacy_all") == pytest.approx(0.8323)
    assert paper.PaperFigure("Table 3", fig.row, fig.columns, 0.01).value("efficacy_all") == pytest.approx(0.9988)
    t7 = paper.claim("table7").paper_numbers
    assert t7["rect:naive"].value("ppl") == 303783 and t7["prune:naive"].value("top1_agreement") == 0.01
    assert not math.isnan(P.CAPABILITY["aligned"].value("glue_mean"))
