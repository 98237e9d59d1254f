"""``otelab demo`` and its HTML report: end to end at CI size, plus the pieces."""
from __future__ import annotations

import html
import json
import re

import pytest
import torch

from otelab.demo import run as demo

from otelab.views import html_report
PANELS = ("edit metrics", "general capability", "language-model drift", "latent drift", "weight change")
def _run(tmp_path, *extra):
    out = tmp_path / "demo"
    rc = demo.main(["--quick", "--out", str(out), "--no-progress", *extra])
    return rc, json.loads((out / "metrics.json").read_text()), (out / "report.html").read_text()


def test_demo_quick_tiny_writes_metrics_and_report(tmp_path, offline_texts, corpus_file, capsys, monkeypatch):
    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))     # an empty value bank
    rc, m, page = _run(tmp_path, "--model", "tiny-llama", "--corpus", corpus_file, "--cov-tokens", "1500")
    assert rc == 0
    assert m["format"] == "otelab-demo/1"
    for key in ("settings", "verify", "summary", "pairs", "runs", "report", "timings"):
        assert key in m, key
    s = m["settings"]
    assert (s["n_records"], s["batch_size"], s["n_steps"]) == (4, 2, 2)
    assert s["pairs"] == [list(p) for p in demo.DEFAULT_PAIRS]
    assert all(r["passed"] for r in m["verify"]["identities"])
    specs = demo.DemoConfig().runs()
    assert set(m["runs"]) == set(specs)
    assert [r["spec"] for r in m["summary"]] == specs
    for spec, r in m["runs"].items():
        assert len(r["step_seconds"]) == 2
        assert r["final"]["edits"] == 4.0
        assert r["final"]["delta_norm"] > 0          # the run really edited the model
    # every run has step 0 (unedited) and the last step in the per-step report
    rows = m["report"]["rows"]
    for spec in specs:
        steps = {row["step"] for row in rows if row["label"] == demo.run_label(spec) and row["metric"] == "efficacy_all"}
        assert steps == {0, 1, 2}
    for p in m["pairs"]:
        assert set(p["aligned_better"]).isdisjoint(p["misaligned_better"])
        assert {d["better"] for d in p["metrics"].values()} <= {"aligned", "misaligned", "tie"}
    # the page: every panel of every pair, the verification, the settings, plotly.js inline once
    for i, (a, b) in enumerate(demo.DEFAULT_PAIRS, start=1):
        lines = html.escape(f"{demo.PAIR_TITLES[(a, b)]}. Solid: {demo.run_label(a)}, dashed: {demo.run_label(b)}.")
        for panel in PANELS:
            assert f">{html.escape(demo.pair_heading((a, b), i))}: {panel}</h2>" in page, panel
        assert page.count(lines) == len(PANELS)
    assert "Theory: every identity, checked numerically" in page
    assert "Settings used" in page and "&quot;n_records&quot;: 4" in page and "tiny-llama" in page
    n_panels = len(re.findall(r"<div class='panel'", page))
    # plus the toy collapse figure, which `otelab verify --quick` now also reproduces (at a small size)
    assert n_panels == len(demo.DEFAULT_PAIRS) * len(PANELS) + (1 if m["verify"]["toy_collapse"] else 0)
    assert page.count("Plotly.newPlot") == n_panels
    # plotly.js is inline (its own source mentions the CDN as a config default, so look for a script tag)
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert "wrote" in capsys.readouterr().out
    # the shipped fact-bank values are SmolLM2's: refused for this model (one line), values computed instead
    assert s["values_source"].startswith("not using factbank-values-smollm2-135m.safetensors: computed for another "
                                         "model or value spec")
    # the page says what the stream shows, in words made from the measured numbers
    for p in m["pairs"]:
        assert p["findings"].startswith(f"After 4 edits (2 steps of 2), {demo.run_label(p['aligned'])} vs ")
        assert [c["edits"] for c in p["trajectory"]] == [2.0, 4.0]
        assert html.escape(p["findings"], quote=False) in page.replace("&#x27;", "'")


