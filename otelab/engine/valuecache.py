"""Target values shared by every run of a stream: optimised once per request on the unedited model, served per batch.

The layers above the edited ones never change, so a request's target value depends on earlier
edits only through its starting point; optimising it once on the unedited model and giving the
same value to every editor isolates what a comparison is about: the update rule. The values live
in the value bank (:class:`otelab.engine.valuebank.ValueBank`), so a second run reuses them.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from otelab.engine.valuebank import ValueBank, fill_from_export

__all__ = ["stream_values"]


def stream_values(loaded, requests: Sequence, batch_size: int, *, path=None, export=None, progress: bool = True,
                  on_note: Optional[Callable[[str], None]] = None) -> tuple[list, str]:
    """The values of a stream's requests, batch by batch, from the bank (computing what is missing first).

    Arguments:
        loaded: the UNEDITED model (the bank is keyed by its fingerprint and value settings).
        requests: the stream's edit requests, in order (a whole number of batches).
        batch_size: requests per step.
        path: the bank's folder (None: the model's default bank in the otelab cache).
        export: a file of values shipped with otelab (:func:`otelab.engine.valuebank.fill_from_export`),
            imported only when computed with this exact spec; None: none.
        progress: progress bars while computing.
        on_note: called with the export's one-line note (where the values came from, or why not)
            before anything is computed, when there is one.

    Returns:
        ``(values, note)``: per batch a :class:`otelab.engine.values.ValueResult`; the export's note ("" without one).
    """
    bank = ValueBank(loaded, path=path, progress=progress)
    note = ""
    if export is not None:
        note = fill_from_export(bank, export, requests)
        if note and on_note is not None:
            on_note(note)
    bank.compute(requests)   # what is missing, with a progress bar
    B = batch_size
    return [bank.get(list(requests[t * B:(t + 1) * B]), compute=False) for t in range(len(requests) // B)], note
