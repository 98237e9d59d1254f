"""Protocol tables: the recorded runs' settings, final scores, the paper beside them, the λ sweep and curves."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from otelab import ote
from otelab.paper import claims as paper
from otelab.paper.runs import protocol_lambda, run_spec, setting, sweep_runs
from otelab.workbench.stream import stream_report

SCORES = ("efficacy", "paraphrase", "specificity")
# The paper's model for the rows of Tables 2/5, 6 and 7 (Table 7 also prints Qwen2.5; LLaMA-3 is the one of Tables 2/5).
PAPER_MODEL = "LLaMA-3"
OURS = "SmolLM2-135M, 2,000 CounterFact edits in 20 steps of 100"
# Table 11 (general capability, mean over 6 tasks, before and after 10,000 aligned edits): beside our capability accuracy.
CAPABILITY = {"unedited": paper.PaperFigure("Table 11", {"model": PAPER_MODEL, "setting": "base"}, {"glue_mean": "avg"}),
              "aligned": paper.PaperFigure("Table 11", {"model": PAPER_MODEL, "setting": "10K edits"},
                                           {"glue_mean": "avg"})}
# The curves of notebook 07: (metric, subplot title); capability_* are means over the tasks.
CURVES = (
    ("ppl", "perplexity on held-out text"),
    ("top1_agreement", "top-1 agreement with the unedited model"),
    ("capability_agreement", "capability: agreement with unedited answers"),
    ("capability_margin", "capability: margin of the unedited answer"),
    ("latent_drift_unrelated", "latent drift, unrelated subjects (1 − cos)"),
    ("latent_drift_edited", "latent drift, edited subjects (1 − cos)"),
)
# Display names of the metrics beside the paper's (the paper's column names in brackets).
METRIC_NAMES = {"efficacy_all": "efficacy (Eff.)", "paraphrase_all": "paraphrase (Gen.)",
                "specificity": "specificity (Spe.)", "ppl": "PPL", "top1_agreement": "top-1 agreement",
                "glue_mean": "capability accuracy (mean of 6 tasks)"}


# ----------------------------------------------------------------------------- tables


def settings_table(runs: Mapping[str, Mapping[str, Any]]):
    """What each run recorded about its protocol, one row per run (to see that the editors share it).

    Returns:
        A ``pandas.DataFrame`` indexed by label: ``file, edits`` (done / in the stream), ``batch``,
        ``seed``, ``λ``, ``values`` (and the prompts they were optimised on), ``checkpoint every``,
        ``sampled per batch`` (records scored at checkpoints),
        ``capability every`` (steps; "–": at every checkpoint), ``texts`` (held-out), ``tasks`` (items each).
    """
    import pandas as pd

    rows = []
    for label, r in runs.items():
        ev = r.get("evaluation", {})
        tasks = ev.get("tasks", {})
        done = r["steps"][-1]["edits"] if r["steps"] else 0
        rows.append({"run": label, "file": r.get("file"), "edits": f"{done:,} / {len(r['stream']['case_ids']):,}",
                     "batch": r["stream"]["batch_size"], "seed": setting(r, "seed"), "λ": setting(r, "cov_weight"),
                     "values": f"{setting(r, 'values')} ({setting(r, 'value_templates', 'context')} prompt)",
                     "checkpoint every": setting(r, "checkpoint_every"),
                     "sampled per batch": setting(r, "sample_per_batch"),
                     "capability every": ev.get("capability_every"), "texts": ev.get("texts"),
                     "tasks": f"{len(tasks)} × {max(tasks.values())}" if tasks else "none"})
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def _checkpoint_row(ck: Mapping[str, Any]) -> dict[str, Any]:
    """PPL, top-1 agreement, capability means and unrelated latent drift of one checkpoint."""
    lm, cap, lat = ck.get("lm", {}), ck.get("capability_mean", {}), ck.get("latent", {})
    return {"ppl": lm.get("ppl"), "top1_agreement": lm.get("top1_agreement"),
            "capability_acc": cap.get("acc"), "capability_agreement": cap.get("agreement"),
            "capability_margin": cap.get("margin"), "drift_unrelated": lat.get("cos_drift_unrelated")}


def unedited_row(runs: Mapping[str, Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """The unedited model's row (checkpoint 0 of the first run; every run of a protocol shares its references)."""
    for run in runs.values():
        if run["checkpoints"] and run["checkpoints"][0]["step"] == 0:
            row = {"editor": "unedited", "method": None, "mode": None, "λ": None, "edits": 0}
            row.update(_checkpoint_row(run["checkpoints"][0]))
            row["dW_sum"], row["edit_seconds"] = 0.0, 0.0
            return row
    return None


