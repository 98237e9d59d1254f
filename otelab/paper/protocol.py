"""The paper's 2,000-edit protocol as recorded on SmolLM2: tables, the paper beside them, curves, verdicts.

``experiments/paper_stream.py`` records one ``otelab-stream/1`` JSON per editor (2,000
CounterFact records, 20 steps of 100, checkpoints every 5 steps; :mod:`otelab.workbench.stream`). This
module turns whatever set of those files is present into what notebooks 07 and 08 and
``experiments/paper_tables.py`` show:

- :func:`protocol_runs`: the runs of a folder, plus single files, by :func:`otelab.workbench.stream.run_label`;
  :func:`editors` / :func:`sweep_runs` split them into the editors at the protocol's λ and the
  λ sweep of aligned MEMIT (:func:`protocol_lambda` says which λ the editors share).
- :func:`settings_table`: what each run recorded about the protocol (draw, steps, values, checkpoints).
- :func:`final_scores`: one row per complete run (all-record scores with bootstrap intervals,
  final PPL / top-1 agreement, general capability, ‖ΔW‖, editing time), the unedited model first.
- :func:`beside_paper`: those numbers next to the paper's printed ones (Tables 2/5, 3's OTE
  column, 6, 7 and 11, via :mod:`otelab.paper.claims`), the paper's model and scale stated on every row.
- :func:`lambda_sweep`: aligned MEMIT at every recorded λ.
- :func:`curves`: the checkpoints as a tidy frame for :func:`otelab.toy.plots.curves_figure`.
- :func:`verdicts`: sentences generated from the numbers (no claim is written in advance);
  :func:`markdown`: all of it as markdown for ``experiments/results/README.md``.

The paper's model is LLaMA-3 (8B) for Tables 2/5/6/7 (Table 3 also GPT-J, GPT-2 XL, Qwen2.5);
ours is SmolLM2-135M. The numbers are beside each other, never the same experiment.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from otelab.paper import claims as paper
from otelab.workbench.stream import load_runs, stream_report

METHOD_ORDER = ("memit", "alphaedit", "prune", "rect", "rlsedit")
MODE_ORDER = ("aligned", "no-ec", "naive")
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
# What counts as a difference where no interval is recorded: PPL ratio, top-1 / capability agreement.
PPL_RATIO, AGREEMENT_DIFF = 1.10, 0.05


# ----------------------------------------------------------------------------- runs


def setting(run: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A run's setting (``settings``, else ``session``), e.g. ``method``, ``mode``, ``cov_weight``."""
    return run.get("settings", {}).get(key, run.get("session", {}).get(key, default))


def one_time(run: Mapping[str, Any]) -> bool:
    """True for the one-time edit of the whole stream (a stream of one batch)."""
    s = run["stream"]
    return s["batch_size"] >= len(s["case_ids"])


def run_spec(run: Mapping[str, Any]) -> str:
    """The run as an :mod:`otelab.paper.claims` spec: ``"memit:aligned"``, ``"rect:no-ec"``, ``"memit:one-time"``."""
    return f"{setting(run, 'method')}:{'one-time' if one_time(run) else setting(run, 'mode')}"


def _order(run: Mapping[str, Any]) -> tuple:
    method, mode = setting(run, "method"), setting(run, "mode")
    kind = 4 if one_time(run) else MODE_ORDER.index(mode) if mode in MODE_ORDER else 3
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method), kind,
            str(mode), setting(run, "rect_keep") or 0, setting(run, "values") != "bank",
            setting(run, "cov_weight") or 0)


def protocol_runs(folder: str | Path | None = None, *files: str | Path) -> dict[str, dict[str, Any]]:
    """The recorded runs of ``folder`` and of single ``files``, by label, in editor order.

    Arguments:
        folder: a results folder (e.g. ``experiments/results/paper2000``); missing or None: none.
        files: more run files (e.g. the λ = 1,000 aligned MEMIT run recorded before the folder);
            a file whose label the folder already has is left out (the folder's run is kept).
    Returns:
        ``{label: run}`` (:func:`otelab.workbench.stream.load_runs`: each run has ``file`` and ``complete``),
        sorted by method (MEMIT, AlphaEdit, PRUNE, RECT, RLSEdit), then aligned, no-ec, naive,
        one-time, then λ.
    Raises:
        FileNotFoundError: a file in ``files`` does not exist (the folder may be missing: runs
            appear in it over time).
    """
    runs = dict(load_runs(folder)) if folder is not None and Path(folder).is_dir() else {}
    for f in map(Path, files):
        if not f.is_file():
            raise FileNotFoundError(f"no recorded run {f}")
        for label, run in load_runs(f.parent, f.name).items():
            runs.setdefault(label, run)
    return dict(sorted(runs.items(), key=lambda kv: _order(kv[1])))


