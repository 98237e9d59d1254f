"""Drift: how far edits move what the model does on unrelated input.

LM drift (the seed paper's Table 7, Eqs. 40-41):

- :func:`perplexity`: token-weighted perplexity on held-out text.
- :class:`LMBaseline`: the unedited model's top-1 next tokens and NLL, cached
  before editing; :func:`lm_drift` then runs only the edited model and returns
  its perplexity and :func:`top1_agreement` with the unedited model.

Latent drift (Figures 4, 6, 7):

- :func:`hidden_states_at_subject`: the residual stream ``hidden_states[layer]``
  at each record's subject's last token, in padded batches.
- :func:`latent_drift`: projection-free numbers, mean cosine displacement
  1 - cos(h_before, h_after) and mean relative L2, split into edited and
  unrelated records.
- :func:`umap_2d`: one 2-D UMAP fitted on before+after states together, for
  the before/after scatter plots.
- :class:`LatentBaseline`: the unedited states, cached before editing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from otelab.eval.batching import (encode_many, eval_mode, forward_logits, lead_ids, model_device, pad_id_of,
                                  pad_with_positions, progress_bar, subject_last_token)
from otelab.eval.records import subject_span

__all__ = ["subject_last_token", "hidden_states_at_subject", "latent_drift", "umap_2d", "LatentBaseline",
           "perplexity", "LMBaseline", "lm_drift", "top1_agreement"]


def hidden_states_at_subject(model, tok, records: Sequence[Any], layer: int, batch_size: int = 32,
                             show_progress: bool | None = None) -> torch.Tensor:
    """Residual stream ``hidden_states[layer]`` at each subject's last token.

    ``hidden_states[0]`` is the embedding output and ``hidden_states[l]`` the
    output of block ``l - 1`` (the ``transformers`` convention).

    Arguments:
        model, tok: a causal LM and its tokenizer.
        records: objects/dicts with ``prompt`` (a ``{}`` template or a text that
            contains the subject) and ``subject``, or ``(prompt, subject)`` pairs.
        layer: index into ``hidden_states``, 0..n_layers.
        batch_size: prompts per forward pass.

    Returns:
        Tensor [n, d_model] (float32, CPU).
    """
    records = list(records)
    if not records:
        raise ValueError("hidden_states_at_subject needs at least one record")
    n_layers = int(getattr(model.config, "num_hidden_layers", getattr(model.config, "n_layer", -1)))
    if not isinstance(layer, int) or not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be an int in 0..{n_layers} (an index into hidden_states), got {layer!r}")
    spans = [subject_span(r, i) for i, r in enumerate(records)]
    lead = len(lead_ids(tok))
    seqs = encode_many(tok, [s[0] for s in spans], lead=True)
    idx = [lead + subject_last_token(tok, *s) for s in spans]
    out = torch.empty(len(records), model.config.hidden_size)
    device, pad = model_device(model), pad_id_of(tok)
    with eval_mode(model):
        for b0 in progress_bar(range(0, len(seqs), batch_size), math.ceil(len(seqs) / batch_size), "hidden states",
                            show_progress):
            chunk = seqs[b0:b0 + batch_size]
            ids, mask, pos, offs = pad_with_positions(chunk, pad, "right", device)
            hs = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                       use_cache=False).hidden_states[layer]  # [B, T, d]
            for r in range(len(chunk)):
                out[b0 + r] = hs[r, offs[r] + idx[b0 + r]].float().cpu()
    return out


def _as_bool_mask(edited, n: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    if edited is None:
        return m
    e = torch.as_tensor(list(edited) if not isinstance(edited, torch.Tensor) else edited)
    if e.dtype == torch.bool:
        if e.shape != (n,):
            raise ValueError(f"the edited mask has shape {tuple(e.shape)}, expected ({n},)")
        return e
    if e.numel() and (e.min() < 0 or e.max() >= n):
        raise ValueError(f"edited indices must be in 0..{n - 1}")
    m[e.long()] = True
    return m


def latent_drift(before: torch.Tensor, after: torch.Tensor, edited=None) -> dict[str, float]:
    """How far hidden states moved, without any projection.

    Arguments:
        before: unedited states; [n, d].
        after: the same records' states after editing; [n, d].
        edited: which records were edited: a bool mask [n] or a list of indices
            (default: none, every record counts as unrelated).

    Returns:
        ``cos_drift`` (mean of 1 - cos(h_before, h_after)) and ``rel_l2`` (mean of
        ||h_after - h_before|| / ||h_before||) over all records, and the same with
        suffixes ``_unrelated`` / ``_edited`` over those subsets (NaN when empty).
    """
    before, after = torch.as_tensor(before).double(), torch.as_tensor(after).double()
    if before.ndim != 2 or before.shape != after.shape:
        raise ValueError(f"before and after must both be [n, d]; got {tuple(before.shape)} and {tuple(after.shape)}")
    cos = torch.nn.functional.cosine_similarity(before, after, dim=1, eps=1e-12)  # [n]
    cos_d = 1.0 - cos
    rel = (after - before).norm(dim=1) / before.norm(dim=1).clamp_min(1e-12)  # [n]
    mask = _as_bool_mask(edited, before.shape[0])

    def mean(x, m):
        return float(x[m].mean()) if bool(m.any()) else float("nan")

    everything = torch.ones_like(mask)
    return {"cos_drift": mean(cos_d, everything), "rel_l2": mean(rel, everything),
            "cos_drift_unrelated": mean(cos_d, ~mask), "rel_l2_unrelated": mean(rel, ~mask),
            "cos_drift_edited": mean(cos_d, mask), "rel_l2_edited": mean(rel, mask)}


def umap_2d(before, after, seed: int = 0, n_neighbors: int | None = None, min_dist: float = 0.1):
    """Fit ONE 2-D UMAP on before+after states and embed both (so the two clouds share axes).

    Arguments:
        before: [n, d] states before editing.
        after: [m, d] states after editing.
        seed: UMAP ``random_state``; the same seed gives the same output.
        n_neighbors: UMAP neighbourhood size; default ``min(10, n + m - 1)``,
            small enough for 30-60 points.
        min_dist: UMAP ``min_dist``.

    Returns:
        ``(emb_before [n, 2], emb_after [m, 2])`` as numpy arrays.
    """
    import numpy as np
    import umap  # heavy (numba); imported only when a projection is asked for

    a = np.asarray(torch.as_tensor(before).float().cpu())
    b = np.asarray(torch.as_tensor(after).float().cpu())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"before and after must be [n, d] and [m, d]; got {a.shape} and {b.shape}")
    x = np.concatenate([a, b])
    if x.shape[0] < 4:
        raise ValueError(f"umap_2d needs at least 4 points in total, got {x.shape[0]}")
    k = n_neighbors if n_neighbors is not None else min(10, x.shape[0] - 1)
    # spectral initialisation needs more points than components + neighbours; random init is fine for tiny sets
    init = "spectral" if x.shape[0] > k + 2 else "random"
    reducer = umap.UMAP(n_components=2, n_neighbors=k, min_dist=min_dist, random_state=seed, init=init,
                        n_jobs=1)
    emb = reducer.fit_transform(x)
    return emb[:len(a)], emb[len(a):]


@dataclass
class LatentBaseline:
    """The unedited model's subject states at one layer, cached before editing.

    Attributes:
        layer: index into ``hidden_states``.
        keys: ``(filled prompt, subject)`` of each record, to mark edited ones later.
        records: the records themselves (to recompute the states after editing).
        states: [n, d_model].
    """

    layer: int
    keys: list[tuple[str, str]]
    records: list[Any]
    states: torch.Tensor

    @classmethod
    def compute(cls, model, tok, records: Sequence[Any], layer: int, batch_size: int = 32) -> "LatentBaseline":
        """States of the unedited model (see :func:`hidden_states_at_subject`)."""
        records = list(records)
        keys = [_key(r, i) for i, r in enumerate(records)]
        return cls(layer, keys, records, hidden_states_at_subject(model, tok, records, layer, batch_size))

    def state(self) -> dict[str, Any]:
        """The layer, keys and states (the records stay with the caller; see :meth:`from_state`)."""
        return {"layer": int(self.layer), "keys": [tuple(k) for k in self.keys], "states": self.states}

    @classmethod
    def from_state(cls, state: dict[str, Any], records: Sequence[Any]) -> "LatentBaseline":
        """Re-attach ``records`` to a stored state; they must be the records it was computed on."""
        records = list(records)
        keys = [_key(r, i) for i, r in enumerate(records)]
        if keys != [tuple(k) for k in state["keys"]]:
            raise ValueError("the stored latent states belong to other records")
        return cls(state["layer"], keys, records, state["states"])

    def drift(self, model, tok, edited_records: Sequence[Any] = (), batch_size: int = 32) -> dict[str, float]:
        """:func:`latent_drift` of ``model`` against the cached states.

        Arguments:
            model, tok: the edited model and its tokenizer.
            edited_records: the records that were edited; those of the cached set
                matching one of them (same filled prompt and subject) count as edited.
        """
        after = hidden_states_at_subject(model, tok, self.records, self.layer, batch_size)
        edited = {_key(r, i) for i, r in enumerate(edited_records)}
        mask = torch.tensor([k in edited for k in self.keys], dtype=torch.bool)
        return latent_drift(self.states, after, mask)


def _key(rec: Any, i: int) -> tuple[str, str]:
    text, s, e = subject_span(rec, i)
    return text, text[s:e]


# ----------------------------------------------------------------------------
# LM drift: perplexity and top-1 agreement (Table 7)


def _encode_texts(tok, texts: Sequence[str], max_len: int) -> list[list[int]]:
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    seqs = [s[:max_len] for s in encode_many(tok, texts, lead=True)]
    for i, s in enumerate(seqs):
        if len(s) < 2:
            raise ValueError(f"text {i} ({texts[i][:40]!r}) has fewer than 2 tokens; nothing to predict")
    return seqs


def _lm_pass(model, tok, seqs: Sequence[Sequence[int]], batch_size: int,
             show_progress: bool | None) -> list[tuple[float, torch.Tensor]]:
    """For each sequence: (sum of next-token NLL, top-1 predictions [L-1])."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[Any] = [None] * len(seqs)
    device, pad = model_device(model), pad_id_of(tok)
    with eval_mode(model):
        for b0 in progress_bar(range(0, len(order), batch_size), math.ceil(len(order) / batch_size), "LM drift",
                            show_progress):
            rows = order[b0:b0 + batch_size]
            ids, mask, pos, _ = pad_with_positions([seqs[i] for i in rows], pad, "right", device)
            logits = forward_logits(model, ids, mask, pos)  # [B, T, V]
            for r, i in enumerate(rows):
                L = len(seqs[i])
                lp = torch.log_softmax(logits[r, :L - 1].float(), dim=-1)  # [L-1, V]
                nxt = ids[r, 1:L]
                nll = -float(lp.gather(1, nxt[:, None]).sum())
                out[i] = (nll, lp.argmax(-1).cpu())
    return out


