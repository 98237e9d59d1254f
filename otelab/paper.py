"""The paper's claims and set-up as data, for notebook 08 and the demo's report.

"The Labyrinth and the Thread: Rethinking Regularizations in Sequential Knowledge Editing
for Large Language Models" (arXiv 2605.26670; code: github.com/Wangzzzzzzzz/OTE-SE-Alignment).

Only what otelab can state without transcription errors is recorded here: which table
or figure makes a claim, what the claim is, and the paper-scale set-up. The paper's
numbers are **not** copied (``paper_numbers`` is ``None`` everywhere): compare with the
table named in ``where``.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Optional, Sequence

PAPER = {
    "title": "The Labyrinth and the Thread: Rethinking Regularizations in Sequential Knowledge Editing "
             "for Large Language Models",
    "arxiv": "2605.26670",
    "code": "https://github.com/Wangzzzzzzzz/OTE-SE-Alignment",
}

# The paper-scale protocol: a CounterFact stream of 2,000 edits in batches of 100 (20 steps),
# on the models otelab has presets for.
PAPER_SETUP = {
    "dataset": "CounterFact",
    "records": 2000,
    "batch_size": 100,
    "models": ("gpt2-xl", "llama3-8b", "gpt-j-6b", "qwen2.5-7b"),
}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper.

    Attributes:
        key: short id used by the notebooks.
        where: the table / figure that reports it.
        statement: the claim, in one sentence.
        runs: the otelab ``method:mode`` specs that test it (aligned first).
        metrics: the otelab metric names to look at.
        paper_numbers: the paper's numbers, when transcribed; ``None``: see ``where``.
    """

    key: str
    where: str
    statement: str
    runs: tuple
    metrics: tuple
    paper_numbers: Optional[dict] = None


CLAIMS = (
    Claim("table1", "Table 1",
          "Memorize-the-latest with the null-space shortcut (Eq. 3) collapses over a long stream, while the "
          "full normal equation (Eq. 4) stays stable: the shortcut drops S(C0P + λI), which grows every step.",
          ("alphaedit:memorize-full", "alphaedit:memorize-nullspace"),
          ("efficacy_latest", "specificity", "neighbourhood_kl", "ppl", "top1_agreement", "delta_norm")),
    Claim("tables2_5", "Tables 2 and 5",
          "OTE-aligned sequential editing stays stable over 2,000 edits for MEMIT, AlphaEdit, PRUNE and RECT; the "
          "naive rule (a repeated one-time edit) and PRUNE/RECT without Algorithm 1's error correction degrade; "
          "the regularisations themselves are not what keeps editing stable.",
          ("memit:aligned", "memit:naive", "alphaedit:aligned", "alphaedit:naive", "prune:aligned", "prune:no-ec",
           "prune:naive", "rect:aligned", "rect:no-ec", "rect:naive"),
          ("efficacy_all", "paraphrase_all", "specificity")),
    Claim("table7", "Table 7",
          "Aligned editing keeps perplexity on held-out text close to the unedited model's and keeps top-1 "
          "next-token agreement with it high; misaligned editing does not.",
          ("memit:aligned", "memit:naive", "alphaedit:aligned", "alphaedit:naive"),
          ("ppl", "top1_agreement")),
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