def in_sweep(run: Mapping[str, Any]) -> bool:
    """True for a run of the λ sweep: sequential aligned MEMIT with banked values."""
    return (setting(run, "method") == "memit" and setting(run, "mode") == "aligned" and not one_time(run)
            and setting(run, "values", "bank") == "bank")


def protocol_lambda(runs: Mapping[str, Mapping[str, Any]]) -> Optional[float]:
    """The λ the editors outside the λ sweep were run with (the most common one), or None if there are none."""
    lams = Counter(setting(r, "cov_weight") for r in runs.values() if not in_sweep(r))
    lams.pop(None, None)
    return lams.most_common(1)[0][0] if lams else None


def editors(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The runs at the protocol's λ (:func:`protocol_lambda`); all runs when no λ is shared."""
    lam = protocol_lambda(runs)
    return {k: r for k, r in runs.items() if lam is None or setting(r, "cov_weight") == lam}


def sweep_runs(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The λ sweep's runs (:func:`in_sweep`), by increasing λ."""
    out = {k: r for k, r in runs.items() if in_sweep(r)}
    return dict(sorted(out.items(), key=lambda kv: setting(kv[1], "cov_weight") or 0))


def in_progress(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``"<label>: <edits> of <n> edits"`` for every run whose final evaluation is not in yet."""
    out = []
    for label, r in runs.items():
        if not r.get("complete", r.get("final") is not None):
            done = r["steps"][-1]["edits"] if r["steps"] else 0
            out.append(f"{label}: {done:,} of {len(r['stream']['case_ids']):,} edits")
    return out


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
        runs: ``{label: run}`` (:func:`protocol_runs`); incomplete runs are left out (see :func:`in_progress`).
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


def _claims(run: Mapping[str, Any]) -> tuple[str, ...]:
    """The paper's claims whose printed rows a run corresponds to.

    The paper's RECT in Tables 2/5, 3 and 7 is the seed code's (keeping 40 %); keeping 20 % is Table 6.
    """
    if setting(run, "method") == "rect" and setting(run, "rect_keep") in (None, 0.2):
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
        for key in _claims(run):
            fig = paper.claim(key).paper_numbers.get(spec)
            if fig is None:
                continue
            for metric in fig.columns:
                add(label, fig, metric, measured[metric])
        if spec.endswith(":aligned") and "table6" not in _claims(run):
            add(label, CAPABILITY["aligned"], "glue_mean", s["capability_acc"])
    return pd.DataFrame(rows, columns=["editor", "metric", "otelab", "paper", "paper table", "paper row"])


def paper_settings(beside) -> list[str]:
    """``"<table>: <the paper's model and scale>"`` for every table in a :func:`beside_paper` frame."""
    order = list(paper.TABLES)
    return [f"{t}: {paper.TABLE_SCALE[t]}" for t in sorted(set(beside["paper table"]), key=order.index)]


def lambda_sweep(runs: Mapping[str, Mapping[str, Any]]):
    """Aligned MEMIT at every recorded λ (complete runs of :func:`sweep_runs`).

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


# ----------------------------------------------------------------------------- verdicts


def _ci(s, k: str) -> str:
    return f"{s[k]:.3f} [{s[k + '_lo']:.3f}, {s[k + '_hi']:.3f}]"


def _compare_scores(a, b, k: str) -> str:
    """``"higher"`` / ``"lower"`` when the two bootstrap intervals are disjoint, else ``"not separated"``."""
    if a[k + "_lo"] > b[k + "_hi"]:
        return "higher"
    if a[k + "_hi"] < b[k + "_lo"]:
        return "lower"
    return "not separated"


def _pair_sentence(name_a: str, a, name_b: str, b, ppl0: Optional[float]) -> str:
    """``a`` against ``b`` on the scores (by their intervals), PPL (by ratio) and agreements (by difference)."""
    parts = []
    for k in SCORES:
        word = _compare_scores(a, b, k)
        parts.append(f"{k} {_ci(a, k)} vs {_ci(b, k)}: "
                     + (f"{name_a} {word}" if word != "not separated" else
                        "not separated (the 95 % intervals overlap)"))
    r = a["ppl"] / b["ppl"]
    word = (f"{name_a} lower" if r < 1 / PPL_RATIO else f"{name_a} higher" if r > PPL_RATIO else
            f"within {PPL_RATIO - 1:.0%} of each other")
    parts.append(f"PPL {_num(a['ppl'])} vs {_num(b['ppl'])}" + (f" (unedited {_num(ppl0)})" if ppl0 else "")
                 + f": {word}")
    for k, text in (("top1_agreement", "top-1 agreement"), ("capability_agreement", "capability agreement")):
        if a[k] is None or b[k] is None or any(map(math.isnan, (a[k], b[k]))):
            continue
        d = a[k] - b[k]
        word = (f"{name_a} higher" if d > AGREEMENT_DIFF else f"{name_a} lower" if d < -AGREEMENT_DIFF else
                f"within {AGREEMENT_DIFF} of each other")
        parts.append(f"{text} {a[k]:.3f} vs {b[k]:.3f}: {word}")
    return "; ".join(parts)


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"


def _partner(runs: Mapping[str, Mapping[str, Any]], run: Mapping[str, Any], **change) -> Optional[str]:
    """The label of the complete run that differs from ``run`` only in ``change`` (mode, or one_time)."""
    keys = ("method", "cov_weight", "values", "rect_keep")
    want = {"mode": setting(run, "mode"), "one_time": one_time(run)} | change
    for label, r in runs.items():
        if r.get("final") is None or r is run:
            continue
        if all(setting(r, k) == setting(run, k) for k in keys) and setting(r, "mode") == want["mode"] \
                and one_time(r) == want["one_time"]:
            return label
    return None


def verdicts(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sentences read off the numbers: each misaligned or ablated run against its aligned partner,
    the one-time edit against sequential editing, the λ sweep, and the runs still in progress.

    A score counts as higher or lower only when the two bootstrap 95 % intervals are disjoint;
    PPL only beyond a ratio of :data:`PPL_RATIO`; agreements only beyond :data:`AGREEMENT_DIFF`.
    Where the paper prints both rows (LLaMA-3), whether its direction shows here is said too.

    Returns:
        Markdown bullet texts (without the bullet), in editor order.
    """
    scores = final_scores(runs)
    ppl0 = scores.loc["unedited", "ppl"] if "unedited" in scores.index else None
    out = []
    for label, run in runs.items():
        if run.get("final") is None or one_time(run) or setting(run, "mode") == "aligned":
            continue
        other = _partner(runs, run, mode="aligned")
        if other is None:
            continue
        a, b = scores.loc[other], scores.loc[label]
        text = f"**{other} vs {label}**: " + _pair_sentence("aligned", a, setting(run, "mode"), b, ppl0)
        key = "tables2_5" if "table6" not in _claims(run) else "table6"
        figs = paper.claim(key).paper_numbers
        fa, fb = figs.get(run_spec(runs[other])), figs.get(run_spec(run))
        if fa is not None and fb is not None:
            pa, pb = fa.value("efficacy_all"), fb.value("efficacy_all")
            here = _compare_scores(a, b, "efficacy")
            same = None if here == "not separated" else (here == "higher") == (pa > pb)
            text += (f". The paper ({fa.table}, {PAPER_MODEL}) prints efficacy {pa:.3f} vs {pb:.3f}: "
                     + ("the same direction shows here." if same else "the opposite direction shows here."
                        if same is False else "here the two are not separated."))
        out.append(text)
    for label, run in runs.items():
        if run.get("final") is None or not one_time(run):
            continue
        other = _partner(runs, run, mode=setting(run, "mode"), one_time=False)
        if other is not None:
            out.append(f"**{other} vs {label}**: "
                       + _pair_sentence("sequential", scores.loc[other], "one-time", scores.loc[label], ppl0))
    sweep = lambda_sweep(runs)
    if len(sweep) >= 2:
        lo, hi = sweep.iloc[0], sweep.iloc[-1]
        lam = protocol_lambda(runs)
        out.append(f"**λ sweep of aligned MEMIT** (λ = {', '.join(f'{v:g}' for v in sweep.index)}), the smallest "
                   f"λ = {sweep.index[0]:g} against the largest {sweep.index[-1]:g}: "
                   + _pair_sentence(f"λ = {sweep.index[0]:g}", lo, f"λ = {sweep.index[-1]:g}", hi, ppl0)
                   + (f". The other editors ran at λ = {lam:g}." if lam is not None else "."))
    pending = in_progress(runs)
    if pending:
        out.append("Not complete yet (left out of the tables): " + "; ".join(pending) + ".")
    return out


# ----------------------------------------------------------------------------- markdown


def _cell(v: Any, digits: int = 3) -> str:
    if hasattr(v, "item"):   # numpy scalars (a mixed row of iterrows)
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "✓" if v else ""
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return _num(v) if abs(v) >= 10 else f"{round(v, digits) + 0.0:.{digits}f}"   # + 0.0: no "-0.000"
    return str(v)


def md_table(df, index: str = "") -> str:
    """A ``pandas.DataFrame`` as a markdown table (numbers rounded for reading, None/NaN as "–")."""
    import pandas as pd

    heads = [index or (df.index.name or "")] + [str(c) for c in df.columns]
    align = [":---"] + ["---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns]
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join(align) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([_cell(idx)] + [_cell(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def readable(df):
    """:func:`final_scores` or :func:`lambda_sweep` with the scores as ``mean [lo, hi]`` and short column names."""
    out = df.copy()
    for k in SCORES:
        if k in out:
            out[k] = [("–" if v != v else f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
                      for v, lo, hi in zip(out[k], out[k + "_lo"], out[k + "_hi"])]
            out = out.drop(columns=[k + "_lo", k + "_hi"])
    names = {"top1_agreement": "top-1", "capability_acc": "cap. acc", "capability_agreement": "cap. agreement",
             "capability_margin": "cap. margin", "drift_unrelated": "unrelated drift", "dW_sum": "Σ‖ΔW‖",
             "edit_seconds": "edit s", "ppl": "PPL"}
    return out.drop(columns=[c for c in ("method", "mode") if c in out]).rename(columns=names)


def markdown(runs: Mapping[str, Mapping[str, Any]], title: str = "The paper's protocol on SmolLM2") -> str:
    """The final scores, the paper beside them, the λ sweep and the verdicts, as markdown.

    Arguments:
        runs: ``{label: run}`` (:func:`protocol_runs`).
        title: the section heading.
    Returns:
        Markdown text (headings level 3 and 4), generated from the runs alone.
    """
    ed = editors(runs)
    lam = protocol_lambda(runs)
    out = [f"### {title}", "",
           f"otelab: {OURS}. The paper: {PAPER_MODEL} (8B) unless a row says otherwise. "
           "Scores over every edited record with their bootstrap 95 % intervals; PPL, top-1 agreement, "
           "capability and drift on the final model.", ""]
    fs = final_scores(ed)
    out += [f"#### Final scores{f' (λ = {lam:g})' if lam is not None else ''}", "",
            md_table(readable(fs), "editor") if len(fs) else "(no complete run yet)", ""]
    bp = beside_paper(ed)
    if len(bp):
        out += ["#### Beside the paper", "", "The paper's settings: " + "; ".join(paper_settings(bp)) + ".", "",
                md_table(bp.set_index("editor"), "editor"), ""]
    sw = lambda_sweep(runs)
    if len(sw):
        out += ["#### λ sweep of aligned MEMIT", "", md_table(readable(sw).drop(columns=["editor", "edits"]), "λ"), ""]
    v = verdicts(runs)
    if v:
        out += ["#### What the numbers say", ""] + [f"- {t}" for t in v] + [""]
    return "\n".join(out)
