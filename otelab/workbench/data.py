"""What the workbench edits and measures with: its sizes, the request stream and the evaluation sets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from otelab.config import CI_COV_TOKENS, ci_size
from otelab.workbench.editors import WorkbenchError

__all__ = ["REPLAY_DRAW", "REPLAY_SEED", "Sizes", "WorkbenchData", "load_data"]

# Replay mode: the recorded runs' stream is the seeded draw of this many CounterFact records.
REPLAY_DRAW = 2000
REPLAY_SEED = 0


@dataclass(frozen=True)
class Sizes:
    """How much data the workbench uses.

    Attributes:
        n_records: length of the request stream (fact-bank records).
        batch_size: requests per step.
        glue_n: items per general-capability task.
        glue_tasks: the tasks.
        n_texts: held-out texts for perplexity / top-1 agreement.
        max_len: token limit per held-out text.
        latent_n: records whose hidden states are tracked (half from the stream, half unrelated).
        cov_tokens: tokens of the covariance corpus (``None``: the preset's).
        eval_every: general capability and UMAP every this many steps.
        sample_per_batch: stream records per batch the edit metrics score (``None``: every
            edited record; replay mode scores a few, see :attr:`WorkbenchData.sample`).
    """

    n_records: int = 60
    batch_size: int = 5
    glue_n: int = 40
    glue_tasks: tuple[str, ...] = ("sst2", "mrpc", "cola", "rte", "mmlu")
    n_texts: int = 16
    max_len: int = 128
    latent_n: int = 40
    cov_tokens: Optional[int] = None
    eval_every: int = 2
    sample_per_batch: Optional[int] = None

    @classmethod
    def default(cls, ci: Optional[bool] = None) -> "Sizes":
        """The interactive sizes, or the small CI sizes when ``ci`` (default :func:`ci_size`)."""
        if ci is None:
            ci = ci_size()
        if ci:
            return cls(n_records=8, batch_size=1, glue_n=10, n_texts=4, max_len=64, latent_n=20,
                       cov_tokens=CI_COV_TOKENS, eval_every=2)
        return cls()

    @classmethod
    def replay(cls, ci: Optional[bool] = None) -> "Sizes":
        """Replay mode's sizes: the recorded runs' 2,000 edits in steps of 100, cheap measurements.

        No general capability or UMAP per click (``glue_n=0``, ``eval_every=0``); 4 held-out
        texts; one scored record per batch (20 after 2,000 edits: a click's metrics stay at a
        few seconds). At CI size (``ci``, default :func:`ci_size`): the first 10 records of the
        draw in steps of 5, 2 scored per batch.
        """
        if ci is None:
            ci = ci_size()
        if ci:
            return cls(n_records=10, batch_size=5, glue_n=0, glue_tasks=(), n_texts=2, max_len=64, latent_n=10,
                       cov_tokens=CI_COV_TOKENS, eval_every=0, sample_per_batch=2)
        return cls(n_records=REPLAY_DRAW, batch_size=100, glue_n=0, glue_tasks=(), n_texts=4, max_len=128,
                   latent_n=20, eval_every=0, sample_per_batch=1)


@dataclass
class WorkbenchData:
    """What the workbench edits and measures with.

    Attributes:
        stream: the records to edit, in order (``FactRecord``-like: prompt, subject,
            target_new, target_true, paraphrase_prompts, neighborhood_prompts; ``.request()``).
        glue: ``{task: items}`` for general capability (may be empty).
        texts: held-out texts for perplexity and top-1 agreement (may be empty).
        latent_records: records whose subject states are tracked for latent drift.
        latent_stream_index: for each latent record, its index in ``stream`` (``None``: unrelated).
        sample: the stream positions the edit metrics score, ascending (``None``: every edited
            record). Only these records' neighbourhoods are cached before editing.
    """

    stream: list
    glue: dict = field(default_factory=dict)
    texts: list = field(default_factory=list)
    latent_records: list = field(default_factory=list)
    latent_stream_index: list = field(default_factory=list)
    sample: Optional[list] = None

    def __post_init__(self) -> None:
        if not self.stream:
            raise WorkbenchError("the request stream is empty")
        if len(self.latent_stream_index) != len(self.latent_records):
            raise WorkbenchError(f"latent_stream_index has {len(self.latent_stream_index)} entries for "
                                 f"{len(self.latent_records)} latent records")
        for i, r in enumerate(self.stream):
            if not callable(getattr(r, "request", None)):
                raise WorkbenchError(f"stream record {i} ({type(r).__name__}) has no .request() method")
        if self.sample is not None:
            bad = [i for i in self.sample if isinstance(i, bool) or not isinstance(i, int)
                   or not 0 <= i < len(self.stream)]
            if bad:
                raise WorkbenchError(f"sample position {bad[0]!r} is not a stream index (0..{len(self.stream) - 1})")
            if list(self.sample) != sorted(set(self.sample)):
                raise WorkbenchError("sample positions must be ascending and distinct")

    def scored(self, n_done: int) -> list[int]:
        """The stream positions the edit metrics score after ``n_done`` edits."""
        if self.sample is None:
            return list(range(n_done))
        return [i for i in self.sample if i < n_done]

    def edited_mask(self, n_done: int) -> list[bool]:
        """Per latent record, whether the stream has edited it after ``n_done`` edits."""
        return [i is not None and i < n_done for i in self.latent_stream_index]


def load_data(sizes: Optional[Sizes] = None) -> WorkbenchData:
    """The built-in fact bank as a stream, GLUE-style probes, held-out text and latent records.

    The stream is the first ``sizes.n_records`` fact-bank records; the latent records
    are the first ``latent_n // 2`` of the stream (they get edited as the stream
    advances) plus as many records from after the stream (never edited). GLUE items
    and held-out texts come from ``$OTELAB_DATA_DIR`` when set, else the built-in
    probes and the default Wikipedia corpus.

    Arguments:
        sizes: default :meth:`Sizes.default`.

    Returns:
        A :class:`WorkbenchData`.
    """
    from otelab.data.texts import held_out_texts
    from otelab.data.loaders import load_factbank, load_glue

    sizes = sizes or Sizes.default()
    bank = load_factbank()
    if sizes.n_records >= len(bank):
        raise WorkbenchError(f"n_records {sizes.n_records} leaves no unrelated records in the "
                             f"{len(bank)}-record fact bank")
    stream = bank[:sizes.n_records]
    n_edit = min(sizes.latent_n // 2, len(stream))
    unrelated = bank[sizes.n_records:sizes.n_records + sizes.latent_n - n_edit]
    glue = {t: load_glue(t, n=sizes.glue_n) for t in sizes.glue_tasks} if sizes.glue_n else {}
    texts = held_out_texts(sizes.n_texts) if sizes.n_texts else []
    return WorkbenchData(stream=stream, glue=glue, texts=texts, latent_records=stream[:n_edit] + unrelated,
                         latent_stream_index=list(range(n_edit)) + [None] * len(unrelated))
