"""What the demo's numbers say: which run of a pair is better per metric, and the findings in words.

Every sentence is made from the measured numbers only; differences within :data:`TIE_ABS`
(scores in [0, 1]) or :data:`TIE_REL` (relative, the others) count as ties.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from otelab.demo.config import run_label
from otelab.eval.measure import metric
from otelab.eval.report import Report

__all__ = ["PAIR_TITLES", "HIGHER_BETTER", "LOWER_BETTER", "TIE_ABS", "TIE_REL", "SUMMARY_METRICS", "METRIC_WORDS",
           "summarise", "latest_note", "pair_sentence", "pair_trajectory", "pair_findings"]

PAIR_TITLES = {
    ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"):
        "Table 1: memorize-the-latest, memorize-full = Eq. 4 as printed (keeps −S C0 P) vs "
        "memorize-nullspace = Eq. 3 (null-space shortcut)",
    ("memit:aligned", "memit:naive"): "Tables 2/5: MEMIT, OTE-aligned vs naive (repeated one-time edit)",
    ("alphaedit:aligned", "alphaedit:naive"): "Tables 2/5: AlphaEdit, OTE-aligned vs naive",
    ("alphaedit:aligned", "alphaedit:memorize-nullspace"):
        "Tables 2/5: AlphaEdit, OTE-aligned vs naive (memorize-nullspace: for AlphaEdit the same update as Eq. 3)",
    ("prune:aligned", "prune:no-ec"): "Table 5: PRUNE, with vs without Algorithm 1's error correction",
    ("rect:aligned", "rect:no-ec"): "Table 5: RECT, with vs without Algorithm 1's error correction",
}
# the metrics the summary gives a verdict on; which way is better comes from the metric table
_VERDICT = ("efficacy_all", "paraphrase_all", "specificity", "specificity_retained", "top1_agreement", "glue_mean",
            "ppl", "latent_drift_unrelated", "neighbourhood_kl")
HIGHER_BETTER = tuple(m for m in _VERDICT if metric(m).better == "higher")
LOWER_BETTER = tuple(m for m in _VERDICT if metric(m).better == "lower")
# differences within these count as ties: scores in [0, 1] (one edit of 50 is 0.02), else relative
TIE_ABS, TIE_REL = 0.02, 0.02
SUMMARY_METRICS = ("efficacy_all", "paraphrase_all", "efficacy_latest", "specificity", "specificity_retained",
                   "neighbourhood_kl", "ppl", "top1_agreement", "latent_drift_unrelated", "glue_mean", "delta_norm")
# how the findings name each compared metric
METRIC_WORDS = {"efficacy_all": "efficacy on all edits so far", "paraphrase_all": "paraphrase success on all edits",
                "specificity": "specificity (neighbourhood prompts still right)",
                "specificity_retained": "specificity retained", "neighbourhood_kl": "neighbourhood KL",
                "ppl": "held-out perplexity", "top1_agreement": "top-1 agreement with the unedited model",
                "latent_drift_unrelated": "latent drift of unrelated subjects", "glue_mean": "probe accuracy"}


def _verdict(a: dict, b: dict) -> dict:
    """Per summary metric, which of the two final rows is better: ``aligned``, ``misaligned`` or ``tie``.

    A difference counts only beyond :data:`TIE_ABS` for metrics in [0, 1] (HIGHER_BETTER)
    and beyond :data:`TIE_REL` of the larger value for the others.
    """
    out = {}
    for m in HIGHER_BETTER + LOWER_BETTER:
        x, y = a.get(m), b.get(m)
        if x is None or y is None or math.isnan(x) or math.isnan(y):
            continue
        sign = 1 if m in HIGHER_BETTER else -1
        d = sign * (x - y)
        tol = TIE_ABS if m in HIGHER_BETTER else TIE_REL * max(abs(x), abs(y))
        out[m] = {"aligned": x, "misaligned": y, "better": "aligned" if d > tol else "misaligned" if d < -tol else "tie"}
    return out


def _final(report, label) -> dict:
    """The last scored row of run ``label``."""
    return report.latest(label)


def summarise(results: dict, pairs: Sequence[tuple]) -> tuple[Report, list[dict], list[dict]]:
    """Every run's final metrics and every pair's verdict, at the end and at each checkpoint.

    Arguments:
        results: ``{spec: RunResult}`` (:func:`otelab.demo.streams.run_stream`).
        pairs: the ``(aligned, misaligned)`` specs compared.

    Returns:
        ``(combined report, summary rows, pairs)``: one summary row per run (:data:`SUMMARY_METRICS`
        and ``edit_s_per_step``); per pair its title, verdict per metric and ``trajectory``
        (``findings`` is added once the settings are known: :func:`pair_findings`).
    """
    combined = Report.combine(*(r.report for r in results.values()))
    summary, out = [], []
    for spec, r in results.items():
        fin = _final(combined, r.label)
        summary.append({"run": r.label, "spec": spec, **{m: fin.get(m) for m in SUMMARY_METRICS},
                        "edit_s_per_step": sum(r.step_seconds) / max(1, len(r.step_seconds))})
    for a, b in pairs:
        fa, fb = _final(combined, results[a].label), _final(combined, results[b].label)
        v = _verdict(fa, fb)
        out.append({"title": PAIR_TITLES.get((a, b), f"{run_label(a)} vs {run_label(b)}"),
                    "aligned": a, "misaligned": b, "metrics": v,
                    "aligned_better": [m for m, d in v.items() if d["better"] == "aligned"],
                    "misaligned_better": [m for m, d in v.items() if d["better"] == "misaligned"],
                    "trajectory": pair_trajectory(combined, results[a].label, results[b].label)})
    return combined, summary, out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def latest_note(p: dict) -> str:
    """What "misaligned better on earlier edits" means when the aligned run is a memorize-the-latest rule.

    Memorize-the-latest (Eq. 4, ``memorize-full``) asks each step to fit the latest batch and keep
    the preserved keys where the unedited model had them; earlier edits are not in its objective,
    so overwriting them is what it is meant to do, and its pull-back −S C0 P undoes part of them.
    Eq. 3 drops that term, so more of what earlier steps wrote stays in W, the same leftover that
    moves the model away from the unedited one. Without this sentence a reader takes a higher
    efficacy over all edits for Eq. 3 as a point against the paper's Table 1.

    Arguments:
        p: one entry of ``metrics["pairs"]`` (``aligned``, ``misaligned``, ``metrics``).
    Returns:
        The explanation, or ``""`` when the pair is not memorize-the-latest or the misaligned run
        is not better on the all-edits scores.
    """
    if not p["aligned"].partition(":")[2].startswith("memorize-"):
        return ""
    won = [m for m in ("efficacy_all", "paraphrase_all") if p["metrics"].get(m, {}).get("better") == "misaligned"]
    if not won:
        return ""
    A, B = run_label(p["aligned"]), run_label(p["misaligned"])
    return (f"Why {B} is ahead on {' and '.join(METRIC_WORDS[m] for m in won)}: memorize-the-latest asks each "
            f"step to fit the latest batch and keep the preserved knowledge, not earlier edits, so {A} may "
            "overwrite them (Eq. 4's pull-back −S C0 P undoes part of them), while Eq. 3 drops that term and more "
            "of what earlier steps wrote stays in W, the same leftover that moves the model away from the unedited "
            f"one. So this is no point against {A}: Table 1's claim is about preservation (specificity, "
            "neighbourhood KL, perplexity, top-1 agreement, latent drift, probes).")


def pair_sentence(p: dict) -> str:
    """One line with the final numbers of a pair on the key metrics (no adjectives added).

    Arguments:
        p: one entry of ``metrics["pairs"]``.
    Returns:
        The numbers, the count of metrics each run is better on, and :func:`latest_note` where it applies.
    """
    keys = [m for m in ("efficacy_all", "specificity", "ppl", "top1_agreement", "latent_drift_unrelated", "glue_mean")
            if m in p["metrics"]]
    nums = "; ".join(f"{m} {_fmt(p['metrics'][m]['aligned'])} vs {_fmt(p['metrics'][m]['misaligned'])}" for m in keys)
    ab, mb = p["aligned_better"], p["misaligned_better"]
    note = latest_note(p)
    return (f"{run_label(p['aligned'])} vs {run_label(p['misaligned'])}: {nums}. Of {len(p['metrics'])} metrics, "
            f"aligned better on {len(ab)}" + (f" ({', '.join(ab)})" if ab else "")
            + f", misaligned better on {len(mb)}" + (f" ({', '.join(mb)})" if mb else "")
            + f", the rest within tolerance ({TIE_ABS} for scores, {TIE_REL:.0%} relative otherwise)."
            + (f" {note}" if note else ""))


def pair_trajectory(combined, aligned_label: str, misaligned_label: str) -> list[dict]:
    """The pair's verdict at every checkpoint both runs were scored at (step ≥ 1).

    Arguments:
        combined: the :class:`otelab.eval.report.Report` holding both runs.
        aligned_label, misaligned_label: their labels.
    Returns:
        Per checkpoint, ``{"step", "edits", "metrics"}`` with ``metrics`` as in :func:`_verdict`.
    """
    df = combined.to_frame()
    rows = {lab: {int(st): dict(zip(g["metric"], g["value"])) for st, g in d.groupby("step")}
            for lab, d in df.groupby("label")}
    a, b = rows.get(aligned_label, {}), rows.get(misaligned_label, {})
    return [{"step": t, "edits": a[t].get("edits"), "metrics": _verdict(a[t], b[t])}
            for t in sorted(set(a) & set(b)) if t >= 1]


def _gap_metric(final: dict) -> Optional[str]:
    """The decided metric with the largest gap at the end (scores in absolute, others relative)."""
    def size(m):
        d = final[m]
        x, y = d["aligned"], d["misaligned"]
        return abs(x - y) if m in HIGHER_BETTER else abs(x - y) / max(abs(x), abs(y), 1e-12)
    decided = [m for m, d in final.items() if d["better"] != "tie"]
    return max(decided, key=size) if decided else None


def pair_findings(p: dict, settings: dict) -> str:
    """What the stream shows for one pair, in words, from the measured numbers only.

    Arguments:
        p: one entry of ``metrics["pairs"]`` (``aligned``, ``misaligned``, ``metrics`` at the
            end, ``trajectory`` from :func:`pair_trajectory`).
        settings: ``metrics["settings"]`` (stream length, batch size).
    Returns:
        A paragraph: where the two runs stand after the stream, with numbers, and how the
        largest gap developed over the checkpoints.
    """
    A, B = run_label(p["aligned"]), run_label(p["misaligned"])
    fin = p["metrics"]
    words = lambda m: METRIC_WORDS.get(m, m)
    nums = lambda m: f"{_fmt(fin[m]['aligned'])} vs {_fmt(fin[m]['misaligned'])}"
    ahead = [m for m, d in fin.items() if d["better"] == "aligned"]
    behind = [m for m, d in fin.items() if d["better"] == "misaligned"]
    steps = settings["n_steps"]
    head = (f"After {settings['n_records']} edits ({steps} step{'s' if steps != 1 else ''} of "
            f"{settings['batch_size']}), {A} vs {B}: ")
    if not ahead and not behind:
        text = (head + f"the two are within tolerance on all {len(fin)} metrics, so this stream does not "
                "separate them (" + "; ".join(f"{words(m)} {nums(m)}" for m in fin) + ").")
    else:
        parts = []
        if ahead:
            parts.append(f"{A} is better on " + "; ".join(f"{words(m)} ({nums(m)})" for m in ahead))
        if behind:
            parts.append(f"{B} is better on " + "; ".join(f"{words(m)} ({nums(m)})" for m in behind))
        ties = [words(m) for m, d in fin.items() if d["better"] == "tie"]
        text = head + ", and ".join(parts) + (f"; within tolerance on {', '.join(ties)}." if ties else ".")
    gap = _gap_metric(fin)
    traj = [c for c in p.get("trajectory", []) if gap in c["metrics"]]
    if gap is not None and len(traj) >= 2:
        sign = 1 if gap in HIGHER_BETTER else -1     # positive: the aligned run is better
        diffs = [sign * (c["metrics"][gap]["aligned"] - c["metrics"][gap]["misaligned"]) for c in traj]
        first = next((c for c in traj if c["metrics"][gap]["better"] != "tie"), None)
        trend = ("grew" if abs(diffs[-1]) > abs(diffs[0]) * 1.5 else "shrank" if abs(diffs[-1]) < abs(diffs[0]) / 1.5
                 else "stayed about the same")
        text += (f" The largest gap, in {words(gap)}, {trend} over the stream: {A} minus {B}"
                 + (" (sign flipped so that positive favours " + A + ")" if sign < 0 else "")
                 + " was " + ", ".join(f"{d:+.3g} after {int(c['edits'])}" for d, c in zip(diffs, traj)) + " edits"
                 + (f"; it first exceeded the tolerance after {int(first['edits'])} edits." if first else "."))
    note = latest_note(p)
    return f"{text} {note}" if note else text
