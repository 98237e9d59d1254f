"""Batching: tokenising, padding, batched forward passes, and the subject's last token.

Every metric of the evaluation layer pads its prompts into batches and runs one
forward pass per batch, with attention masks and explicit position ids, so left
and right padding give the same numbers as one prompt at a time. The helpers
here are shared by :mod:`otelab.eval.scoring`, :mod:`otelab.eval.fluency` and
:mod:`otelab.eval.drift`; the padding itself is :func:`otelab.models.tokens.pad_batch`,
the one routine the engine also uses.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Sequence

import torch

from otelab.models.tokens import last_overlapping, pad_batch, position_ids

# ----------------------------------------------------------------------------
# Counting forward passes


class ForwardCounter:
    """Count calls to a model's ``forward`` (one per batch in every metric of the evaluation layer).

    Use as a context manager::

        with ForwardCounter(model) as fc:
            target_logprobs(model, tok, prompts, targets, batch_size=8)
        assert fc.count <= math.ceil(len(prompts) / 8)

    Arguments:
        model: the ``torch.nn.Module`` whose top-level forward is counted
            (``generate`` counts one call per generated token).
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.count = 0
        self._handle = None

    def _hook(self, module, args, kwargs=None):
        self.count += 1

    def __enter__(self) -> "ForwardCounter":
        # the body runs once per batch whether the metric calls the whole model or
        # only its body (see split_head)
        body = getattr(self.model, "base_model", None)
        target = body if isinstance(body, torch.nn.Module) else self.model
        self._handle = target.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# ----------------------------------------------------------------------------
# Tokenising, padding and forward passes


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's (first) parameters, where its inputs go."""
    return next(model.parameters()).device


def pad_id_of(tok) -> int:
    """The id padding positions get: the pad token, else EOS, else UNK, else 0."""
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tok, name, None)
        if isinstance(v, int):
            return v
    return 0  # never attended to: the attention mask hides padding


def lead_ids(tok) -> list[int]:
    """Special tokens the tokenizer puts *before* a text (e.g. LLaMA's BOS); trailing ones are dropped."""
    full = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return list(full[:k])
    return []


def encode_many(tok, texts: Sequence[str], lead: bool) -> list[list[int]]:
    """Token ids of each text (with the leading special tokens when ``lead``)."""
    if not texts:
        return []
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    prefix = lead_ids(tok) if lead else []
    return [prefix + list(x) for x in ids]


def _supports_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@contextmanager
def eval_mode(model):
    """Evaluate without dropout, then restore the caller's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def progress_bar(iterable, total: int, desc: str, show: bool | None):
    """tqdm over batches; shown by default only when there are many batches."""
    from tqdm.auto import tqdm

    disable = (total < 8) if show is None else (not show)
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False)


def pad_with_positions(seqs: Sequence[Sequence[int]], pad_id: int, side: str,
                       device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Pad token lists into a batch (:func:`otelab.models.tokens.pad_batch`) with position ids.

    Returns:
        input_ids [B, T], attention_mask [B, T], position_ids [B, T] (0 at each
        row's first real token, whatever the padding side), and the column
        offset of each row's first real token.
    """
    ids, mask = pad_batch(seqs, pad_id, device, side)  # [B, T], [B, T]
    T = ids.shape[1]
    offsets = [T - len(s) if side == "left" else 0 for s in seqs]
    return ids, mask, position_ids(mask), offsets


def forward_logits(model, ids, mask, pos, keep: int = 0) -> torch.Tensor:
    """Logits of the last ``keep`` columns (all when 0 or unsupported); [B, keep|T, V]."""
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    if keep and _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    if keep and logits.shape[1] != keep:  # the model ignored logits_to_keep
        logits = logits[:, -keep:]
    return logits


def split_head(model) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """The model's body (returning the final-normed hidden states) and its output layer, or None.

    Scoring needs the logits of a few positions per sequence; applying the
    output layer (``d_model x vocab``, the largest matmul of a small model) to
    just those rows as one 2-D matmul is several times cheaper than
    ``logits_to_keep``, which computes every kept column of every row through
    a batched matmul. Models whose head does more than ``Linear(hidden)``
    (logit soft-capping or scaling) take the full forward instead.
    """
    body = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    cfg = getattr(model, "config", None)
    if body is None or body is model or type(head) is not torch.nn.Linear:
        return None
    if any(getattr(cfg, a, None) for a in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return body, head


def logits_at(model, ids, mask, pos, rows: Sequence[int], cols: Sequence[int]) -> torch.Tensor:
    """Logits at the given (row, column) positions of a padded batch; [N, V]."""
    r = torch.as_tensor(rows, device=ids.device)
    c = torch.as_tensor(cols, device=ids.device)
    split = split_head(model)
    if split is not None:
        body, head = split
        h = body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state  # [B, T, D]
        return head(h[r, c])  # [N, V]
    T = ids.shape[1]
    logits = forward_logits(model, ids, mask, pos, T - int(c.min()))  # [B, keep, V]
    return logits[r, c - (T - logits.shape[1])]


# ----------------------------------------------------------------------------
# The subject's last token


def subject_last_token(tok, text: str, start: int, end: int) -> int:
    """Index (without leading special tokens) of the last token overlapping chars [start, end).

    Uses the fast tokenizer's offsets mapping (:func:`otelab.models.tokens.last_overlapping`,
    the rule the engine's keys use too); for slow tokenizers, counts the tokens of
    ``text[:end]`` (ROME's approach, the same token).
    """
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        hit = last_overlapping(enc["offset_mapping"], start, end)
        if hit is not None:
            return hit
    n = len(tok(text[:end], add_special_tokens=False)["input_ids"])
    if n == 0:
        raise ValueError(f"the subject span [{start}, {end}) of {text!r} covers no token")
    return n - 1