def perplexity(model, tok, texts: Sequence[str], max_len: int = 128, batch_size: int = 8,
               show_progress: bool | None = None) -> float:
    """Token-weighted perplexity exp(Σ NLL / Σ tokens) over texts (Eq. 40).

    Each text is tokenised with the tokenizer's leading special tokens,
    truncated to ``max_len`` tokens, and every token after the first is predicted.

    Arguments:
        model, tok: a causal LM and its tokenizer.
        texts: the held-out texts.
        max_len: token limit per text.
        batch_size: texts per forward pass.

    Returns:
        The perplexity.
    """
    seqs = _encode_texts(tok, texts, max_len)
    res = _lm_pass(model, tok, seqs, batch_size, show_progress)
    return math.exp(sum(r[0] for r in res) / sum(len(s) - 1 for s in seqs))


@dataclass
class LMBaseline:
    """The unedited model's top-1 next tokens and NLL on held-out text.

    Attributes:
        seqs: the token ids of each text (after truncation).
        top1: the unedited model's argmax at each position; one [L-1] tensor per text.
        nll_sum: total NLL of the unedited model.
    """

    seqs: list[list[int]]
    top1: list[torch.Tensor]
    nll_sum: float

    @property
    def n_tokens(self) -> int:
        return sum(len(s) - 1 for s in self.seqs)

    def state(self) -> dict[str, Any]:
        """Plain containers and tensors (what ``torch.load(weights_only=True)`` reads back)."""
        return {"seqs": [list(x) for x in self.seqs], "top1": list(self.top1), "nll_sum": float(self.nll_sum)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LMBaseline":
        return cls(seqs=state["seqs"], top1=state["top1"], nll_sum=state["nll_sum"])

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.n_tokens)

    @classmethod
    def compute(cls, model, tok, texts: Sequence[str], max_len: int = 128, batch_size: int = 8,
                show_progress: bool | None = None) -> "LMBaseline":
        """Run the unedited model once over the texts.

        Arguments:
            model, tok: the unedited model and its tokenizer.
            texts: held-out texts.
            max_len: token limit per text.
            batch_size: texts per forward pass.

        Returns:
            An :class:`LMBaseline`.
        """
        seqs = _encode_texts(tok, texts, max_len)
        res = _lm_pass(model, tok, seqs, batch_size, show_progress)
        return cls(seqs=seqs, top1=[r[1] for r in res], nll_sum=sum(r[0] for r in res))


