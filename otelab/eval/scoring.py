"""Teacher-forced scoring: the log-probs of ``" " + target`` after each prompt, in padded batches.

Every edit score, the unedited reference and the general-capability scores read
their numbers from :func:`teacher_forced`; pairs whose input is a prefix of
another's share its forward pass, and sequences that share a prefix (a prompt's
two targets) are packed into one row as a prefix tree (:mod:`otelab.eval.packing`),
so ``n`` pairs take at most ``ceil(n / batch_size)`` passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from otelab.eval.batching import (encode_many, eval_mode, logits_at, model_device, pad_id_of, pad_with_positions,
                                  progress_bar)
from otelab.eval.packing import pack_rows, packs, tree_batch, tree_row

PACK_ROW = 32  # most tokens per packed row: the two targets of a CounterFact prompt fit, long prompts stay alone

# ----------------------------------------------------------------------------
# Teacher-forced scoring with prefix sharing


@dataclass
class TeacherForced:
    """Teacher-forced result for one (prompt, target) pair.

    Attributes:
        target_ids: the target's tokens (``" " + target``), length m.
        logprobs: log-prob of each target token given everything before it; [m].
        argmax: the model's top-1 token at each of those positions; [m].
        first: whatever ``first_hook`` returned for the distribution at the
            first target position (None when no hook).
    """

    target_ids: list[int]
    logprobs: torch.Tensor  # [m]
    argmax: torch.Tensor  # [m]
    first: Any = None

    @property
    def mean_logprob(self) -> float:
        return float(self.logprobs.mean())

    @property
    def token_accuracy(self) -> float:
        return float((self.argmax == torch.as_tensor(self.target_ids)).float().mean())


def plan_hosts(inputs: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Map every input sequence to the longest sequence it is a prefix of.

    A causal LM's logits at position i only depend on tokens <= i, so a pair
    whose input is a prefix of another's is scored from the longer one's forward
    (e.g. single-token targets after the same prompt share one sequence).
    In sorted order all extensions of s directly follow s, so it is enough to
    look at the next element.
    """
    uniq = sorted(set(inputs))
    host: dict[tuple[int, ...], tuple[int, ...]] = {}
    for i in range(len(uniq) - 1, -1, -1):
        s = uniq[i]
        nxt = uniq[i + 1] if i + 1 < len(uniq) else None
        host[s] = host[nxt] if nxt is not None and nxt[:len(s)] == s else s
    return host


