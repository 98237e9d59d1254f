"""Token batches and the subject's last token: one padding routine and one rule for the engine and the evaluation layer.

They live in the model layer because both the engine (keys, values, covariance) and the
evaluation layer (edit scores, latent drift) pad token lists and find a subject's last
token, and neither may import the other.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device,
              side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into one batch.

    With causal attention and the attention mask, right padding never changes
    the real tokens' states; left padding does the same once the caller passes
    position ids (see :func:`position_ids`).

    Arguments:
        seqs: B token-id lists (at least one).
        pad_id: the id written into padding positions (never attended to).
        device: where the returned tensors live.
        side: ``"right"`` (real tokens first) or ``"left"`` (real tokens last).

    Returns:
        ``input_ids [B, T]`` and ``attention_mask [B, T]`` (1 on real tokens), T the longest length.
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # [B, T]
    mask = torch.zeros((len(seqs), T), dtype=torch.long)  # [B, T]
    for b, s in enumerate(seqs):
        off = T - len(s) if side == "left" else 0
        ids[b, off:off + len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, off:off + len(s)] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token, whatever the padding side.

    Arguments:
        mask: attention mask [B, T] (1 on real tokens).

    Returns:
        ``[B, T]``: 0 at each row's first real token (and on left padding), then 1, 2, ...
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]


def last_overlapping(offsets: Sequence[Sequence[int]], start: int, end: int) -> Optional[int]:
    """The subject's last token: the LAST token whose character span overlaps ``[start, end)``.

    This is the one rule of otelab's keys, values and latent states, and ROME's (the last
    token of ``text[:end]``). When a byte-level tokenizer splits the subject's last character
    into several tokens (every one of them maps to that character), it is the last of them.

    Arguments:
        offsets: a fast tokenizer's ``offset_mapping``, one ``(first char, end char)`` per token;
            special tokens carry ``(0, 0)`` and never overlap.
        start, end: the subject's character span.

    Returns:
        The token's index in ``offsets``, or None when no token overlaps the span.

    Examples:
        >>> last_overlapping([(0, 0), (0, 3), (3, 4), (3, 4), (4, 8)], 0, 4)   # "Pel" + "é" in two bytes
        3
    """
    hits = [j for j, (a, b) in enumerate(offsets) if a < end and b > start]
    return hits[-1] if hits else None
