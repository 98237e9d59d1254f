"""Protocol verdicts: sentences read off the recorded numbers (no claim is written in advance)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from otelab.paper import claims as paper
from otelab.paper.runs import in_progress, one_time, protocol_lambda, run_spec, setting
from otelab.paper.scores import PAPER_MODEL, SCORES, claim_keys, final_scores, lambda_sweep

# What counts as a difference where no interval is recorded: PPL ratio, top-1 / capability agreement.
PPL_RATIO, AGREEMENT_DIFF = 1.10, 0.05


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
    parts.append(f"PPL {short_number(a['ppl'])} vs {short_number(b['ppl'])}"
                 + (f" (unedited {short_number(ppl0)})" if ppl0 else "") + f": {word}")
    for k, text in (("top1_agreement", "top-1 agreement"), ("capability_agreement", "capability agreement")):
        if a[k] is None or b[k] is None or any(map(math.isnan, (a[k], b[k]))):
            continue
        d = a[k] - b[k]
        word = (f"{name_a} higher" if d > AGREEMENT_DIFF else f"{name_a} lower" if d < -AGREEMENT_DIFF else
                f"within {AGREEMENT_DIFF} of each other")
        parts.append(f"{text} {a[k]:.3f} vs {b[k]:.3f}: {word}")
    return "; ".join(parts)


def short_number(v: float) -> str:
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
        key = "tables2_5" if "table6" not in claim_keys(run) else "table6"
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
