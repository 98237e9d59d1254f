"""Keys: the input of W_out at the subject's last token.

MEMIT averages each key over the prompt and a few context prefixes. The seed
code samples those prefixes from the model without a seed; here they are
greedy continuations of fixed openings, so they are the same on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from otelab.models.forward import hidden_after, w_out_inputs
from otelab.models.tokens import last_overlapping, pad_batch
from otelab.data.requests import EditRequest

Tensor = torch.Tensor

OPENINGS = ("The", "Therefore", "Because", "I", "You")
_TEMPLATE_CACHE: dict[tuple, list[str]] = {}


def context_templates(loaded) -> list[str]:
    """``["{}"]`` plus one prefix per (length, count) of the preset, e.g. ``"The city of X. {}"``.

    Prefixes are greedy continuations of :data:`OPENINGS` (deterministic) by the model
    *as it is now*, cached per model and per current weights of the preset's edited layers:
    an edited model continues the openings differently. An
    :class:`otelab.engine.session.EditSession` fixes its templates when it is built, on
    the unedited weights, so a session resumed from disk keys its edits exactly as the
    run that saved it did.

    Returns:
        Templates, each with one ``{}`` where the request's prompt goes.
    """
    a = loaded.adapter
    weights = tuple(_weights_digest(a.get_W(loaded.model, l)) for l in loaded.preset.layers)
    key = (loaded.fingerprint, loaded.preset.context_templates, weights)
    if key in _TEMPLATE_CACHE:
        return list(_TEMPLATE_CACHE[key])
    tok, model = loaded.tokenizer, loaded.model
    templates = ["{}"]
    for length, count in loaded.preset.context_templates:
        openings = list(OPENINGS[:count])
        enc = [tok(o, add_special_tokens=True)["input_ids"] for o in openings]
        for ids in enc:
            inp = torch.tensor([ids], device=loaded.device)
            with torch.no_grad():
                out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=length,
                                     do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0], skip_special_tokens=True)
            text = text.replace("{", " ").replace("}", " ").replace("\n", " ").strip()
            templates.append(text + ". {}")
    _TEMPLATE_CACHE[key] = templates
    return list(templates)


def _weights_digest(W: Tensor) -> str:
    """SHA-256 of a weight matrix's bytes (the template cache's key for the current weights)."""
    import hashlib

    raw = W.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


@dataclass
class Encoded:
    """A right-padded batch with the subject's last-token position of each row."""

    input_ids: Tensor        # [B, T]
    attention_mask: Tensor   # [B, T]
    subject_last: Tensor     # [B]
    lengths: Tensor          # [B] tokens before padding


def subject_last_index(tokenizer, text: str, subject_end: int) -> tuple[list[int], int]:
    """Tokenise ``text`` (with special tokens); return its ids and the index of the subject's last token.

    The subject's last token is the last one holding character ``subject_end − 1``
    (:func:`otelab.models.tokens.last_overlapping`, the rule the evaluation layer's latent
    states use too).
    """
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = enc["input_ids"]
    i = last_overlapping(enc["offset_mapping"], subject_end - 1, subject_end)
    if i is None:
        raise ValueError(f"cannot locate the subject's last token in {text!r}")
    return ids, i


def fill(template: str, request: EditRequest) -> tuple[str, int]:
    """Put the request's prompt into a context template; return the text and the subject's end offset."""
    prompt = request.template
    full = template.replace("{}", prompt, 1) if template != "{}" else prompt
    start = full.index("{}")
    return full.replace("{}", request.subject, 1), start + len(request.subject)


def encode(loaded, requests: Sequence[EditRequest], templates: Sequence[str]) -> Encoded:
    """Encode every (request, template) pair, request-major: row ``i·len(templates) + j``."""
    tok = loaded.tokenizer
    rows, last = [], []
    for r in requests:
        for t in templates:
            text, end = fill(t, r)
            ids, idx = subject_last_index(tok, text, end)
            rows.append(ids)
            last.append(idx)
    ids, mask = pad_batch(rows, tok.pad_token_id, loaded.device)
    return Encoded(ids, mask, torch.tensor(last, device=loaded.device), mask.sum(1))


@torch.no_grad()
def compute_keys(loaded, requests: Sequence[EditRequest], layer: int,
                 templates: Sequence[str] | None = None) -> Tensor:
    """Keys of ``requests`` at ``layer``, averaged over the context templates.

    One padded forward for all requests × templates; it stops after ``layer``.

    Returns:
        ``K`` ``[d_i, n]`` (float32/bfloat16 as the model).

    Example (a tiny random model, the plain prompt only)::

        >>> from otelab.models.loading import tiny_model
        >>> lm = tiny_model("llama")
        >>> K = compute_keys(lm, [EditRequest("{} lives in", "Alice", "Paris")], 1, templates=["{}"])
        >>> tuple(K.shape) == (lm.adapter.get_W(lm.model, 1).shape[1], 1)          # [d_i, n]
        True
    """
    templates = context_templates(loaded) if templates is None else list(templates)
    enc = encode(loaded, requests, templates)
    acts = w_out_inputs(loaded, enc.input_ids, enc.attention_mask, [layer])[layer]   # [B, T, d_i]
    rows = torch.arange(acts.shape[0], device=acts.device)
    k = acts[rows, enc.subject_last]                                                # [B, d_i]
    return k.view(len(requests), len(templates), -1).mean(1).T                      # [d_i, n]


@torch.no_grad()
def subject_hidden(loaded, requests: Sequence[EditRequest], layer: int) -> Tensor:
    """The residual stream after block ``layer`` at the subject's last token of each plain prompt.

    Returns:
        ``[n, d_model]``.
    """
    enc = encode(loaded, requests, ["{}"])
    h = hidden_after(loaded, enc.input_ids, enc.attention_mask, layer)             # [n, T, d]
    return h[torch.arange(h.shape[0], device=h.device), enc.subject_last]
