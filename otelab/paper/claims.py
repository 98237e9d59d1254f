"""The paper's claims, set-up and table numbers as data, for notebook 08 and the demo's report.

"The Labyrinth and the Thread: Rethinking Regularizations in Sequential Knowledge Editing
for Large Language Models" (arXiv 2605.26670; code: github.com/Wangzzzzzzzz/OTE-SE-Alignment).

:data:`TABLES` holds the numbers of the paper's Tables 1-11 as printed (cells are the
printed strings: ``"99.85 ± 0.08"``, ``"99.85 / 99.80"`` for SE / OTE); :func:`number`
reads one. :data:`CLAIMS` says which table makes which claim, which otelab runs test it
and which printed row each run corresponds to; :func:`beside` puts otelab's measurement
next to the paper's figure, with the model and the scale of each stated, because they are
never the same: the paper edits 2,000 CounterFact facts on 1.5-8B models, otelab's CPU runs
tens of facts on SmolLM2-135M.

Known misprints of the paper, and where otelab departs from the printed formula:
Eq. 4 (:func:`otelab.ote.memorize_latest_full` implements it as printed), Eq. 30
(:func:`otelab.ote.conflict_update`), the appendix restatement of Prop. 3.2 (the main text's
``R_t`` is the exact one) and Eq. 36's 3-gram sign (ROME's fluency is the intended one).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

from otelab.paper.tables import (  # noqa: F401  (re-exported: notebooks and tests read them from here)
    TABLE_SCALE, TABLES, PaperFigure, lookup, number, table,
)

PAPER = {
    "title": "The Labyrinth and the Thread: Rethinking Regularizations in Sequential Knowledge Editing "
             "for Large Language Models",
    "arxiv": "2605.26670",
    "code": "https://github.com/Wangzzzzzzzz/OTE-SE-Alignment",
}

# The paper-scale protocol (Sec. 4.1-4.2, App. B): a CounterFact stream of 2,000 edits in batches of
# 100 (20 steps), on the models otelab has presets for.
PAPER_SETUP = {
    "dataset": "CounterFact",
    "records": 2000,
    "batch_size": 100,
    "models": ("gpt2-xl", "llama3-8b", "gpt-j-6b", "qwen2.5-7b"),
    "glue_items_per_task": 100,
    "glue_every_steps": 5,
    # App. B.4: edited layers, λ (cov weight), value-optimisation steps and learning rate
    "hparams": {
        "GPT-2 XL": {"layers": (13, 14, 15, 16, 17), "lam": 3000, "v_steps": 20, "v_lr": 0.5},
        "GPT-J": {"layers": (3, 4, 5, 6, 7, 8), "lam": 3000, "v_steps": 25, "v_lr": 0.5},
        "LLaMA-3": {"layers": (4, 5, 6, 7, 8), "lam": 3000, "v_steps": 25, "v_lr": 0.1},
        "Qwen2.5": {"layers": (4, 5, 6, 7, 8), "lam": 3000, "v_steps": 25, "v_lr": 0.1},
    },
}


_CF = {"efficacy_all": "Eff.", "paraphrase_all": "Gen.", "specificity": "Spe."}
_DRIFT = {"ppl": "PPL", "top1_agreement": "top-1 agreement"}


def _t2(ablation: str, method: str) -> PaperFigure:
    return PaperFigure("Tables 2 and 5", {"ablation": ablation, "method": method}, _CF, 0.01)


def _t7(algorithm: str, model: str = "LLaMA-3") -> PaperFigure:
    return PaperFigure("Table 7", {"model": model, "algorithm": algorithm}, _DRIFT)


def _t3(method: str, which: str, model: str = "LLaMA-3") -> PaperFigure:
    return PaperFigure("Table 3", {"model": model, "method": method}, _CF, 0.01, which)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Attributes:
        key: short id used by the notebooks.
        where: the table / figure that reports it.
        statement: the claim, in one sentence.
        runs: the otelab ``method:mode`` specs that test it (aligned first; ``method:one-time``: the
            one-time edit of a whole stream, recorded as a stream of one batch).
        metrics: the otelab metric names to look at.
        paper_numbers: ``{run spec: PaperFigure}``: the printed row each run corresponds to
            (``{}`` where the paper has figures, not numbers).
    """

    key: str
    where: str
    statement: str
    runs: tuple
    metrics: tuple
    paper_numbers: dict = field(default_factory=dict)


