"""The demo's HTML report: the summary tables, the verification, every panel per pair, the paper beside otelab."""
from __future__ import annotations

import copy
from typing import Sequence

from otelab.demo.findings import pair_sentence

__all__ = ["PAIR_SHORT", "SUMMARY_TABLES", "pair_heading", "summary_html", "build_sections", "pair_sections",
           "paper_beside"]

# the report's headings and contents name a pair by these; the full title goes in the section text
PAIR_SHORT = {
    ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"): "Table 1, Eq. 4 vs Eq. 3",
    ("memit:aligned", "memit:naive"): "Tables 2/5, MEMIT",
    ("alphaedit:aligned", "alphaedit:naive"): "Tables 2/5, AlphaEdit",
    ("alphaedit:aligned", "alphaedit:memorize-nullspace"): "Tables 2/5, AlphaEdit vs Eq. 3",
    ("prune:aligned", "prune:no-ec"): "Table 5, PRUNE",
    ("rect:aligned", "rect:no-ec"): "Table 5, RECT",
}
# the report's summary as two tables of short headers (one of 14 columns ran past a 1440 px window):
# (table title, [(summary key, column header, what the column is)])
SUMMARY_TABLES = (
    ("The edits", [("efficacy_all", "efficacy", "edit prompts prefer the new object, all edits so far"),
                   ("paraphrase_all", "paraphrase", "the same on paraphrases of the edit prompts"),
                   ("efficacy_latest", "latest batch", "efficacy on the last batch only"),
                   ("specificity", "specificity", "neighbourhood prompts still prefer the true object"),
                   ("specificity_retained", "spec. kept", "neighbourhood prompts keep the unedited model's choice"),
                   ("neighbourhood_kl", "neighb. KL", "KL to the unedited model on neighbourhood prompts")]),
    ("The rest of the model", [("ppl", "perplexity", "on held-out texts"),
                               ("top1_agreement", "top-1 agree", "next-token agreement with the unedited model"),
                               ("latent_drift_unrelated", "latent drift",
                                "1 − cos of unrelated subjects' hidden states"),
                               ("glue_mean", "probes", "mean probe accuracy"),
                               ("delta_norm", "‖W − W0‖", "Σ‖W − W0‖_F over the edited layers"),
                               ("edit_s_per_step", "s / step", "wall-clock seconds per edit step")]),
)


def _subtitle(settings: dict) -> str:
    src = "fact-bank" if settings["data"] == "factbank" else "CounterFact"
    return (f"{settings['model_resolved']} (layers {settings['layers']}), {settings['n_records']} {src} edits "
            f"in {settings['n_steps']} batches of {settings['batch_size']}, C0 from {settings['cov_tokens']:,} tokens")


def pair_heading(pair: tuple, index: int) -> str:
    """The short name a pair's sections carry in the report's headings and contents.

    Arguments:
        pair: ``(aligned spec, misaligned spec)``.
        index: the pair's place in the run (1-based), the name of a pair without a short name.
    Returns:
        At most about 30 characters (``"Table 1, Eq. 4 vs Eq. 3"``, ``"Pair 3"``).
    """
    return PAIR_SHORT.get(tuple(pair), f"Pair {index}")


def summary_html(summary: Sequence[dict], settings: dict) -> str:
    """The final metrics of every run as the tables of :data:`SUMMARY_TABLES`, each with a key to its columns.

    Arguments:
        summary: ``metrics["summary"]``, one row per run.
        settings: ``metrics["settings"]`` (what the scores were measured on).
    Returns:
        HTML: per table a subheading, the table (run label plus at most six short columns) and a key.
    """
    import html as _html

    from otelab.views.html_report import table_html

    on = {"specificity": f"{settings['n_neigh']} neighbourhood prompt(s) per edit",
          "ppl": f"{settings['n_texts']} held-out texts of {settings['max_len']} tokens",
          "glue_mean": f"{', '.join(settings['glue_tasks']) or 'no'} probes, {settings['glue_n']} items each"}
    out = []
    for title, cols in SUMMARY_TABLES:
        rows = [{"run": r["run"], **{head: r.get(key) for key, head, _ in cols}} for r in summary]
        key = "; ".join(f"<b>{_html.escape(head)}</b>: {_html.escape(what)}"
                        + (f" ({_html.escape(on[k])})" if k in on else "") for k, head, what in cols)
        out.append(f"<h3>{_html.escape(title)}</h3>{table_html(rows)}<p class='caption'>{key}.</p>")
    return "\n".join(out)


