"""One measurement, one vocabulary: every metric name otelab writes resolves in otelab.eval.measure.METRICS."""
from __future__ import annotations

import math
import re

import pytest
import torch

from otelab.data.loaders import load_factbank, load_probes
from otelab.demo import findings
from otelab.eval.baseline import Baseline
from otelab.eval.edit_scores import edit_scores
from otelab.eval.measure import METRICS, PARTS, edit_metrics, measure, metric
from otelab.views.panels import PANELS
from otelab.workbench.bench import METRICS as WORKBENCH_METRICS
from otelab.workbench.bench import Workbench, WorkbenchData

TEXTS = ["The cat sat on the mat and looked at the door.", "Water is a liquid. The sun is a star in the sky."]


@pytest.fixture(scope="module")
def facts():
    return load_factbank(12)


def test_every_row_names_a_part_and_a_direction():
    for name, row in METRICS.items():
        assert row.part in set(PARTS) | {"stream"}, name
        assert row.better in (None, "higher", "lower"), name
        assert row.text, name


def test_names_resolve_with_their_families_and_unknown_names_are_refused():
    assert metric("glue/sst2/agreement") is METRICS["glue/<task>/agreement"]
    assert metric("efficacy_latest").text.endswith("latest batch")
    assert metric("paraphrase_all").better == "higher"
    assert metric("edits/efficacy_top1").part == "edit"
    for bad in ("ppl_latest", "glue/sst2/vibes", "glue//acc", "edits/ppl", "efficacy_everything", "vibes"):
        with pytest.raises(KeyError, match=re.escape(repr(bad))):
            metric(bad)


def test_every_name_measure_writes_is_in_the_vocabulary(tiny_llama, facts):
    base = Baseline.compute(tiny_llama.model, tiny_llama.tokenizer, facts[:3], texts=TEXTS,
                            latent_layer=max(tiny_llama.layers) + 1, latent_records=facts[:4],
                            show_progress=False)
    out = measure(tiny_llama, records=facts[:3], baseline=base, which=tuple(PARTS),
                  glue_tasks={"sst2": load_probes("sst2", 3), "mrpc": load_probes("mrpc", 3)}, gen_tokens=4)
    parts = {metric(n).part for n in out}
    assert parts >= {"edit", "lm", "glue", "latent"}, parts


def test_the_workbench_split_is_the_one_edit_measurement(tiny_llama, facts):
    model, tok = tiny_llama.model, tiny_llama.tokenizer
    base = Baseline.compute(model, tok, facts[:4], show_progress=False)
    latest = [False, True, False, True]
    split = edit_metrics(model, tok, facts[:4], base, latest=latest)
    plain = measure(tiny_llama, records=facts[:4], baseline=base, which=("edit",))
    per = edit_scores(model, tok, facts[:4], baseline=base)["per_record"]
    assert split["efficacy_all"] == plain["efficacy"] and split["specificity"] == plain["specificity"]
    assert math.isclose(split["efficacy_latest"], (per[1]["efficacy"] + per[3]["efficacy"]) / 2)
    assert all(metric(n).part == "edit" for n in split)
    assert all(math.isnan(v) for v in edit_metrics(model, tok, [], base, latest=[]).values())
    with pytest.raises(ValueError, match="3 flags for 4 records"):
        edit_metrics(model, tok, facts[:4], base, latest=[True] * 3)


def test_every_name_a_workbench_step_writes_is_in_the_vocabulary(facts):
    from otelab.models.loading import tiny_model

    lm = tiny_model("llama")
    lm.preset = lm.preset.replace(v_steps=2)
    d_i = lm.adapter.get_W(lm.model, lm.layers[0]).shape[1]
    data = WorkbenchData(stream=facts[:4], glue={"sst2": load_probes("sst2", 3)}, texts=TEXTS,
                         latent_records=facts[:2] + facts[8:10], latent_stream_index=[0, 1, None, None])
    wb = Workbench(lm, data, cov={l: torch.eye(d_i) for l in lm.layers}, batch_size=2, eval_every=1,
                   projector=lambda b, a: (b[:, :2].numpy(), a[:, :2].numpy()))
    wb.step()
    written = set(wb.report().to_frame()["metric"])
    for name in written:
        metric(name)
    declared = {n for n in WORKBENCH_METRICS if "<task>" not in n}
    assert declared <= written, declared - written


def test_panels_and_the_demo_read_names_of_the_vocabulary():
    for p in PANELS:
        for name in p.metrics:
            metric(name)
    for name in findings.SUMMARY_METRICS + tuple(findings.METRIC_WORDS):
        metric(name)
    assert all(metric(m).better == "higher" for m in findings.HIGHER_BETTER)
    assert all(metric(m).better == "lower" for m in findings.LOWER_BETTER)
