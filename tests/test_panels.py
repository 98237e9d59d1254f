"""Panels (otelab.views.panels): pure ``Report -> go.Figure`` builders; traces per run × metric, styles, keys."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from otelab.eval.report import Report
from otelab.views import panels

EDIT = ("efficacy_all", "paraphrase_all", "efficacy_latest", "paraphrase_latest", "specificity")


def _runs(labels=("aligned", "naive"), steps=(0, 1, 2)) -> Report:
    """Every panel's metrics for each run; the runs differ so their traces can be told apart."""
    reps = []
    for r, label in enumerate(labels):
        rep = Report(label)
        for s in steps:
            rep.add(s, {m: 1.0 - 0.1 * s * (r + 1) for m in EDIT})
            rep.add(s, {"glue/sst2/acc": 0.8, "glue/sst2/agreement": 1.0 - 0.05 * s, "glue/sst2/margin": 2.0 - s,
                        "glue/mmlu/acc": 0.3, "ppl": 14.0 + s * (r + 1), "ppl_unedited": 14.0,
                        "top1_agreement": 1.0 - 0.02 * s, "latent_drift_edited": 0.1 * s,
                        "latent_drift_unrelated": 0.01 * s})
        reps.append(rep)
    return Report.combine(*reps) if len(reps) > 1 else reps[0]


def _names(fig):
    return [t.name for t in fig.data]


@pytest.mark.parametrize("labels", [("aligned",), ("aligned", "naive"), ("a", "b", "c")])
def test_edit_panel_has_one_trace_per_run_and_metric(labels):
    fig = panels.edit_metrics_figure(_runs(labels))
    assert isinstance(fig, go.Figure) and len(fig.data) == len(labels) * len(EDIT)
    texts = [text for _, text, _ in panels.EDIT_METRICS]
    expect = texts if len(labels) == 1 else [f"{t} · {l}" for l in labels for t in texts]
    assert _names(fig) == expect
    for t in fig.data:
        assert list(t.customdata) == [0, 1, 2] and t.mode == "lines+markers"


def test_second_run_is_dashed_and_offset():
    fig = panels.edit_metrics_figure(_runs())
    a = next(t for t in fig.data if t.name == "specificity · aligned")
    b = next(t for t in fig.data if t.name == "specificity · naive")
    assert (a.line.dash, b.line.dash) == ("solid", "dash") and a.line.color == b.line.color
    assert list(a.x) == [0, 1, 2] and list(b.x) == pytest.approx([s + panels.OFFSET for s in (0, 1, 2)])
    # the order argument decides who is session A, never the name
    flipped = panels.edit_metrics_figure(_runs(), order=["naive", "aligned"])
    assert next(t for t in flipped.data if t.name == "specificity · naive").line.dash == "solid"
    with pytest.raises(ValueError, match="does not hold"):
        panels.edit_metrics_figure(_runs(), order=["rls"])


def test_keys_name_the_sessions():
    assert panels.session_key(["aligned", "naive"]).startswith("—— A: aligned")
    assert "- - B: naive (markers +0.12 step)" in panels.session_key(["aligned", "naive"])
    assert panels.session_key([None]) == ""
    assert panels.style_heading(["x", "y"]) == "solid: x, dashed: y"
    fig = panels.edit_metrics_figure(_runs())
    assert any("A: aligned" in a.text for a in fig.layout.annotations)


def test_empty_report_gives_a_note_not_an_error():
    for build in (panels.edit_metrics_figure, panels.capability_figure, panels.lm_figure):
        fig = build(Report("x"))
        assert not fig.data and any("no " in a.text for a in fig.layout.annotations)


def test_capability_panel_accuracy_agreement_and_chance_lines():
    fig = panels.capability_figure(_runs(("aligned",)))
    acc = [t for t in fig.data if t.xaxis == "x"]
    agree = [t for t in fig.data if t.xaxis == "x2"]
    assert sorted(t.name for t in acc) == ["mmlu", "sst2"]
    assert [t.name for t in agree] == ["sst2 agreement"]                     # only sst2 has an agreement row
    assert [list(c) for c in agree[0].customdata] == [[0, 2.0], [1, 1.0], [2, 0.0]]   # the margin on hover
    chance = sorted(s.y0 for s in fig.layout.shapes)
    assert chance == [0.25, 0.5]                                               # MMLU: 4 options, sst2: 2 labels
    assert not panels.capability_figure(_runs(), stat="f1").data             # tasks come from the stat's rows


def test_lm_panel_two_plots_and_the_unedited_level():
    fig = panels.lm_figure(_runs())
    assert sorted(_names(fig)) == ["ppl · aligned", "ppl · naive", "top1_agreement · aligned",
                                   "top1_agreement · naive"]
    assert {t.xaxis for t in fig.data if t.name.startswith("ppl")} == {"x"}
    assert {t.xaxis for t in fig.data if t.name.startswith("top1")} == {"x2"}
    assert 14.0 in [s.y0 for s in fig.layout.shapes]                          # the unedited perplexity
    lo, hi = fig.layout.yaxis.range
    assert lo < 14.0 * (1 - panels.PPL_SPAN) and hi > 14.0 + 2 * 2            # at least ±5 %, and the data


def test_latent_panel_scatter_and_drift():
    proj = SimpleNamespace(step=2, before=np.zeros((3, 2)), after={"aligned": np.ones((3, 2)),
                                                                    "naive": 2 * np.ones((3, 2))},
                           edited=[True, False, False], names=["a", "b", "c"])
    fig = panels.latent_figure(_runs(), proj)
    scatter = [t for t in fig.data if t.xaxis == "x"]
    drift = [t for t in fig.data if t.xaxis == "x2"]
    assert len(scatter) == 2 * 3                                              # (edited, unrelated) × (before + 2 runs)
    assert sum(len(t.x) for t in scatter) == 3 * 3
    assert len(drift) == 2 * 2                                                # run × (edited, unrelated)


def test_all_panels_and_widgets():
    figs = panels.all_panels(_runs())
    assert list(figs) == ["edit", "capability", "lm", "latent"]
    assert all(isinstance(f, go.Figure) and not isinstance(f, go.FigureWidget) for f in figs.values())
    assert isinstance(panels.lm_figure(_runs(), widget=True), go.FigureWidget)


def test_builders_do_not_change_the_report():
    rep = _runs()
    before = rep.to_json()
    panels.all_panels(rep)
    assert rep.to_json() == before
