"""Tests for otelab.paper.claims: the tables as data, reading a printed cell, claims resolving to printed rows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from otelab.paper import claims as paper
def test_number_reads_printed_cells():
    assert paper.number("99.85 ± 0.08") == 99.85
    assert paper.number("95.29 / 88.33") == 95.29 and paper.number("95.29 / 88.33", "OTE") == 88.33
    assert paper.number("54,062,861") == 54062861
    with pytest.raises(ValueError, match="no number"):
        paper.number("—")
    with pytest.raises(ValueError, match="which"):
        paper.number("1.0", "both")


def test_every_claim_row_resolves_to_one_printed_row():
    for c in paper.CLAIMS:
        for spec, fig in c.paper_numbers.items():
            for metric in fig.columns:
                v = fig.value(metric)
                assert v is not None and v == v, (c.key, spec, metric)
    # spot checks against the printed tables (percent -> fraction for CounterFact scores)
    assert paper.claim("tables2_5").paper_numbers["memit:naive"].value("efficacy_all") == pytest.approx(0.5735)
    assert paper.claim("table7").paper_numbers["memit:naive"].value("ppl") == 54062861
    t1 = paper.claim("table1").paper_numbers
    assert t1["alphaedit:memorize-nullspace"].value("glue_mean") < 0.01 < t1["alphaedit:memorize-full"].value(
        "glue_mean")


def test_beside_states_both_settings():
    rows = paper.beside("table7", {"memit:aligned": {"ppl": 75.0, "top1_agreement": 0.88}},
                        ours="SmolLM2-135M, 60 edits")
    assert {r["metric"] for r in rows} == {"ppl", "top1_agreement"}
    r = next(r for r in rows if r["metric"] == "ppl")
    assert r["otelab"] == 75.0 and r["paper"] == 9.70
    assert "SmolLM2" in r["otelab_setting"] and "LLaMA-3" in r["paper_setting"] and "2,000" in r["paper_setting"]
    with pytest.raises(ValueError, match="no claim"):
        paper.beside("table99", {}, ours="")


@pytest.mark.skipif(not (Path(os.environ.get("OTELAB_PAPER_DIR", "/work/shared/paper")) / "tables.json").exists(),
                    reason="the transcription of the paper's tables is not on this machine")
def test_tables_match_the_transcription():
    src = json.loads((Path(os.environ.get("OTELAB_PAPER_DIR", "/work/shared/paper")) / "tables.json").read_text())
    assert set(src) == set(paper.TABLES)
    for name, t in src.items():
        assert tuple(t["columns"]) == paper.TABLES[name]["columns"]
        assert [tuple(r[c] for c in t["columns"]) for r in t["rows"]] == list(paper.TABLES[name]["rows"])
