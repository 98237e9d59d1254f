"""The table of panels: the workbench and the HTML report draw what :data:`otelab.views.panels.PANELS` lists.

Adding a panel is one builder and one row; these tests add a row and find it in both places.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from otelab.demo import run as demo
from otelab.eval.report import Report
from otelab.views import panels, style
from otelab.views.widgets import WorkbenchUI
from otelab.workbench.bench import METRICS, LatentProjection


def runs() -> list[Report]:
    """Two labelled runs with every metric the panels draw (B a little worse)."""
    out = []
    for label, worse in (("aligned", 0.0), ("naive", 0.1)):
        rep = Report(label)
        for s in range(3):
            rep.add(s, edits=2.0 * s, efficacy_all=0.5 * s - worse, paraphrase_all=0.4, efficacy_latest=0.9,
                    paraphrase_latest=0.8, specificity=0.8 - worse, ppl=20.0 + s, ppl_unedited=20.0,
                    top1_agreement=1 - 0.05 * s, latent_drift_edited=0.02 * s, latent_drift_unrelated=0.01 * s,
                    delta_norm=3.0 * s, **{"glue/sst2/acc": 0.5, "glue/sst2/agreement": 1 - 0.1 * s,
                                           "glue/sst2/margin": 2.0 - s})
        out.append(rep)
    return out


def two_runs() -> Report:
    return Report.combine(*runs())


def projection() -> LatentProjection:
    return LatentProjection(step=2, before=np.zeros((3, 2)), after={"aligned": np.ones((3, 2))},
                            edited=[True, False, False], names=["a", "b", "c"])


def same(a: go.Figure, b: go.Figure) -> bool:
    return json.loads(a.to_json()) == json.loads(b.to_json())


def test_build_calls_each_builder_with_the_inputs_it_needs():
    rep, proj, order = two_runs(), projection(), ["naive", "aligned"]
    direct = {"edit": panels.edit_metrics_figure(rep, order=order),
              "capability": panels.capability_figure(rep, order=order, flat=["sst2"]),
              "lm": panels.lm_figure(rep, order=order),
              "latent": panels.latent_figure(rep, proj, order=order),
              "delta": panels.delta_figure(rep)}
    assert [p.key for p in panels.PANELS] == list(direct)
    for p in panels.PANELS:
        assert same(panels.build(p, rep, order=order, projection=proj, flat=["sst2"]), direct[p.key]), p.key
    live = panels.build(panels.PANELS[0], rep, widget=True, order=order)
    assert isinstance(live, go.FigureWidget)


def test_all_panels_are_the_live_rows_in_order():
    rep, proj = two_runs(), projection()
    figs = panels.all_panels(rep, proj)
    assert list(figs) == [p.key for p in panels.PANELS if p.live] == ["edit", "capability", "lm", "latent"]
    assert same(figs["latent"], panels.latent_figure(rep, proj))


def test_live_panels_draw_metrics_the_workbench_writes():
    for p in panels.PANELS:
        if p.live:
            assert set(p.metrics) <= set(METRICS), (p.key, set(p.metrics) - set(METRICS))


def test_the_demo_figures_share_the_panels_style():
    toy = {"steps": [0, 1, 2], "nullspace_at_steps": [0.0, 0.5, 0.9], "full_at_steps": [0.0, 0.1, 0.1]}
    panel = panels.edit_metrics_figure(two_runs())
    for fig in (panels.delta_figure(two_runs()), panels.toy_figure(toy)):
        assert fig.layout.title.x == panel.layout.title.x and fig.layout.title.font == panel.layout.title.font
        assert fig.layout.template == panel.layout.template
        assert fig.layout.margin.l == 55 and fig.layout.xaxis.title.text == "step"
    assert [t.line.dash for t in panels.delta_figure(two_runs()).data] == list(style.DASHES[:2])


def _spark(report: Report, *, widget: bool = False, order=None):
    """A toy extra panel: efficacy of every run as bars at its last step."""
    labels = style.run_order(report, order)
    fig = go.Figure([go.Bar(x=labels, y=[report.latest(l).get("efficacy_all") for l in labels], name="last")])
    return style.finish(fig, widget)


@pytest.fixture
def extra_panel(monkeypatch):
    row = panels.Panel("spark", "last efficacy", _spark, ("order",), ("efficacy_all",), caption="Bars.")
    monkeypatch.setattr(panels, "PANELS", panels.PANELS + (row,))
    return row


def test_a_new_row_shows_in_the_workbench_panels(extra_panel):
    rep = two_runs()
    wb = SimpleNamespace(report=lambda: rep, tracks=[SimpleNamespace(label="naive"), SimpleNamespace(label="aligned")],
                         projection=None, flat_tasks=lambda: [], umap_note=lambda: "no UMAP")
    figs = WorkbenchUI._panels(SimpleNamespace(workbench=wb))
    assert list(figs) == ["edit", "capability", "lm", "latent", "spark"]
    assert list(figs["spark"].data[0].x) == ["naive", "aligned"]


def test_a_new_row_shows_in_the_html_report(extra_panel):
    a, b = runs()
    results = {"memit:aligned": demo.RunResult("memit:aligned", "aligned", a),
               "memit:naive": demo.RunResult("memit:naive", "naive", b)}
    v = demo._verdict(a.latest(), b.latest())
    pair = {"title": "MEMIT", "aligned": "memit:aligned", "misaligned": "memit:naive", "metrics": v,
            "findings": "f", "aligned_better": [], "misaligned_better": []}
    settings = {"n_records": 4, "n_steps": 2, "batch_size": 2, "n_neigh": 1, "n_texts": 2, "max_len": 32,
                "glue_tasks": ["sst2"], "glue_n": 4, "data": "factbank", "model": "tiny"}
    metrics = {"settings": settings, "summary": [], "pairs": [pair], "verify": None, "timings": {"total": 1.0}}
    secs = demo.build_sections(metrics, results)
    figures = [(title, fig, caption) for kind, title, fig, caption in secs if kind == "figure"]
    assert [t.split(": ", 1)[1] for t, _, _ in figures] == [p.title for p in panels.PANELS]
    title, fig, caption = figures[-1]
    assert title == "Tables 2/5, MEMIT: last efficacy" and caption.endswith("dashed: naive. Bars.")
    assert list(fig.data[0].x) == ["aligned", "naive"]
    latent = next(c for t, _, c in figures if t.endswith(": latent drift"))
    assert latent.endswith(" (UMAP not drawn in this run.)")