CLAIMS = (
    Claim("table1", "Table 1",
          "Memorize-the-latest with the null-space shortcut (Eq. 3) collapses over a long stream, while keeping "
          "the preserved term (Eq. 4) stays stable: the shortcut drops S C0 P, which grows every step.",
          ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"),
          ("efficacy_latest", "specificity", "neighbourhood_kl", "ppl", "top1_agreement", "glue_mean", "delta_norm"),
          {"unedited": PaperFigure("Table 1", {"setting": "pre-edit"}, {"glue_mean": "mean"}),
           "alphaedit:memorize-full": PaperFigure("Table 1", {"setting": "full (Eq. 4)"}, {"glue_mean": "mean"}),
           "alphaedit:memorize-nullspace": PaperFigure("Table 1", {"setting": "null-space simplified (Eq. 3)"},
                                                       {"glue_mean": "mean"})}),
    Claim("tables2_5", "Tables 2 and 5",
          "OTE-aligned sequential editing stays stable over 2,000 edits for MEMIT, AlphaEdit, PRUNE and RECT; the "
          "naive rule (a repeated one-time edit) and PRUNE/RECT without Algorithm 1's error correction degrade; "
          "the regularisations themselves are not what keeps editing stable.",
          ("memit:aligned", "memit:naive", "alphaedit:aligned", "alphaedit:naive", "prune:aligned", "prune:no-ec",
           "prune:naive", "rect:aligned", "rect:no-ec", "rect:naive"),
          ("efficacy_all", "paraphrase_all", "specificity"),
          {"unedited": PaperFigure("Table 3", {"model": "LLaMA-3", "method": "pre-edited"}, _CF, 0.01),
           "memit:aligned": _t2("fully aligned", "MEMIT"), "memit:naive": _t2("not OTE-aligned (naive)", "MEMIT"),
           "alphaedit:aligned": _t2("fully aligned", "AlphaEdit"),
           "alphaedit:naive": _t2("not OTE-aligned (naive)", "AlphaEdit"),
           # for AlphaEdit the naive rule and Eq. 3 are the same update (notebook 08 checks it)
           "alphaedit:memorize-nullspace": _t2("not OTE-aligned (naive)", "AlphaEdit"),
           "prune:aligned": _t2("fully aligned", "PRUNE"), "prune:no-ec": _t2("no error correction", "PRUNE"),
           "prune:naive": _t2("not OTE-aligned (naive)", "PRUNE"),
           "rect:aligned": _t2("fully aligned", "RECT"), "rect:no-ec": _t2("no error correction", "RECT"),
           "rect:naive": _t2("not OTE-aligned (naive)", "RECT")}),
    Claim("table6", "Table 6",
          "With the stronger RECT (keeping 20 % of the entries, otelab's default), error correction is what keeps "
          "the edits: without it efficacy and generalisation fall sharply.",
          ("rect:aligned", "rect:no-ec"),
          ("efficacy_all", "paraphrase_all", "specificity"),
          {"rect:aligned": PaperFigure("Table 6", {"ablation": "fully aligned RECT-20%"}, _CF, 0.01),
           "rect:no-ec": PaperFigure("Table 6", {"ablation": "no error correction RECT-20%"}, _CF, 0.01)}),
    Claim("table7", "Table 7",
          "Aligned editing keeps perplexity on held-out text close to the unedited model's and keeps top-1 "
          "next-token agreement with it high; misaligned editing does not (on LLaMA-3; on Qwen2.5 mostly not).",
          ("memit:aligned", "memit:naive", "alphaedit:aligned", "alphaedit:naive"),
          ("ppl", "top1_agreement"),
          {"memit:aligned": _t7("MEMIT (aligned)"), "memit:naive": _t7("MEMIT (naive)"),
           "alphaedit:aligned": _t7("AlphaEdit (aligned)"), "alphaedit:naive": _t7("AlphaEdit (naive)"),
           "alphaedit:memorize-nullspace": _t7("AlphaEdit (naive)"),
           "prune:aligned": _t7("PRUNE (aligned)"), "prune:naive": _t7("PRUNE (naive)"),
           "rect:aligned": _t7("RECT (aligned)"), "rect:naive": _t7("RECT (naive)")}),
    Claim("table3", "Table 3",
          "Sequential editing aligned with the one-time edit (SE) scores close to the one-time edit of the same "
          "2,000 records in one batch (OTE); the paper puts the differences down to SE recomputing the target "
          "values after every step.",
          ("memit:aligned", "memit:one-time", "alphaedit:aligned", "alphaedit:one-time", "prune:aligned",
           "prune:one-time", "rect:aligned", "rect:one-time"),
          ("efficacy_all", "paraphrase_all", "specificity"),
          {f"{m}:one-time": _t3(f"{name} (aligned)", "OTE")
           for m, name in (("memit", "MEMIT"), ("alphaedit", "AlphaEdit"), ("prune", "PRUNE"), ("rect", "RECT"))}),
    Claim("figures3_7", "Figures 1 (right) and 3-7",
          "Along the stream, general capability (GLUE-style tasks, MMLU) is maintained by OTE-aligned editing and "
          "degrades under misalignment; hidden states of unrelated subjects drift less.",
          ("memit:aligned", "memit:naive", "alphaedit:memorize-full", "alphaedit:memorize-nullspace"),
          ("glue_mean", "latent_drift_unrelated", "latent_drift_edited")),
)


