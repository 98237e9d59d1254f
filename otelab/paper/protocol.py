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
from typing import Any, Mapping

from otelab.paper.runs import (  # noqa: F401  (re-exported: notebooks 07/08 and tests read them from here)
    METHOD_ORDER, MODE_ORDER, editors, in_progress, in_sweep, one_time, protocol_lambda, protocol_runs, run_spec,
    setting, sweep_runs,
)
from otelab.paper.scores import (  # noqa: F401  (re-exported)
    CAPABILITY, CURVES, METRIC_NAMES, OURS, PAPER_MODEL, SCORES, beside_paper, curves, final_scores, lambda_sweep,
    paper_settings, settings_table, unedited_row,
)
from otelab.paper.verdicts import AGREEMENT_DIFF, PPL_RATIO, short_number, verdicts  # noqa: F401  (re-exported)


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
        return short_number(v) if abs(v) >= 10 else f"{round(v, digits) + 0.0:.{digits}f}"   # + 0.0: no "-0.000"
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
        runs: ``{label: run}`` (:func:`~otelab.paper.runs.protocol_runs`).
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
