"""Probing a session's model against the unedited one: its unedited weights for a moment, side-by-side text."""
from __future__ import annotations

import torch

from otelab.engine.session import EditSession
from otelab.workbench.editors import WorkbenchError

__all__ = ["unedited_weights", "generate"]


def generate(tracks: list, cache: dict, prompt: str, max_new_tokens: int = 20) -> dict[str, str]:
    """Greedy continuations of ``prompt`` by the unedited model and by each session's current model.

    The unedited continuation is computed by putting the unedited weights of the first session back
    for a moment (bit for bit, then the edited ones again), and cached per prompt.

    Arguments:
        tracks: the sessions (:class:`otelab.workbench.bench.Track`), session A first.
        cache: ``{(prompt, max_new_tokens): text}`` of unedited continuations (filled here).
        prompt: the text to continue.
        max_new_tokens: tokens generated per model.

    Returns:
        ``{"unedited": text, label: text, ...}``.
    """
    from otelab.eval.metrics import greedy_generate

    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError("the probe prompt is empty")
    key = (prompt, int(max_new_tokens))
    tr0 = tracks[0]
    if key not in cache:
        with unedited_weights(tr0.session):
            cache[key] = greedy_generate(tr0.loaded.model, tr0.loaded.tokenizer, [prompt], max_new_tokens)[0]
    out = {"unedited": cache[key]}
    for tr in tracks:
        out[tr.label] = greedy_generate(tr.loaded.model, tr.loaded.tokenizer, [prompt], max_new_tokens)[0]
    return out


class unedited_weights:
    """Context manager: the session's model has its unedited W in every edited layer inside the block.

    The current (edited) weights are put back on exit, bit for bit, also after an error.
    """

    def __init__(self, session: EditSession):
        self.session = session
        self._saved: dict[int, torch.Tensor] = {}

    def __enter__(self):
        s = self.session
        a, model = s.loaded.adapter, s.loaded.model
        self._saved = {l: a.get_W(model, l).detach().clone() for l in s.layers}   # [d_o, d_i] each
        for l in s.layers:
            a.set_W(model, l, s.W0[l])
        return s.loaded

    def __exit__(self, *exc) -> None:
        a, model = self.session.loaded.adapter, self.session.loaded.model
        for l, W in self._saved.items():
            a.set_W(model, l, W)
        self._saved = {}
