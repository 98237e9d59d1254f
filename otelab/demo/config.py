"""What ``otelab demo`` runs: its settings (:class:`DemoConfig`), the pairs it compares and the runs' names."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Any, Optional

from otelab.workbench.data import Sizes
from otelab.workbench.editors import track_label

__all__ = ["DEFAULT_PAIRS", "DemoConfig", "parse_pairs", "run_label"]

# (aligned run, misaligned run) pairs: "method:mode". Chosen by measurement, see docs in
# DEFAULT_NOTE and the settings in metrics.json.
DEFAULT_PAIRS = (("alphaedit:memorize-full", "alphaedit:memorize-nullspace"),
                 ("memit:aligned", "memit:naive"))


@dataclass(frozen=True)
class DemoConfig(Sizes):
    """Everything that decides what the demo runs (all of it is written to metrics.json).

    The workbench's :class:`otelab.workbench.data.Sizes` (the stream, the batch, the evaluation
    sets, C0's tokens) with the demo's defaults, plus the demo's own settings. A ``DemoConfig`` is
    a ``Sizes``: :func:`otelab.workbench.data.load_data` takes it as it is.

    Attributes:
        n_records: edits in the stream (the first fact-bank records). The default, 200 in 2 steps
            of 100 (the paper's step size) scored after each step, is the longest stream that
            the measured stage costs put within 5 minutes for a cold run on 2 CPU cores with the
            shipped values (README, "Timing").
        eval_every: score every this many steps (and always at the last step).
        glue_n: items per general-capability task (0: skip), scored at step 0 and at the end.
        model: preset name or path (``None``: ``$OTELAB_MODEL`` or SmolLM2-135M).
        data: ``"factbank"`` (built in) or ``"counterfact"`` (``$OTELAB_DATA_DIR`` or the Hugging Face Hub).
        pairs: ``(aligned, misaligned)`` run specs ``"method:mode"``.
        corpus: covariance corpus spec (``None``: the default Wikipedia corpus).
        n_para, n_neigh: paraphrase / neighbourhood prompts scored per record.
        glue_every_eval: also score general capability at every checkpoint (slower).
        umap: draw a UMAP of the subject states at the end (needs ``umap-learn``).
        fresh_values: the seed code's per-step protocol: values re-optimised every step on each
            run's edited model, instead of banked values of the unedited model shared by all runs.
        values_bank: the folder of the value bank that stores the shared values per request
            (:class:`otelab.engine.valuebank.ValueBank`; ``None``: the model's default bank in the otelab cache).
        verify_quick: the small verification (no toy collapse).
        skip_verify: leave the verification out.

        The other sizes (``batch_size``, ``glue_tasks``, ``n_texts``, ``max_len``, ``latent_n``,
        ``cov_tokens``) mean what they mean in :class:`Sizes`; the demo scores every edited
        record, so ``sample_per_batch`` stays ``None``.
    """

    # the Sizes fields, with the demo's defaults (a stream at the paper's step size, small evaluation sets)
    n_records: int = 200
    batch_size: int = 100
    glue_n: int = 20
    n_texts: int = 8
    max_len: int = 64
    latent_n: int = 20
    cov_tokens: int = 20_000
    eval_every: int = 1
    # the demo's own
    model: Optional[str] = None
    data: str = "factbank"
    pairs: tuple = DEFAULT_PAIRS
    corpus: Optional[str] = None
    n_para: int = 1
    n_neigh: int = 2
    umap: bool = True
    glue_every_eval: bool = False
    fresh_values: bool = False
    values_bank: Optional[str] = None
    verify_quick: bool = False
    skip_verify: bool = False

    @classmethod
    def quick(cls, **over: Any) -> "DemoConfig":
        """The CI size: a 4-edit stream in batches of 2, tiny evaluation sets, the quick verification."""
        from otelab.config import CI_COV_TOKENS

        base = cls(n_records=4, batch_size=2, eval_every=1, cov_tokens=CI_COV_TOKENS, glue_n=4, n_texts=2,
                   max_len=32, latent_n=6, umap=False, verify_quick=True)
        return replace(base, **over)

    def runs(self) -> list[str]:
        """The distinct run specs, in pair order."""
        return list(dict.fromkeys(s for p in self.pairs for s in p))

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        from otelab.engine.session import SessionError, check_combo

        for name in ("n_records", "batch_size", "eval_every", "cov_tokens", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("n_para", "n_neigh", "glue_n", "n_texts", "latent_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.data not in ("factbank", "counterfact"):
            raise ValueError(f"data must be 'factbank' or 'counterfact', got {self.data!r}")
        if self.sample_per_batch is not None:
            raise ValueError(f"sample_per_batch must be None: the demo scores every edited record, got {self.sample_per_batch!r}")
        if self.n_records % self.batch_size:
            raise ValueError(f"n_records ({self.n_records}) must be a multiple of batch_size ({self.batch_size})")
        if not self.pairs:
            raise ValueError("pairs is empty: give at least one (aligned, misaligned) pair")
        for p in self.pairs:
            if len(p) != 2:
                raise ValueError(f"pair {p!r} must hold two run specs 'method:mode'")
            for spec in p:
                method, colon, mode = spec.partition(":")
                if not colon:
                    raise ValueError(f"run spec {spec!r}: expected 'method:mode'")
                try:
                    check_combo(method, mode)
                except SessionError as err:
                    raise ValueError(f"run spec {spec!r}: {err}") from None


def parse_pairs(text: str) -> tuple:
    """``"memit:aligned/memit:naive,alphaedit:aligned/alphaedit:naive"`` -> pairs."""
    pairs = []
    for chunk in text.split(","):
        parts = [s.strip() for s in chunk.split("/")]
        if len(parts) != 2 or not all(parts):
            raise argparse.ArgumentTypeError(f"{chunk!r}: a pair is 'method:mode/method:mode' (aligned/misaligned)")
        pairs.append(tuple(parts))
    return tuple(pairs)


def run_label(spec: str) -> str:
    """``"memit:naive"`` -> ``"MEMIT naive"`` (the workbench's naming)."""
    method, _, mode = spec.partition(":")
    return track_label(method, mode)