def _agreement(preds: Sequence[torch.Tensor], baseline: LMBaseline) -> float:
    if len(preds) != len(baseline.top1):
        raise ValueError(f"got predictions for {len(preds)} texts, the baseline has {len(baseline.top1)}")
    hit = 0
    for i, (p, b) in enumerate(zip(preds, baseline.top1)):
        p = torch.as_tensor(p)
        if p.shape != b.shape:
            raise ValueError(f"text {i}: {tuple(p.shape)} predictions, the baseline has {tuple(b.shape)}")
        hit += int((p == b).sum())
    return hit / baseline.n_tokens


def lm_drift(model, tok, baseline: LMBaseline, batch_size: int = 8, show_progress: bool | None = None) -> dict[str, float]:
    """Perplexity and top-1 agreement of the (edited) model on the baseline's texts, in one pass.

    Arguments:
        model, tok: the edited model and its tokenizer.
        baseline: the unedited model's :class:`LMBaseline`.
        batch_size: texts per forward pass.

    Returns:
        ``{"ppl", "ppl_unedited", "top1_agreement"}``; top-1 agreement is the
        fraction of next-token positions whose argmax equals the unedited one (Eq. 41).
    """
    res = _lm_pass(model, tok, baseline.seqs, batch_size, show_progress)
    return {"ppl": math.exp(sum(r[0] for r in res) / baseline.n_tokens),
            "ppl_unedited": baseline.ppl,
            "top1_agreement": _agreement([r[1] for r in res], baseline)}


def top1_agreement(model_or_preds, baseline: LMBaseline, tok=None, batch_size: int = 8) -> float:
    """Fraction of next-token positions where the argmax matches the unedited model's (Eq. 41).

    Arguments:
        model_or_preds: the edited model (then ``tok`` is needed), or its top-1
            predictions already computed (one [L-1] tensor per baseline text).
        baseline: the unedited model's :class:`LMBaseline`.
        tok: the tokenizer, when a model is given.
        batch_size: texts per forward pass.

    Returns:
        The agreement in [0, 1].
    """
    if isinstance(model_or_preds, torch.nn.Module):
        if tok is None:
            raise ValueError("top1_agreement needs the tokenizer when given a model")
        return lm_drift(model_or_preds, tok, baseline, batch_size)["top1_agreement"]
    return _agreement(list(model_or_preds), baseline)