def final_scores(runs: Mapping[str, Mapping[str, Any]], unedited: bool = True):
    """One row per complete run: the final model's scores.

    Arguments:
        runs: ``{label: run}`` (:func:`~otelab.paper.runs.protocol_runs`); incomplete runs are left out (see
            :func:`~otelab.paper.runs.in_progress`).
        unedited: put the unedited model's row first (its PPL, top-1 agreement 1, capability).
    Returns:
        A ``pandas.DataFrame`` indexed by ``editor`` with ``method, mode, λ, edits``; ``efficacy,
        paraphrase, specificity`` over every edited record with ``_lo`` / ``_hi`` (the run's bootstrap
        95 % interval); the final checkpoint's ``ppl, top1_agreement, capability_acc,
        capability_agreement, capability_margin`` (means over the tasks) and ``drift_unrelated``;
        ``dW_sum`` (Σ over edited layers of ‖W − W0‖_F after the last step) and ``edit_seconds``
        (Σ over steps of the step's time plus the time to fetch its values; the one-off bank fill
        and the evaluation are not in it).
    """
    import pandas as pd

    rows = []
    first = unedited_row(runs) if unedited else None
    if first is not None and any(r.get("complete") for r in runs.values()):
        rows.append(first)
    for label, run in runs.items():
        f = run.get("final")
        if f is None:
            continue
        row = {"editor": label, "method": setting(run, "method"), "mode": run_spec(run).split(":")[1],
               "λ": setting(run, "cov_weight"), "edits": f["n"]}
        for k in SCORES:
            row[k] = f[k]
            row[k + "_lo"], row[k + "_hi"] = f[k + "_ci"]
        row.update(_checkpoint_row(run["checkpoints"][-1]))
        row["dW_sum"] = sum(run["steps"][-1]["dW"].values()) if run["steps"] else 0.0
        row["edit_seconds"] = sum(s["timings"].get("total", 0.0) + s["timings"].get("provider_values", 0.0)
                                  for s in run["steps"])
        rows.append(row)
    cols = ["editor", "method", "mode", "λ", "edits"] + [k + s for k in SCORES for s in ("", "_lo", "_hi")] + \
        ["ppl", "top1_agreement", "capability_acc", "capability_agreement", "capability_margin", "drift_unrelated",
         "dW_sum", "edit_seconds"]
    return pd.DataFrame(rows, columns=cols).set_index("editor")


def claim_keys(run: Mapping[str, Any]) -> tuple[str, ...]:
    """The paper's claims whose printed rows a run corresponds to.

    The paper's RECT in Tables 2/5, 3 and 7 is the seed code's (keeping 40 %); keeping 20 % is Table 6.
    """
    if setting(run, "method") == "rect" and setting(run, "rect_keep") in (None, ote.EDITORS["rect"].options["rect_keep"]):
        return ("table6",)
    return ("tables2_5", "table3", "table7")


