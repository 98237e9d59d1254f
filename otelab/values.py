"""Target values: MEMIT's optimisation of a residual δ at the last edited layer.

For every request, δ is added to the residual stream after the last edited
layer at the subject's last token, and optimised so the model says the new
target (NLL over the prompt and its context templates), while the
distribution after "{subject} is a" stays put (KL) and δ stays small (weight
decay, and a clamp on its norm).

Three savings over the seed code, with the same result:

* all requests × templates go through ONE forward per step;
* the layers up to the edited one do not depend on δ, so they run once; each
  step only runs the layers above;
* δ sits at the subject's last token, and causal attention cannot carry it
  backwards, so the tokens before it are run once too: each step runs the layers
  above only on the tokens from the subject's last one on
  (:class:`otelab.forward.SuffixForward`, which packs these short suffixes
  several to a sequence instead of padding them), and unembeds only the
  positions the loss reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from otelab.forward import SuffixForward, hidden_after, logits_from
from otelab.keys import context_templates, fill, pad_batch, subject_last_index
from otelab.requests import EditRequest

Tensor = torch.Tensor

EARLY_STOP_NLL = 5e-2  # the seed code's threshold


@dataclass
class ValueResult:
    """What the optimisation found.

    Attributes:
        z: target hidden states at the last edited layer ``[n, d_model]``.
        z_init: the unedited hidden states ``[n, d_model]``.
        losses: per step, per request NLL of the target ``[steps][n]``.
        steps: gradient steps taken.
    """

    z: Tensor
    z_init: Tensor
    losses: list[list[float]] = field(default_factory=list)
    steps: int = 0


def _target_ids(tok, target: str) -> list[int]:
    return tok(" " + target.strip(), add_special_tokens=False)["input_ids"]


def compute_values(loaded, requests: Sequence[EditRequest], layer: int | None = None, *,
                   templates: Sequence[str] | None = None, cached: bool = True) -> ValueResult:
    """Optimise δ for every request at once; return ``z = h + δ`` at ``layer``.

    Arguments:
        loaded: a :class:`otelab.models.LoadedModel`.
        requests: validated edit requests.
        layer: where δ is added; default the last edited layer of the preset.
        templates: context templates (default :func:`otelab.keys.context_templates`).
        cached: run the layers up to ``layer``, and the tokens before the subject's
            last one, once (True); or run the full forward every step (False, the seed
            code's way; kept for the benchmark and the equivalence test).
    Returns:
        :class:`ValueResult`.
    """
    p, tok, model = loaded.preset, loaded.tokenizer, loaded.model
    layer = max(p.layers) if layer is None else layer
    templates = context_templates(loaded) if templates is None else list(templates)
    n, n_t = len(requests), len(templates)

    # Rows: per request, each template's prompt + the target minus its last token, then "{subject} is a".
    rows, lookup, owner, tgt_pos, tgt_ids = [], [], [], [], []
    for i, r in enumerate(requests):
        t_ids = _target_ids(tok, r.target_new)
        for t in templates:
            text, end = fill(t, r)
            ids, idx = subject_last_index(tok, text, end)
            rows.append(ids + t_ids[:-1])
            lookup.append(idx)
            owner.append(i)
            tgt_pos.append([len(ids) - 1 + j for j in range(len(t_ids))])
            tgt_ids.append(t_ids)
    kl_start = len(rows)
    for i, r in enumerate(requests):
        ids, idx = subject_last_index(tok, f"{r.subject} is a", len(r.subject))
        rows.append(ids)
        lookup.append(idx)
        owner.append(i)
    input_ids, mask = pad_batch(rows, tok.pad_token_id, loaded.device)
    B = len(rows)
    dev = loaded.device
    lookup_t = torch.tensor(lookup, device=dev)
    owner_t = torch.tensor(owner, device=dev)
    kl_rows = torch.arange(kl_start, B, device=dev)
    kl_last = mask[kl_start:].sum(1) - 1

    # Flattened target positions for a single gather.
    pr = torch.tensor([b for b, pos in enumerate(tgt_pos) for _ in pos], device=dev)
    pc = torch.tensor([c for pos in tgt_pos for c in pos], device=dev)
    pt = torch.tensor([t for ids in tgt_ids for t in ids], device=dev)
    tokens_per_row = torch.tensor([len(pos) for pos in tgt_pos], device=dev, dtype=torch.float32)

    with torch.no_grad():
        h_lower = hidden_after(loaded, input_ids, mask, layer).detach()   # [B, T, d]
    first_rows = torch.arange(n, device=dev) * n_t                         # the plain "{}" template
    z_init = h_lower[first_rows, lookup_t[first_rows]].float()             # [n, d]
    if cached:
        upper = SuffixForward(loaded, h_lower, mask.sum(1), lookup_t, layer + 1)   # packed suffixes
        at_delta = upper.locate(torch.arange(B, device=dev), lookup_t)
        # What the loss reads: target positions, then each KL row's last token.
        at_read = upper.locate(torch.cat([pr, kl_rows]), torch.cat([pc, kl_last]))

    delta = torch.zeros_like(z_init, requires_grad=True)                   # [n, d]
    opt = torch.optim.Adam([delta], lr=p.v_lr)
    max_norm = p.clamp_factor * z_init.norm(dim=1, keepdim=True)           # [n, 1]
    init_norm2 = z_init.norm(dim=1) ** 2                                   # [n]
    unembed = loaded.adapter.unembed(model)
    kl_init = None
    losses: list[list[float]] = []
    steps = 0
    was_training = model.training
    model.eval()
    for it in range(p.v_steps):
        if cached:
            # δ enters at each suffix's first token (the subject's last); unembed only what the loss reads.
            x = upper.suffix.index_put(at_delta, delta[owner_t].to(upper.suffix.dtype), accumulate=True)
            hs = upper.final_hidden(x)                                                  # [n_pack, S, d]
            logp = torch.log_softmax(unembed(hs[at_read]).float(), dim=-1)              # [P + n, V]
            tok_lp = logp[torch.arange(len(pr), device=dev), pt]
            kl_logp = logp[len(pr):]                                                    # [n, V]
        else:  # the seed code's way: full forward, full logits
            h = hidden_after(loaded, input_ids, mask, layer)
            add = torch.zeros(h.shape, dtype=delta.dtype, device=dev).index_put(
                (torch.arange(B, device=dev), lookup_t), delta[owner_t])
            logits = logits_from(loaded, h + add.to(h.dtype), mask, layer + 1).float()   # [B, T, V]
            logp = torch.log_softmax(logits, dim=-1)
            tok_lp = logp[pr, pc, pt]                                                   # [n_target_tokens]
            kl_logp = logp[kl_rows, kl_last]                                            # [n, V]
        row_lp = torch.zeros(kl_start, device=dev).index_add(0, pr, tok_lp) / tokens_per_row
        nll = -torch.zeros(n, device=dev).index_add(0, owner_t[:kl_start], row_lp) / n_t   # [n]
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = F.kl_div(kl_init, kl_logp, log_target=True, reduction="none").sum(-1)       # [n]
        wd = p.v_weight_decay * delta.norm(dim=1) ** 2 / init_norm2
        loss = nll + p.kl_factor * kl + wd
        losses.append([round(float(x), 6) for x in nll.detach()])
        steps = it
        if float(nll.detach().max()) < EARLY_STOP_NLL or it == p.v_steps - 1:
            break
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            scale = (max_norm / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            delta.mul_(scale)
    model.train(was_training)
    return ValueResult(z=(z_init + delta).detach(), z_init=z_init, losses=losses, steps=steps + 1)