def test_demo_imports_matching_shipped_values_instead_of_computing(tmp_path, offline_texts, corpus_file,
                                                                   monkeypatch):
    """A shipped file computed for this exact model and spec fills the empty bank: no value is optimised."""
    import otelab.engine.valuebank
    from otelab.engine import values as V
    from otelab.data.loaders import load_factbank
    from otelab.models.loading import load_model
    from otelab.engine.valuebank import ValueBank

    monkeypatch.setenv("OTELAB_CACHE", str(tmp_path / "cache"))
    reqs = [r.request() for r in load_factbank(n=4)]
    file = ValueBank(load_model("tiny-llama"), path=tmp_path / "src", progress=False).export(
        tmp_path / "shipped.safetensors", reqs)
    monkeypatch.setattr(otelab.engine.valuebank, "FACTBANK_VALUES", file)
    monkeypatch.setattr(V, "compute_values", lambda *a, **k: (_ for _ in ()).throw(AssertionError("computed")))
    rc, m, _ = _run(tmp_path, "--model", "tiny-llama", "--corpus", corpus_file, "--cov-tokens", "1500",
                    "--skip-verify", "--no-umap", "--pairs", "memit:aligned/memit:naive")
    assert rc == 0 and m["settings"]["values_source"].startswith("imported 4 values from shipped.safetensors")


def test_run_stream_restores_the_model(tmp_path, offline_texts, corpus_file):
    from otelab.engine.covariance import get_covariance
    from otelab.eval.metrics import Baseline
    from otelab.models.loading import load_model

    cfg = demo.DemoConfig.quick(model="tiny-llama", glue_n=0, n_texts=0, latent_n=0)
    lm = load_model("tiny-llama")
    W0 = {l: lm.adapter.get_W(lm.model, l).clone() for l in lm.layers}
    cov = get_covariance(lm, list(lm.layers), corpus=corpus_file, n_tokens=1500, progress=False,
                         directory=tmp_path / "cov")
    data = demo.load_demo_data(cfg)
    base = Baseline.compute(lm.model, lm.tokenizer, data.stream, show_progress=False)
    res = demo.run_stream(lm, cov, "memit:naive", data, base, {"edits": 0.0}, cfg)
    assert res.report.latest()["delta_norm"] > 0
    assert len(res.step_seconds) == 2
    for l in lm.layers:
        assert torch.equal(lm.adapter.get_W(lm.model, l), W0[l])


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="n_records"):
        demo.DemoConfig(n_records=7, batch_size=2).check()
    with pytest.raises(ValueError, match="bogus:aligned"):
        demo.DemoConfig(pairs=(("bogus:aligned", "memit:naive"),)).check()
    with pytest.raises(Exception, match="a pair is"):
        demo.parse_pairs("memit:aligned")
    assert demo.parse_pairs("memit:aligned/memit:naive, alphaedit:aligned/alphaedit:naive") == (
        ("memit:aligned", "memit:naive"), ("alphaedit:aligned", "alphaedit:naive"))


def test_verdict_respects_direction_and_tolerance():
    v = demo._verdict({"efficacy_all": 0.9, "ppl": 10.0, "top1_agreement": 0.95},
                      {"efficacy_all": 0.5, "ppl": 12.0, "top1_agreement": 0.94})
    assert v["efficacy_all"]["better"] == "aligned"
    assert v["ppl"]["better"] == "aligned"              # lower perplexity is better
    assert v["top1_agreement"]["better"] == "tie"       # 0.01 is within TIE_ABS
    assert demo._verdict({"ppl": 12.0}, {"ppl": 10.0})["ppl"]["better"] == "misaligned"


def test_findings_are_made_from_the_measured_numbers():
    from otelab.eval.report import Report

    a, b = Report("MEMIT aligned"), Report("MEMIT naive")
    for rep, rows in ((a, [(0.9, 18.0, 0.95), (0.9, 20.0, 0.95)]), (b, [(0.8, 18.1, 0.95), (0.5, 18.0, 0.94)])):
        rep.add(0, edits=0, efficacy_all=0.0, ppl=17.0, top1_agreement=1.0)
        for t, (eff, ppl, top1) in enumerate(rows, start=1):
            rep.add(t, edits=100 * t, efficacy_all=eff, ppl=ppl, top1_agreement=top1)
    combined = Report.combine(a, b)
    p = {"aligned": "memit:aligned", "misaligned": "memit:naive",
         "metrics": demo._verdict(a.latest(), b.latest()),
         "trajectory": demo.pair_trajectory(combined, "MEMIT aligned", "MEMIT naive")}
    assert [c["edits"] for c in p["trajectory"]] == [100.0, 200.0]
    text = demo.pair_findings(p, {"n_records": 200, "n_steps": 2, "batch_size": 100})
    assert text.startswith("After 200 edits (2 steps of 100), MEMIT aligned vs MEMIT naive: MEMIT aligned is better "
                           "on efficacy on all edits so far (0.9 vs 0.5), and MEMIT naive is better on held-out "
                           "perplexity (20 vs 18); within tolerance on top-1 agreement with the unedited model.")
    assert text.endswith("The largest gap, in efficacy on all edits so far, grew over the stream: MEMIT aligned minus "
                         "MEMIT naive was +0.1 after 100, +0.4 after 200 edits; it first exceeded the tolerance "
                         "after 100 edits.")
    same = dict(p, metrics=demo._verdict(a.latest(), a.latest()), trajectory=[])
    assert "within tolerance on all 3 metrics, so this stream does not separate them (efficacy on all edits so far " \
           "0.9 vs 0.9;" in demo.pair_findings(same, {"n_records": 200, "n_steps": 2, "batch_size": 100})


