"""Report (otelab.eval.report): metrics per step, several labelled runs, tables and a JSON round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from otelab.eval.measure import measure as evaluate
from otelab.eval.report import Report


def _run(label="aligned"):
    rep = Report(label, meta={"method": "memit", "layers": [1, 2]})
    rep.add(0, efficacy_all=0.0, ppl=14.25)
    rep.add(10, {"efficacy_all": 0.95, "glue/sst2/acc": 0.81}, ppl=None)     # None: not measured
    return rep


def test_add_records_long_rows_and_reads_them_back():
    rep = _run()
    assert rep.steps == [0, 10] and rep.labels == ["aligned"]
    assert rep.metrics == ["efficacy_all", "ppl", "glue/sst2/acc"]              # first-added order
    assert rep.latest() == {"efficacy_all": 0.95, "glue/sst2/acc": 0.81, "ppl": pytest.approx(math.nan, nan_ok=True)}
    assert len(rep) == 5
    rep.add(10, efficacy_all=0.5)                                               # a later value replaces
    assert rep.latest()["efficacy_all"] == 0.5 and len(rep) == 5


def test_numpy_torch_and_bool_values_become_floats():
    rep = Report("x").add(1, a=np.float32(0.5), b=torch.tensor(2.0), c=True, d=3)
    assert rep.latest() == {"a": 0.5, "b": 2.0, "c": 1.0, "d": 3.0}
    assert all(type(v) is float for v in rep.latest().values())


@pytest.mark.parametrize("bad, match", [
    (dict(a="high"), "metric 'a': expected a number"),
    (dict(a=torch.ones(2)), "expected a single number"),
    ({"": 1.0}, "non-empty strings"),
])
def test_bad_values_are_refused_and_nothing_is_half_added(bad, match):
    rep = _run()
    before = rep.to_json()
    with pytest.raises(ValueError, match=match):
        rep.add(20, {"ok": 1.0, **bad})
    assert rep.to_json() == before


def test_steps_must_be_integers():
    assert Report().add(2.0, a=1).steps == [2]
    for bad in (1.5, "x", None):
        with pytest.raises(ValueError, match="step must be an integer"):
            Report().add(bad, a=1)


def test_json_round_trip_keeps_labels_meta_order_and_nan(tmp_path):
    rep = _run()
    text = rep.to_json(tmp_path / "r.json")
    assert json.loads(text)["format"] == "otelab-report/1"
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == text
    for back in (Report.from_json(text), Report.from_json(tmp_path / "r.json")):
        assert back.label == "aligned" and back.meta == rep.meta
        assert back.metrics == rep.metrics and back.steps == rep.steps
        assert back.to_json() == text
        assert math.isnan(back.latest()["ppl"])


def test_from_json_refuses_what_is_not_a_report():
    with pytest.raises(ValueError, match="not an otelab report"):
        Report.from_json('{"rows": []}')
    with pytest.raises(ValueError, match="row 0 is malformed"):
        Report.from_json('{"format": "otelab-report/1", "rows": [{"label": null, "step": 1}]}')


def test_combine_keeps_runs_apart():
    both = Report.combine(_run("aligned"), _run("naive").add(20, efficacy_all=0.1))
    assert both.labels == ["aligned", "naive"]
    assert both.latest("naive") == {"efficacy_all": 0.1} and both.latest("aligned")["efficacy_all"] == 0.95
    assert set(both.meta) == {"aligned", "naive"}
    wide = both.wide()
    assert ("efficacy_all", "naive") in wide.columns and wide.loc[20, ("efficacy_all", "naive")] == 0.1
    with pytest.raises(ValueError, match="distinct labels"):
        Report.combine(_run("a"), _run("a"))


def test_tables():
    rep = _run()
    df = rep.to_frame()
    assert list(df.columns) == ["label", "step", "metric", "value"] and len(df) == 5
    assert list(rep.wide().columns) == rep.metrics
    md = rep.to_markdown(digits=2)
    assert md.startswith("**aligned**") and "| 10 | 0.95 | — | 0.81 |" in md
    assert "| ppl | 14.25 | — |" in rep.to_markdown(digits=2, layout="metrics")
    assert Report().to_markdown() == "(empty report)"
    with pytest.raises(ValueError, match="layout"):
        rep.to_markdown(layout="cols")


def test_evaluate_refuses_unknown_parts(tiny_llama):
    with pytest.raises(ValueError, match="unknown evaluation part"):
        evaluate(tiny_llama, which=("edit", "vibes"))


def test_evaluate_perplexity_on_texts(tiny_llama):
    out = evaluate(tiny_llama, texts=["Alice lives in Paris.", "Bob plays chess on Sundays."], which=("lm",))
    assert set(out) == {"ppl"} and out["ppl"] > 1
    Report("x").add(0, out)                                                    # ready for Report.add