def teacher_forced(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32,
                   padding_side: str = "left", first_hook: Callable[[int, torch.Tensor], Any] | None = None,
                   show_progress: bool | None = None) -> list[TeacherForced]:
    """Score ``" " + target`` after each prompt, teacher forced, in padded batches.

    The prompt keeps the tokenizer's leading special tokens (BOS); the target is
    ``" " + target.strip()`` tokenised on its own, as ROME/MEMIT do.
    Pairs are deduplicated by prefix sharing, and a transformers model (eager or
    SDPA attention, :func:`otelab.eval.packing.packs`) gets sequences that share a
    prefix packed into one row of at most :data:`PACK_ROW` tokens (a 4-D tree mask;
    the numbers are those of one sequence per row, to float rounding). The number
    of forward passes is at most ``ceil(len(prompts) / batch_size)``.

    Arguments:
        model: a causal LM (``model(input_ids, attention_mask, position_ids).logits``).
        tok: its tokenizer.
        prompts: the n prompt strings (subject already filled in).
        targets: the n target strings.
        batch_size: rows (packed sequences) per forward pass.
        padding_side: ``"left"`` (default) or ``"right"``; both give the same numbers
            (the output layer is applied only at the positions a target needs).
        first_hook: optional ``f(pair_index, logprobs [V])`` called with the full
            log-distribution at each pair's first target position; its return
            value is stored in ``.first``.
        show_progress: tqdm bar (default: only when there are many batches).

    Returns:
        One :class:`TeacherForced` per pair, in input order.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, (p, t) in enumerate(zip(prompts, targets)):
        if not isinstance(p, str) or not isinstance(t, str):
            raise ValueError(f"pair {i}: prompt and target must be strings, got "
                             f"{type(p).__name__} and {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"pair {i}: the target is empty (prompt {p!r})")
    if not prompts:
        return []
    p_ids = encode_many(tok, prompts, lead=True)
    t_ids = encode_many(tok, [" " + t.strip() for t in targets], lead=False)
    for i, (p, t) in enumerate(zip(p_ids, t_ids)):
        if not p:
            raise ValueError(f"pair {i}: the prompt {prompts[i]!r} tokenises to nothing and the tokenizer adds no BOS")
        if not t:
            raise ValueError(f"pair {i}: the target {targets[i]!r} tokenises to nothing")
    inputs = [tuple(p + t[:-1]) for p, t in zip(p_ids, t_ids)]
    host_of = plan_hosts(inputs)
    tree = packs(model)
    rows = pack_rows(set(host_of.values()), PACK_ROW if tree else 0)
    trees = [tree_row(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda k: (-len(trees[k].tokens), rows[k]))  # similar lengths share a batch
    node_of: dict[tuple[int, ...], tuple[int, list[int]]] = {}  # host -> (its row, the node at each position)
    for k in order:
        for h, path in zip(rows[k], trees[k].paths):
            node_of[h] = (k, path)
    served: dict[int, list[int]] = {}  # pair indices per row
    for i, inp in enumerate(inputs):
        served.setdefault(node_of[host_of[inp]][0], []).append(i)

    results: list[TeacherForced | None] = [None] * len(prompts)
    device, pad = model_device(model), pad_id_of(tok)
    dtype = next(model.parameters()).dtype  # the tree mask is additive, in the model's dtype
    n_batches = math.ceil(len(order) / batch_size)
    with eval_mode(model):
        for b0 in progress_bar(range(0, len(order), batch_size), n_batches, "scoring", show_progress):
            chunk = order[b0:b0 + batch_size]
            if tree:
                ids, mask, pos, offs = tree_batch([trees[k] for k in chunk], pad, padding_side, device, dtype)
            else:
                ids, mask, pos, offs = pad_with_positions([trees[k].tokens for k in chunk], pad, padding_side, device)
            # the columns whose next-token distribution some pair of this batch needs
            cols_of: dict[int, list[int]] = {}
            at: dict[tuple[int, int], int] = {}
            for r, k in enumerate(chunk):
                for i in served[k]:
                    path = node_of[host_of[inputs[i]]][1]
                    c0 = len(p_ids[i]) - 1
                    cols_of[i] = [offs[r] + path[c] for c in range(c0, c0 + len(t_ids[i]))]
                    for c in cols_of[i]:
                        at.setdefault((r, c), len(at))
            logits = logits_at(model, ids, mask, pos, [rc[0] for rc in at], [rc[1] for rc in at])  # [N, V]
            for r, k in enumerate(chunk):
                for i in served[k]:
                    tgt = t_ids[i]
                    lp = torch.log_softmax(logits[[at[(r, c)] for c in cols_of[i]]].float(), dim=-1)  # [m, V]
                    tgt_t = torch.as_tensor(tgt, device=lp.device)
                    results[i] = TeacherForced(
                        target_ids=list(tgt),
                        logprobs=lp.gather(1, tgt_t[:, None])[:, 0].cpu(),
                        argmax=lp.argmax(-1).cpu(),
                        first=first_hook(i, lp[0]) if first_hook is not None else None)
    return results  # type: ignore[return-value]


def target_logprobs(model, tok, prompts: Sequence[str], targets: Sequence[str], batch_size: int = 32,
                    padding_side: str = "left", show_progress: bool | None = None) -> torch.Tensor:
    """Mean token log-prob of ``" " + target`` given each prompt (teacher forced).

    This is minus the per-token NLL that ROME/MEMIT's CounterFact evaluation
    compares between the new and the true target.

    Arguments:
        model, tok: the causal LM and its tokenizer.
        prompts: n prompts with the subject filled in.
        targets: n targets.
        batch_size: sequences per forward pass (at most ``ceil(n / batch_size)`` passes).
        padding_side: ``"left"`` or ``"right"``.

    Returns:
        Tensor [n] of mean log-probs (float32, CPU).
    """
    res = teacher_forced(model, tok, prompts, targets, batch_size, padding_side, show_progress=show_progress)
    return torch.tensor([r.mean_logprob for r in res], dtype=torch.float32)