def test_html_report_escapes_and_inlines_plotly_once(tmp_path):
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    path = html_report.write(tmp_path / "r.html", "a <title>", [
        ("figure", "one", fig, ""), ("figure", "two", fig, "cap"),
        ("table", "rows", [{"name": "<b>x</b>", "value": 0.5}], ""), ("pre", "log", "a < b", "")],
        settings={"n": 3, "pairs": [["a", "b"]]})
    page = path.read_text()
    assert page.count("Plotly.newPlot") == 2
    assert len(re.findall(r"plotly\.js v\d", page)) == 1        # the library's banner: embedded once
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "a &lt; b" in page and "a &lt;title&gt;" in page
    assert "Settings used" in page and "[[&quot;a&quot;, &quot;b&quot;]]" in page
    with pytest.raises(ValueError, match="kind 'plot'"):
        html_report.render("t", [("plot", "x", fig, "")])
    with pytest.raises(ValueError, match="needs a plotly figure"):
        html_report.render("t", [("figure", "x", "not a figure", "")])


@pytest.mark.slow
def test_demo_quick_smollm2(tmp_path):
    """The real model at CI size: the pipeline runs and every edit of the stream is applied."""
    rc, m, page = _run(tmp_path, "--skip-verify", "--no-umap")
    assert rc == 0 and m["verify"] is None
    assert m["settings"]["model_resolved"] == "smollm2-135m"
    for r in m["runs"].values():
        assert r["final"]["delta_norm"] > 0
        assert 0.0 <= r["final"]["efficacy_all"] <= 1.0
    assert all(f": {p}" in page for p in PANELS)


def test_paper_numbers_stand_beside_the_demo_runs():
    """The report's paper section pairs each run with the printed row of the claim it tests."""
    from otelab.paper import claims as paper
    from otelab.demo.run import paper_beside
    settings = {"model_resolved": "tiny", "n_records": 4, "data": "factbank", "n_steps": 2, "batch_size": 2}
    summary = [{"run": "MEMIT aligned", "spec": "memit:aligned", "efficacy_all": 0.5},
               {"run": "MEMIT naive", "spec": "memit:naive", "efficacy_all": 0.25}]
    rows, ours = paper_beside({"settings": settings, "summary": summary})
    assert ours == "tiny, 4 factbank edits in 2 steps of 2"
    eff = {r["run"]: r for r in rows if r["metric"] == "efficacy_all"}
    assert eff["MEMIT aligned"]["otelab"] == 0.5 and eff["MEMIT naive"]["otelab"] == 0.25
    claim = paper.claim("tables2_5")
    assert eff["MEMIT aligned"]["paper"] == claim.paper_numbers["memit:aligned"].value("efficacy_all")
    expected = {c.where for c in paper.CLAIMS if {"memit:aligned", "memit:naive"} & set(c.paper_numbers)}
    assert {r["claim"] for r in rows} == expected


# --------------------------------------------------------------------------- the report, from a recorded-like run

def _fake_run(settings: dict, eff_misaligned: float = 1.0) -> tuple[dict, dict]:
    """``(metrics, results)`` as :func:`otelab.demo.run.run_demo` builds them, for the default pairs, without editing.

    Every run scores the same but for ``efficacy_all``: the aligned runs end at 0.5, the
    misaligned ones at ``eff_misaligned``.
    """
    from otelab.eval.report import Report

    results = {}
    for a, b in demo.DEFAULT_PAIRS:
        for spec, eff in ((a, 0.5), (b, eff_misaligned)):
            rep = Report(demo.run_label(spec), meta={"spec": spec})
            for t in range(3):
                rep.add(t, edits=2.0 * t, efficacy_all=eff * t / 2, paraphrase_all=0.5, efficacy_latest=0.9,
                        specificity=0.8, specificity_retained=0.9, neighbourhood_kl=0.1 * t, ppl=20.0 + t,
                        top1_agreement=1 - 0.05 * t, latent_drift=0.01 * t, latent_drift_edited=0.02 * t,
                        latent_drift_unrelated=0.01 * t, glue_mean=0.5, delta_norm=3.0 * t,
                        **{"glue/boolq/acc": 0.5, "glue/sst2/acc": 0.5})
            results[spec] = demo.RunResult(spec, demo.run_label(spec), rep)
    summary = [{"run": r.label, "spec": spec, **{m: r.report.latest().get(m) for m in demo.SUMMARY_METRICS},
                "edit_s_per_step": 0.25} for spec, r in results.items()]
    pairs = []
    for a, b in demo.DEFAULT_PAIRS:
        v = demo._verdict(results[a].report.latest(), results[b].report.latest())
        p = {"title": demo.PAIR_TITLES[(a, b)], "aligned": a, "misaligned": b, "metrics": v, "trajectory": [],
             "aligned_better": [m for m, d in v.items() if d["better"] == "aligned"],
             "misaligned_better": [m for m, d in v.items() if d["better"] == "misaligned"]}
        p["findings"] = demo.pair_findings(p, settings)
        pairs.append(p)
    return {"settings": settings, "summary": summary, "pairs": pairs, "verify": None,
            "timings": {"total": 1.0}}, results