def claim(key: str) -> Claim:
    """The :class:`Claim` with this key (``ValueError`` naming the known keys otherwise)."""
    for c in CLAIMS:
        if c.key == key:
            return c
    raise ValueError(f"no claim {key!r}; known: {[c.key for c in CLAIMS]}")


def beside(key: str, measured: dict, *, ours: str, names: Optional[dict] = None) -> list[dict]:
    """otelab's measurement and the paper's figure side by side, for every run and metric of a claim.

    Arguments:
        key: a claim key (:data:`CLAIMS`).
        measured: ``{run spec: {metric: value}}`` (``"unedited"`` for step 0, if measured).
        ours: otelab's model and scale, e.g. ``"SmolLM2-135M, 60 fact-bank edits in 12 steps of 5"``.
        names: optional display names per run spec.
    Returns:
        One dict per (run, metric) the paper has a number for: ``run, metric, otelab, paper,
        otelab_setting, paper_setting`` (paper figures in otelab's unit: fractions, not percent).
    """
    c = claim(key)
    names = names or {}
    out = []
    for spec, fig in c.paper_numbers.items():
        if spec not in measured:
            continue
        for metric in fig.columns:
            paper_value = fig.value(metric)
            out.append({"run": names.get(spec, spec), "metric": metric, "otelab": measured[spec].get(metric),
                        "paper": paper_value, "otelab_setting": ours,
                        "paper_setting": f"{fig.table}: {TABLE_SCALE[fig.table]}"
                                         + (f", row {' / '.join(fig.row.values())}" if fig.row else "")})
    return out


def paper_scale_command(pairs: Sequence[tuple], model: str = "llama3-8b", out: str = "runs/paper",
                        records: int = PAPER_SETUP["records"], batch_size: int = PAPER_SETUP["batch_size"],
                        cov_tokens: int = 10_000_000) -> str:
    """The ``otelab demo`` command that runs ``pairs`` at the paper's scale (on a GPU).

    Arguments:
        pairs: ``(aligned, misaligned)`` run specs, e.g. ``[("memit:aligned", "memit:naive")]``.
        model: an otelab preset (``gpt2-xl``, ``llama3-8b``, ...).
        out: output folder.
        records, batch_size: the stream (default: the paper's 2,000 in batches of 100).
        cov_tokens: tokens of the preserved covariance (the seed code uses 100,000 Wikipedia samples).
    Returns:
        A shell command line. It needs ``$OTELAB_DATA_DIR`` holding ``counterfact/counterfact-edit.json``
        (or the ``datasets`` package for the Hugging Face copy) and the model's weights.
    """
    spec = ",".join(f"{a}/{b}" for a, b in pairs)
    args = ["otelab", "demo", "--model", model, "--data", "counterfact", "--n", str(records),
            "--batch", str(batch_size), "--pairs", spec, "--cov-tokens", str(cov_tokens), "--eval-every", "2",
            "--glue-n", "100", "--glue-every-eval", "--fresh-values", "--out", out]
    return " ".join(shlex.quote(a) for a in args)
