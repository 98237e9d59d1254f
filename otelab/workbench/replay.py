"""Replay mode: the recorded runs' CounterFact stream, with target values read from the value bank.

:func:`replay_data` draws the stream (:data:`otelab.workbench.data.REPLAY_DRAW` records, seed
:data:`otelab.workbench.data.REPLAY_SEED`) and :class:`BankValues` serves each step's values from
the bank, never optimising one on a click (fill it with ``otelab values compute --data counterfact
--n 2000 --seed 0 --templates plain``). The edit metrics are scored on a small fixed sample of the
stream (:attr:`WorkbenchData.sample`), so that a step of 100 edits returns in seconds and 2,000
edits take minutes. :meth:`Sizes.replay` gives its sizes.
"""
from __future__ import annotations

from typing import Optional

from otelab.workbench.data import REPLAY_DRAW, REPLAY_SEED, Sizes, WorkbenchData
from otelab.workbench.editors import WorkbenchError

__all__ = ["FILL_COMMAND", "replay_data", "BankValues", "fill_bank"]

FILL_COMMAND = "otelab values compute --data counterfact --n {n} --seed {seed} --templates plain"


def replay_data(sizes: Optional[Sizes] = None, seed: int = REPLAY_SEED) -> WorkbenchData:
    """Replay mode's data: the recorded runs' CounterFact stream, a scored sample, held-out text.

    The stream is the first ``sizes.n_records`` of ``sample_records(load_counterfact(),
    REPLAY_DRAW, seed)``, the draw of ``otelab values compute --data counterfact --n 2000
    --seed 0`` and of the recorded 2,000-edit runs, so the value bank holds its values. The
    edit metrics score ``sizes.sample_per_batch`` records of every batch (seeded,
    :func:`otelab.workbench.stream.batch_sample`); the latent records are the first half of that sample
    (edited as the stream reaches them) and as many records from outside the draw (never edited).

    Arguments:
        sizes: default :meth:`Sizes.replay`.
        seed: the draw's seed (the sample and the unrelated records use it too).

    Returns:
        A :class:`WorkbenchData` without general-capability probes (unless ``sizes.glue_n``).

    Raises:
        WorkbenchError: ``$OTELAB_DATA_DIR`` is not set (CounterFact is not built in), or the
            sizes ask for more than the draw.
    """
    import os

    from otelab.data.texts import held_out_texts
    from otelab.data.files import ENV_VAR
    from otelab.data.loaders import load_counterfact, load_glue, sample_records
    from otelab.workbench.stream import batch_sample

    sizes = sizes or Sizes.replay()
    if not os.environ.get(ENV_VAR):
        raise WorkbenchError(f"replay mode edits CounterFact: set ${ENV_VAR} to the folder holding "
                             f"counterfact/counterfact-edit.json")
    if not 1 <= sizes.n_records <= REPLAY_DRAW:
        raise WorkbenchError(f"replay mode streams at most the {REPLAY_DRAW} drawn records, got n_records "
                             f"{sizes.n_records}")
    pool = load_counterfact()
    draw = sample_records(pool, REPLAY_DRAW, seed)
    stream = draw[:sizes.n_records]
    sample = batch_sample(len(stream), sizes.batch_size, sizes.sample_per_batch, seed)
    edited = sample[:sizes.latent_n // 2]
    drawn = {id(r) for r in draw}
    unrelated = sample_records([r for r in pool if id(r) not in drawn], sizes.latent_n - len(edited), seed + 1)
    glue = {t: load_glue(t, n=sizes.glue_n) for t in sizes.glue_tasks} if sizes.glue_n else {}
    texts = held_out_texts(sizes.n_texts) if sizes.n_texts else []
    return WorkbenchData(stream=stream, glue=glue, texts=texts, latent_records=[stream[i] for i in edited] + unrelated,
                         latent_stream_index=edited + [None] * len(unrelated), sample=sample)


class BankValues:
    """Target values read from a value bank: replay mode's values, never optimised on a click.

    Called with a batch of requests it returns their :class:`otelab.engine.values.ValueResult`;
    a value missing from the bank raises a one-line :class:`WorkbenchError` naming the
    command that fills it (computing it here would take the click from seconds to minutes).
    Values depend only on the unedited model, so one bank serves every session.

    Arguments:
        loaded: the model, UNEDITED when this is built (the bank is keyed by its fingerprint
            and value settings).
        path: the bank's folder (default the bank's own under the cache, the one
            ``otelab values compute`` fills and ``otelab.workbench.stream.value_provider(session, "bank",
            templates=["{}"])`` reads).
        templates: prompts the values were optimised on (default the plain prompt, as the
            recorded runs).
        fill: the command that fills the bank, named in the messages.
    """

    def __init__(self, loaded, path=None, templates=("{}",),
                 fill: str = FILL_COMMAND.format(n=REPLAY_DRAW, seed=REPLAY_SEED)):
        from otelab.engine.valuebank import ValueBank

        self.bank = ValueBank(loaded, path=path, templates=list(templates), progress=False)
        self.fill = fill

    def missing(self, requests: list) -> int:
        """How many of ``requests`` have no value in the bank."""
        return len(self.bank.missing(requests))

    def note(self, requests: list) -> tuple[str, bool]:
        """``(one-line status of the bank for these requests, whether every value is there)``."""
        n = self.missing(requests)
        if not n:
            return f"values: all {len(requests)} in the value bank {self.bank.path}", True
        return (f"values: {n} of {len(requests)} in the stream are not in the value bank {self.bank.path}; "
                f"fill it with `{self.fill}` (roughly half a second per value on two CPU cores)"), False

    def __call__(self, requests: list):
        n = self.missing(requests)
        if n:
            raise WorkbenchError(f"{n} of the {len(requests)} target values of this step are not in the value bank; "
                                 f"fill it with `{self.fill}`")
        return self.bank.get(requests, progress=False, compute=False)


def fill_bank(values, session, requests: list) -> int:
    """Compute the bank's missing values of ``requests`` now, on the unedited model.

    Its weights are put back for the computation (bit for bit, the edited ones again after), so
    this works at any step; it takes about a second per value on a CPU.

    Arguments:
        values: the workbench's :class:`BankValues` provider.
        session: session A's :class:`otelab.engine.session.EditSession` (its model is the bank's).
        requests: the requests whose values should be in the bank.

    Returns:
        How many values were computed.
    """
    from otelab.workbench.probe import unedited_weights

    if not isinstance(values, BankValues):
        raise WorkbenchError("fill_values needs a BankValues provider (replay mode)")
    if values.bank.loaded is not session.loaded:
        raise WorkbenchError("fill_values: the value bank was built on another model object than session A's")
    with unedited_weights(session):
        return values.bank.compute(requests)
