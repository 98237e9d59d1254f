"""The scrubber and the retention panel over recorded stream runs (a synthetic run, and the recorded JSON)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from otelab.views import panels
from otelab.eval.report import Report
from otelab.workbench.stream import FORMAT, load_runs, recorded_runs, stream_report
from otelab.views.widgets import Scrubber

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "results"
RECORDED = RESULTS / "stream2000-memit-aligned-lam1000.json"


def synthetic_run(method="memit", mode="aligned", shift=0.0, complete=True):
    """4 steps of 10 edits, checkpoints after steps 0, 2 and 4; 2 layers, 2 tasks; known numbers."""
    steps = [{"step": s, "edits": 10 * s, "dW": {"3": 3.0 * s, "4": 4.0 * s}, "cond": {"3": 10.0, "4": 20.0}}
             for s in range(1, 5)]

    def ck(s, eff):
        out = {"step": s, "edits": 10 * s, "lm": {"ppl": 10.0 + s + shift, "top1_agreement": 1 - 0.1 * s},
               "capability": {t: {"acc": 0.5, "f1": 0.5, "agreement": 1 - 0.1 * s * (k + 1),
                                  "margin": 2.0 - s * (k + 1), "margin_change": 0.0}
                              for k, t in enumerate(("sst2", "rte"))}}
        if s:
            out["edit_sample"] = {"n": 4}
            for k in ("efficacy", "paraphrase", "specificity"):
                out["edit_sample"].update({k: eff, k + "_ci": [eff - 0.1, eff + 0.05]})
        return out
    share = [[None, 1.0, 0.5], [None, 1.0, 0.75], [None, None, 1.0], [None, None, 1.0]]
    return {"format": FORMAT, "settings": {"method": method, "mode": mode, "cov_weight": 1000.0},
            "session": {"method": method, "mode": mode}, "stream": {"case_ids": list(range(40)), "batch_size": 10},
            "steps": steps, "checkpoints": [ck(0, 0), ck(2, 0.9), ck(4, 0.8)],
            "final": {"efficacy": 0.8} if complete else None,
            "retention": {"steps": [0, 2, 4], "share": share, "n": [[0, 2, 2]] * 4}}


def series_of(run, label="run"):
    return panels.recorded_series(stream_report(run, label))


def test_recorded_series_derives_the_curves():
    s = series_of(synthetic_run())
    xs, ys, lo, hi = s[("run", "dW")]
    assert xs == [0, 10, 20, 30, 40] and ys == pytest.approx([0, 5, 10, 15, 20])   # √(3² + 4²) per step
    xs, ys, lo, hi = s[("run", "capability_agreement")]
    assert xs == [0, 20, 40] and ys == pytest.approx([1.0, 0.7, 0.4])              # mean of the two tasks
    assert s[("run", "capability_margin")][1] == pytest.approx([2.0, -1.0, -4.0])
    xs, ys, lo, hi = s[("run", "efficacy")]
    assert xs == [20, 40] and ys == [0.9, 0.8] and lo == pytest.approx([0.8, 0.7]) and hi == pytest.approx([0.95, 0.85])
    assert s[("run", "ppl")][:2] == ([0, 20, 40], [10.0, 12.0, 14.0])


def test_recorded_figure_cuts_at_the_scrubbed_point():
    runs = {"A": synthetic_run(), "B": synthetic_run("alphaedit", shift=1.0)}
    s = panels.recorded_series(Report.combine(*(stream_report(r, l) for l, r in runs.items())))
    full = panels.recorded_figure(s, list(runs))
    cut = panels.recorded_figure(s, list(runs), upto=20, x_max=40)
    assert len(full.data) == len(cut.data) == 2 * len(panels.RECORDED)   # empty traces stay: in-place refresh
    assert all(max(t.x, default=0) <= 20 for t in cut.data)
    eff = [t for t in cut.data if t.error_y.array is not None]
    assert [list(t.x) for t in eff] == [[20], [20]] and eff[0].error_y.array == pytest.approx([0.05])
    assert cut.layout.shapes[0].x0 == 20 and list(cut.layout.xaxis.range) == pytest.approx([-0.8, 41.2])
    assert sum(t.showlegend is not False for t in cut.data) == 2                # one legend entry per run
    only_a = panels.recorded_figure(s, ["A"], upto=20)
    assert {t.legendgroup for t in only_a.data} == {"A"}


def test_retention_figure_per_editor_and_at_a_checkpoint():
    runs = {"A": synthetic_run(), "B": synthetic_run("alphaedit")}
    runs["B"]["retention"] = None
    fig = panels.retention_figure(runs)
    (hm,) = fig.data
    assert hm.type == "heatmap" and list(hm.x) == ["20", "40"]              # the checkpoint before any edit left out
    assert [list(r) for r in hm.z] == [[1.0, 0.5], [1.0, 0.75], [None, 1.0], [None, 1.0]]
    assert list(hm.y) == ["batch 1", "batch 2", "batch 3", "batch 4"]
    notes = [a.text for a in fig.layout.annotations]
    assert "A" in notes and "B" in notes and "no retention recorded" in notes
    cut = panels.retention_figure({"A": synthetic_run()}, upto=30)
    assert [list(r) for r in cut.data[0].z] == [[1.0, None], [1.0, None], [None, None], [None, None]]
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1


def test_scrubber_moves_over_synthetic_runs_without_recomputing(monkeypatch):
    runs = {"A": synthetic_run(), "B": synthetic_run("alphaedit", shift=1.0)}
    sc = Scrubber(runs)
    assert list(sc.slider.options) == [0, 10, 20, 30, 40] and sc.upto == 40
    import otelab.workbench.stream
    monkeypatch.setattr(otelab.workbench.stream, "stream_report", lambda *a, **k: pytest.fail("recomputed a report"))
    curves = sc.figures["curves"]
    trace_ids = [id(t) for t in curves.data]
    sc.slider.value = 30
    assert [id(t) for t in curves.data] == trace_ids                          # updated in place
    at = sc.values_at()
    assert at["A"]["checkpoint"] == 20 and at["A"]["ppl"] == 12.0 and at["B"]["ppl"] == 13.0
    assert at["A"]["dW"] == pytest.approx(15.0) and at["A"]["efficacy_lo"] == pytest.approx(0.8)
    assert "after 30 edits" in sc.table.value and "12.00" in sc.table.value
    sc.prev_button.click()
    sc.prev_button.click()
    assert sc.upto == 10 and "efficacy" not in sc.values_at()["A"]
    sc.next_button.click()
    assert sc.upto == 20
    sc.editors.value = ("B",)
    assert {t.legendgroup for t in curves.data} == {"B"} and [a.text for a in sc.figures["retention"].layout.annotations
                                                              if a.text == "B"]
    with pytest.raises(ValueError, match="no run labelled 'C'"):
        Scrubber(runs, labels=["C"])
    with pytest.raises(ValueError, match="no recorded runs"):
        Scrubber({})


@pytest.mark.skipif(not RECORDED.is_file(), reason="the recorded 2,000-edit run is not in experiments/results")
def test_scrubber_on_the_recorded_run_shows_its_numbers():
    runs = load_runs(RESULTS)
    label = next(l for l, r in runs.items() if r["file"] == RECORDED.name)
    run = runs[label]
    sc = Scrubber({label: run})
    bs = run["stream"]["batch_size"]
    assert list(sc.slider.options) == sorted({0} | {s["edits"] for s in run["steps"]})
    ck = run["checkpoints"][2]
    sc.slider.value = ck["edits"] + bs                                       # between two checkpoints
    at = sc.values_at()[label]
    assert at["checkpoint"] == ck["edits"] and at["ppl"] == ck["lm"]["ppl"]
    assert at["top1_agreement"] == ck["lm"]["top1_agreement"]
    assert at["capability_agreement"] == pytest.approx(ck["capability_mean"]["agreement"])
    assert at["capability_margin"] == pytest.approx(ck["capability_mean"]["margin"])
    assert at["efficacy"] == ck["edit_sample"]["efficacy"]
    assert [at["efficacy_lo"], at["efficacy_hi"]] == ck["edit_sample"]["efficacy_ci"]
    step = next(s for s in run["steps"] if s["edits"] == ck["edits"] + bs)
    assert at["dW"] == pytest.approx(math.sqrt(sum(v ** 2 for v in step["dW"].values())))
    hm = sc.figures["retention"].data[0]
    c = run["retention"]["steps"].index(ck["step"])
    assert [row[c - 1] for row in hm.z] == [row[c] for row in run["retention"]["share"]]
    assert all(row[c] is None for row in hm.z)                               # the next checkpoint is still ahead


def test_recorded_runs_prefers_the_first_folder_with_a_complete_run(tmp_path):
    paper, other = tmp_path / "paper2000", tmp_path / "results"
    paper.mkdir()
    other.mkdir()
    (paper / "memit-aligned.json").write_text(json.dumps(synthetic_run(complete=False)))
    (other / "a.json").write_text(json.dumps(synthetic_run()))
    (other / "b.json").write_text(json.dumps(synthetic_run("alphaedit", complete=False)))
    folder, runs = recorded_runs(paper, other)
    assert folder == other and [r["file"] for r in runs.values()] == ["a.json"]
    assert len(recorded_runs(paper, other, complete=False)[1]) == 2
    (paper / "alphaedit.json").write_text(json.dumps(synthetic_run("alphaedit")))
    assert recorded_runs(paper, other)[0] == paper
    assert recorded_runs(tmp_path / "missing") == (None, {})


def test_recorded_runs_default_is_found_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    from otelab.workbench.stream import RESULTS_ENV, results_dir

    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)   # a notebook copied elsewhere (the browser test's temporary root)
    assert results_dir() == Path(__file__).resolve().parents[1] / "experiments" / "results"
    folder, runs = recorded_runs()
    assert folder is not None and folder.is_relative_to(results_dir()) and runs
    monkeypatch.setenv(RESULTS_ENV, str(tmp_path / "none"))
    assert recorded_runs() == (None, {})