def beside_paper(runs: Mapping[str, Mapping[str, Any]]):
    """Every complete run's final numbers next to the paper's printed ones.

    Arguments:
        runs: ``{label: run}``.
    Returns:
        A ``pandas.DataFrame`` with ``editor, metric, otelab, paper, paper table, paper row``
        (:func:`paper_settings` names each table's model and scale): CounterFact scores as
        fractions (the paper prints percent),
        Tables 2/5/6/7 on LLaMA-3 (8B), Table 3's OTE column for the one-time edits, Table 11's
        general capability (LLaMA-3, before and after 10,000 aligned edits) beside our mean
        capability accuracy before and after 2,000. Rows without a paper number are left out.
    """
    import pandas as pd

    scores = final_scores(runs)
    rows = []

    def add(editor, fig: paper.PaperFigure, metric, value):
        rows.append({"editor": editor, "metric": METRIC_NAMES.get(metric, metric), "otelab": value,
                     "paper": fig.value(metric), "paper table": fig.table,
                     "paper row": " / ".join(fig.row.values()) + (" (OTE column)" if fig.which == "OTE" else "")})

    if "unedited" in scores.index:
        add("unedited", CAPABILITY["unedited"], "glue_mean", scores.loc["unedited", "capability_acc"])
    for label, run in runs.items():
        if label not in scores.index:
            continue
        s = scores.loc[label]
        measured = {"efficacy_all": s["efficacy"], "paraphrase_all": s["paraphrase"],
                    "specificity": s["specificity"], "ppl": s["ppl"], "top1_agreement": s["top1_agreement"]}
        spec = run_spec(run)
        for key in claim_keys(run):
            fig = paper.claim(key).paper_numbers.get(spec)
            if fig is None:
                continue
            for metric in fig.columns:
                add(label, fig, metric, measured[metric])
        if spec.endswith(":aligned") and "table6" not in claim_keys(run):
            add(label, CAPABILITY["aligned"], "glue_mean", s["capability_acc"])
    return pd.DataFrame(rows, columns=["editor", "metric", "otelab", "paper", "paper table", "paper row"])


def paper_settings(beside) -> list[str]:
    """``"<table>: <the paper's model and scale>"`` for every table in a :func:`beside_paper` frame."""
    order = list(paper.TABLES)
    return [f"{t}: {paper.TABLE_SCALE[t]}" for t in sorted(set(beside["paper table"]), key=order.index)]


def lambda_sweep(runs: Mapping[str, Mapping[str, Any]]):
    """Aligned MEMIT at every recorded λ (complete runs of :func:`~otelab.paper.runs.sweep_runs`).

    Returns:
        A ``pandas.DataFrame`` indexed by ``λ`` with the :func:`final_scores` columns (efficacy,
        paraphrase, specificity with intervals, ppl, top1_agreement, capability, drift, dW_sum) and
        ``protocol`` (True at the λ the other editors were run with).
    """
    df = final_scores(sweep_runs(runs), unedited=False)
    lam = protocol_lambda(runs)
    df = df.reset_index().set_index("λ").sort_index()
    df["protocol"] = [lam is not None and v == lam for v in df.index]
    return df.drop(columns=["method", "mode"])


# ----------------------------------------------------------------------------- curves


def curves(runs: Mapping[str, Mapping[str, Any]]):
    """Every run's checkpoints as a tidy frame for :func:`otelab.toy.plots.curves_figure`.

    Arguments:
        runs: ``{label: run}`` (complete or not: a run in progress is drawn up to its last checkpoint).
    Returns:
        ``pandas.DataFrame`` with ``label, edits, metric, value`` for the metrics of :data:`CURVES`
        (from :func:`otelab.workbench.stream.stream_report`; ``capability_agreement`` / ``capability_margin``:
        the mean over the tasks of ``glue/<task>/agreement`` / ``margin``, at the checkpoints where
        every task was scored).
    """
    import pandas as pd

    parts = []
    for label, run in runs.items():
        df = stream_report(run, label).to_frame()
        direct = df[df["metric"].isin([m for m, _ in CURVES])]
        parts.append(direct)
        for stat in ("agreement", "margin"):
            g = df[df["metric"].str.startswith("glue/") & df["metric"].str.endswith("/" + stat)]
            if g.empty:
                continue
            n_tasks = g["metric"].nunique()
            per = g.groupby("step")["value"].agg(["mean", "count"]).reset_index()
            per = per[per["count"] == n_tasks]
            parts.append(pd.DataFrame({"label": label, "step": per["step"], "metric": f"capability_{stat}",
                                       "value": per["mean"]}))
    if not parts:
        return pd.DataFrame(columns=["label", "edits", "metric", "value"])
    out = pd.concat(parts, ignore_index=True).rename(columns={"step": "edits"})
    return out[["label", "edits", "metric", "value"]].sort_values(["label", "metric", "edits"], kind="stable")