def build_sections(metrics: dict, results: dict, projection=None) -> list[tuple]:
    """The report's sections: summary, verification, then per pair every panel of :data:`otelab.views.panels.PANELS`.

    Arguments:
        metrics: what :func:`run_demo` writes to metrics.json.
        results: ``{spec: RunResult}``.
        projection: the UMAP of subject states (:class:`otelab.workbench.bench.LatentProjection`) or None.
    Returns:
        ``(kind, title, content, caption)`` tuples for :func:`otelab.views.html_report.render`; titles are
        short (they make the contents), the detail is in the captions.
    """
    import html as _html

    from otelab.views import panels

    s = metrics["settings"]
    secs: list[tuple] = []
    intro = ("<p>Every edit batch is applied by each editor in turn to the same unedited model; metrics compare "
             "the edited model with the unedited one. <b>Aligned</b> editors carry what the paper's OTE objective "
             "needs from step to step; <b>misaligned</b> ones drop it (the naive rule forgets earlier edits' keys; "
             "Eq. 3, mode memorize-nullspace, drops the pull-back term S C0 P that Eq. 4, mode memorize-full, "
             "keeps).</p><ul>"
             + "".join(f"<li>{_html.escape(p['findings'])}</li>" for p in metrics["pairs"]) + "</ul>")
    secs.append(("text", "What was run and what it shows", intro, ""))
    secs.append(("text", "Summary: final metrics of every run", summary_html(metrics["summary"], s),
                 f"After {s['n_records']} edits ({s['n_steps']} steps of {s['batch_size']})."))
    v = metrics.get("verify")
    if v is not None:
        rows = [{"identity": r["name"], "paper": r["ref"], "max rel. residual": r["max_rel_residual"],
                 "passed": r["passed"]} for r in v["identities"]]
        secs.append(("table", "Theory: every identity, checked numerically", rows,
                     f"Largest relative residual over random problems and steps; passes below {v['tolerance']:g}."))
        neg = [{"rule": r["name"], "paper": r["ref"],
                **{f"t={t}": d for t, d in zip(r["steps"], r["ote_distance"])}} for r in v["negatives"]]
        secs.append(("table", "Theory: rules expected to leave the OTE path", neg,
                     "Distance from the OTE path ‖W_t − W_OTE,t‖/‖W_OTE,t − W0‖ at a few steps."))
        if v.get("toy_collapse"):
            secs.append(("figure", "Theory: the toy collapse (Eq. 3 vs Eq. 4)", panels.toy_figure(v["toy_collapse"]),
                         "The synthetic OLS world of notebook 01."))
    for i, p in enumerate(metrics["pairs"], start=1):
        secs += pair_sections(p, i, results, projection)
    rows, ours = paper_beside(metrics)
    if rows:
        secs.append(("table", "The paper beside otelab", rows,
                     f"otelab: {ours}; the paper's figure from the table named in each row, at the paper's own "
                     "model and scale (otelab.paper.claims). CounterFact scores as fractions."))
    timing_rows = [{"phase": k, "seconds": v} for k, v in metrics["timings"].items()]
    secs.append(("table", "Timings", timing_rows, "Wall-clock seconds on this machine."))
    return secs


def pair_sections(p: dict, index: int, results: dict, projection=None) -> list[tuple]:
    """One pair's figures: every panel of :data:`otelab.views.panels.PANELS`, the two runs overlaid.

    Arguments:
        p: one entry of ``metrics["pairs"]``.
        index: the pair's place in the run (1-based).
        results: ``{spec: RunResult}``.
        projection: the UMAP of subject states, or None (its ``after`` is cut to the pair's runs).
    Returns:
        ``("figure", "<pair>: <panel title>", figure, caption)`` tuples.
    """
    import html as _html

    from otelab.eval.report import Report
    from otelab.views import panels

    la, lb = results[p["aligned"]].label, results[p["misaligned"]].label
    rep = Report.combine(results[p["aligned"]].report, results[p["misaligned"]].report)
    proj = None
    if projection is not None:
        proj = copy.copy(projection)
        proj.after = {k: x for k, x in projection.after.items() if k in (la, lb)}
    short = pair_heading((p["aligned"], p["misaligned"]), index)
    styles = panels.style_heading([la, lb])   # the panels' own mapping: A solid, B dashed
    lines = _html.escape(f"{p['title']}. {styles[0].upper()}{styles[1:]}.")
    secs = []
    for n, panel in enumerate(panels.PANELS):
        # the pair's first panel carries its numbers; the others say what they show
        caption = f"<b>{lines}</b> " + _html.escape(pair_sentence(p)) if n == 0 else (
            f"{lines} {panel.caption}" if panel.caption else lines)
        if "projection" in panel.needs and proj is None:
            caption += " (UMAP not drawn in this run.)"
        secs.append(("figure", f"{short}: {panel.title}",
                     panels.build(panel, rep, projection=proj, order=[la, lb], umap_note="UMAP not drawn in this run"),
                     caption))
    return secs


def paper_beside(metrics: dict) -> tuple[list[dict], str]:
    """otelab's final numbers next to the paper's printed ones, for every claim a run of this demo tests.

    Arguments:
        metrics: what :func:`run_demo` returns (``settings``, ``summary``).
    Returns:
        ``(rows, ours)``: one row per (claim, run, metric) with ``otelab``, ``paper`` and the paper's
        setting; ``ours`` names otelab's model and scale.
    """
    from otelab.paper import claims as paper
    s = metrics["settings"]
    final = {r["spec"]: r for r in metrics["summary"]}
    ours = (f"{s.get('model_resolved') or s.get('model')}, {s['n_records']} {s['data']} edits "
            f"in {s['n_steps']} steps of {s['batch_size']}")
    rows = []
    for c in paper.CLAIMS:
        for r in paper.beside(c.key, final, ours=ours, names={sp: final[sp]["run"] for sp in final}):
            rows.append({"claim": c.where, "run": r["run"], "metric": r["metric"], "otelab": r["otelab"],
                         "paper": r["paper"], "paper setting": r["paper_setting"]})
    return rows, ours