@pytest.fixture(scope="module")
def tiny_settings():
    """The settings of a default-model demo run (``model`` not given) on a tiny random model."""
    from types import SimpleNamespace

    from otelab.models.loading import tiny_model

    data = SimpleNamespace(glue={"boolq": [], "sst2": []}, latent_records=[])
    return demo.demo_settings(demo.DemoConfig.quick(), tiny_model("llama"), data, latent_layer=3)


def _section_html(page: str, title: str) -> str:
    """The markup from the heading ``title`` to the next ``<h2``."""
    start = page.index(f">{html.escape(title)}</h2>")
    return page[start:page.index("<h2", start)]


def test_report_contents_have_short_headings_and_keep_the_detail(tiny_settings):
    metrics, results = _fake_run(tiny_settings)
    page = html_report.render("t", demo.build_sections(metrics, results), settings=tiny_settings)
    toc = re.findall(r"<li><a href='#[^']+'>([^<]*)</a></li>", page)
    assert len(toc) >= 2 + len(demo.DEFAULT_PAIRS) * len(PANELS)
    assert max(len(html.unescape(t)) for t in toc) <= 50, toc
    for a, b in demo.DEFAULT_PAIRS:        # the long title moved into the section text, not dropped
        assert html.escape(demo.PAIR_TITLES[(a, b)]) in page


def test_report_summary_tables_fit_a_laptop_window(tiny_settings):
    """14 columns of snake_case headers ran past 1440 px: now tables of ≤ 7 short headers, every metric kept."""
    metrics, results = _fake_run(tiny_settings)
    page = html_report.render("t", demo.build_sections(metrics, results), settings=tiny_settings)
    summary = _section_html(page, "Summary: final metrics of every run")
    tables = re.findall(r"<table>.*?</table>", summary, flags=re.S)
    assert len(tables) == len(demo.SUMMARY_TABLES)
    heads = []
    for t in tables:
        cols = [html.unescape(h) for h in re.findall(r"<th[^>]*>([^<]*)</th>", t)]
        assert len(cols) <= 7 and max(len(c) for c in cols) <= 12, cols
        assert t.count("<tr>") == 1 + len(results)          # header plus one row per run
        heads += cols[1:]
    assert heads == [head for _, cols in demo.SUMMARY_TABLES for _, head, _ in cols]
    assert {key for _, cols in demo.SUMMARY_TABLES for key, _, _ in cols} == set(demo.SUMMARY_METRICS) | {
        "edit_s_per_step"}
    assert "<b>latent drift</b>: 1 − cos of unrelated subjects" in summary     # the key says what a column is


def test_report_settings_name_the_default_model(tiny_settings):
    assert tiny_settings["model"] == tiny_settings["model_resolved"] == "tiny-llama"
    page = html_report.render("t", [], settings=tiny_settings)
    assert "<td class='l'>model</td><td class='l'>tiny-llama</td>" in page
    assert "<td class='l'>model</td><td class='l'>—</td>" not in page


def test_memorize_the_latest_pair_explains_why_eq3_keeps_more_edits(tiny_settings):
    metrics, _ = _fake_run(tiny_settings)
    table1, memit = metrics["pairs"]
    assert table1["misaligned_better"] == memit["misaligned_better"] == ["efficacy_all"]
    for text in (table1["findings"], demo.pair_sentence(table1)):
        assert "Why AlphaEdit memorize-nullspace is ahead on efficacy on all edits so far: memorize-the-latest" in text
        assert "Table 1's claim is about preservation" in text
    # naive MEMIT ahead on old edits would be a real finding: no excuse is made for it
    assert demo.latest_note(memit) == "" and "Why" not in memit["findings"]
    tied, _ = _fake_run(tiny_settings, eff_misaligned=0.5)
    assert demo.latest_note(tied["pairs"][0]) == ""
