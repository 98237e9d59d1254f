"""Target values: MEMIT's optimisation of a residual δ at the last edited layer.

For every request, δ is added to the residual stream after the last edited
layer at the subject's last token, and optimised so the model says the new
target (NLL over the prompt and its context templates), while the
distribution after "{subject} is a" stays put (KL) and δ stays small (weight
decay, and a clamp on its norm).

Each request's optimisation is its own: its loss reads only its own δ, Adam
works element-wise, and a request stops on its own NLL (per-row early
stopping; the seed code stopped a batch when its *worst* row was below the
threshold, so a value depended on its batch-mates). A request's value is
therefore the same whether it is optimised alone or in any batch (up to float
rounding), which is what lets :mod:`otelab.engine.valuebank` store values per
request, and lets a long list run in chunks of bounded memory.

Savings over the seed code, with the same result:

* all requests × templates of a chunk go through ONE forward per step;
* the layers up to the edited one do not depend on δ, so they run once; each
  step only runs the layers above;
* δ sits at the subject's last token, and causal attention cannot carry it
  backwards, so the tokens before it are run once too: each step runs the layers
  above only on the tokens from the subject's last one on
  (:class:`otelab.models.forward.SuffixForward`, which packs these short suffixes
  several to a sequence instead of padding them), and unembeds only the
  positions the loss reads;
* a request that has converged leaves the forward: once the rows still
  optimised fall below :data:`REBUILD_BELOW` of those in the packed forward, it is
  rebuilt for them only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from otelab.models.forward import SuffixForward, hidden_after, logits_from
from otelab.engine.keys import context_templates, fill, pad_batch, subject_last_index
from otelab.data.requests import EditRequest

Tensor = torch.Tensor

EARLY_STOP_NLL = 5e-2  # the seed code's threshold, applied per request
DEFAULT_CHUNK = 32     # requests optimised together; bounds the memory of any list
REBUILD_BELOW = 0.75   # rebuild the packed forward when fewer than this share of its rows still move


@dataclass
class ValueResult:
    """What the optimisation found.

    Attributes:
        z: target hidden states at the last edited layer ``[n, d_model]``.
        z_init: the unedited hidden states ``[n, d_model]``.
        losses: per step, per request NLL of the target ``[steps][n]``; a request
            that stopped early repeats its final NLL (its δ no longer moves).
        steps: forward passes of the longest-running request.
        row_steps: per request, the forward passes it took ``[n]``.
    """

    z: Tensor
    z_init: Tensor
    losses: list[list[float]] = field(default_factory=list)
    steps: int = 0
    row_steps: list[int] = field(default_factory=list)

    @staticmethod
    def concat(parts: Sequence["ValueResult"]) -> "ValueResult":
        """Join results of consecutive request lists into one, in order (losses padded with each row's last)."""
        steps = max(p.steps for p in parts)
        losses = [[] for _ in range(steps)]
        for p in parts:
            n = p.z.shape[0]
            rows = p.losses or [[float("nan")] * n]
            for s in range(steps):
                losses[s] += rows[min(s, len(rows) - 1)]
        return ValueResult(z=torch.cat([p.z for p in parts]), z_init=torch.cat([p.z_init for p in parts]),
                           losses=losses, steps=steps, row_steps=[s for p in parts for s in p.row_steps])


def _target_ids(tok, target: str) -> list[int]:
    return tok(" " + target.strip(), add_special_tokens=False)["input_ids"]


def compute_values(loaded, requests: Sequence[EditRequest], layer: int | None = None, *,
                   templates: Sequence[str] | None = None, cached: bool = True,
                   chunk: int = DEFAULT_CHUNK) -> ValueResult:
    """Optimise δ for every request; return ``z = h + δ`` at ``layer``.

    Requests are optimised ``chunk`` at a time (each independently of the others, see the
    module docstring), so memory is bounded for any number of requests.

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel`.
        requests: validated edit requests.
        layer: where δ is added; default the last edited layer of the preset.
        templates: context templates (default :func:`otelab.engine.keys.context_templates`); the first
            must be ``"{}"`` (the plain prompt gives ``z_init``).
        cached: run the layers up to ``layer``, and the tokens before the subject's
            last one, once (True); or run the full forward every step (False, the seed
            code's way; kept for the benchmark and the equivalence test).
        chunk: requests per optimisation (≥ 1).
    Returns:
        :class:`ValueResult`, rows in request order.
    """
    if not requests:
        raise ValueError("compute_values: no requests")
    if chunk < 1:
        raise ValueError(f"compute_values: chunk must be ≥ 1, got {chunk}")
    layer = max(loaded.preset.layers) if layer is None else layer
    templates = context_templates(loaded) if templates is None else list(templates)
    if templates[0] != "{}":
        raise ValueError(f"compute_values: the first template must be '{{}}', got {templates[0]!r}")
    parts = [_optimise(loaded, list(requests[i:i + chunk]), layer, templates, cached)
             for i in range(0, len(requests), chunk)]
    return parts[0] if len(parts) == 1 else ValueResult.concat(parts)


class _Rows:
    """The token rows of some requests: per request, one per template (prompt + target minus its
    last token), then its KL row ("{subject} is a"); request ``i`` owns rows ``i·(n_t+1) …``."""

    def __init__(self, tok, requests: Sequence[EditRequest], templates: Sequence[str]):
        self.per = len(templates) + 1
        self.ids, self.lookup, self.tgt_pos, self.tgt_ids = [], [], [], []
        for r in requests:
            t_ids = _target_ids(tok, r.target_new)
            for t in templates:
                text, end = fill(t, r)
                ids, idx = subject_last_index(tok, text, end)
                self.ids.append(ids + t_ids[:-1])
                self.lookup.append(idx)
                self.tgt_pos.append([len(ids) - 1 + j for j in range(len(t_ids))])
                self.tgt_ids.append(t_ids)
            ids, idx = subject_last_index(tok, f"{r.subject} is a", len(r.subject))
            self.ids.append(ids)
            self.lookup.append(idx)
            self.tgt_pos.append([])
            self.tgt_ids.append([])


class _View:
    """The forward of a subset of requests (``members``), and what its loss reads.

    Arguments:
        members: request indices (into the chunk) whose rows are run.
    """

    def __init__(self, loaded, rows: _Rows, h_lower: Tensor, input_ids: Tensor, mask: Tensor,
                 members: list[int], layer: int, cached: bool):
        dev, per = loaded.device, rows.per
        sel = [i * per + j for i in members for j in range(per)]
        self.members, self.cached, self.loaded, self.layer = members, cached, loaded, layer
        self.n_t = per - 1
        m = len(members)
        self.owner = torch.arange(m, device=dev).repeat_interleave(per)                 # [R]
        lookup = torch.tensor([rows.lookup[s] for s in sel], device=dev)                 # [R]
        self.mask = mask[sel]                                                            # [R, T]
        tmpl = [k for k in range(len(sel)) if k % per != per - 1]
        self.kl_rows = torch.arange(per - 1, len(sel), per, device=dev)                  # [m]
        self.kl_last = self.mask[self.kl_rows].sum(1) - 1
        self.tmpl_owner = self.owner[tmpl]                                               # [m·n_t]
        # Flattened target positions (row in the view, column, token) for a single gather.
        self.pr = torch.tensor([b for b, s in enumerate(sel) for _ in rows.tgt_pos[s]], device=dev, dtype=torch.long)
        self.pc = torch.tensor([c for s in sel for c in rows.tgt_pos[s]], device=dev, dtype=torch.long)
        self.pt = torch.tensor([t for s in sel for t in rows.tgt_ids[s]], device=dev, dtype=torch.long)
        # Per template row: its index among the template rows, and its number of target tokens.
        row_of_tmpl = torch.full((len(sel),), -1, dtype=torch.long, device=dev)
        row_of_tmpl[tmpl] = torch.arange(len(tmpl), device=dev)
        self.pr_tmpl = row_of_tmpl[self.pr]
        self.tokens_per_row = torch.tensor([len(rows.tgt_pos[s]) for s in sel if rows.tgt_pos[s]],
                                           device=dev, dtype=torch.float32)
        self.lookup = lookup
        if cached:
            self.upper = SuffixForward(loaded, h_lower[sel], self.mask.sum(1), lookup, layer + 1)
            self.at_delta = self.upper.locate(torch.arange(len(sel), device=dev), lookup)
            # What the loss reads: target positions, then each KL row's last token.
            self.at_read = self.upper.locate(torch.cat([self.pr, self.kl_rows]), torch.cat([self.pc, self.kl_last]))
        else:
            self.input_ids = input_ids[sel]

    def log_probs(self, delta: Tensor, unembed) -> tuple[Tensor, Tensor]:
        """Per request, the target NLL and the log-probs after "{subject} is a".

        Arguments:
            delta: one δ per member, ``[m, d]`` (rows of members not moving anymore may be anything).
        Returns:
            ``nll [m]``, ``kl_logp [m, V]``.
        """
        dev = delta.device
        if self.cached:
            # δ enters at each suffix's first token (the subject's last); unembed only what the loss reads.
            up = self.upper
            x = up.suffix.index_put(self.at_delta, delta[self.owner].to(up.suffix.dtype), accumulate=True)
            hs = up.final_hidden(x)                                                   # [n_pack, S, d]
            logp = torch.log_softmax(unembed(hs[self.at_read]).float(), dim=-1)       # [P + m, V]
            tok_lp = logp[torch.arange(len(self.pr), device=dev), self.pt]            # [P]
            kl_logp = logp[len(self.pr):]                                             # [m, V]
        else:  # the seed code's way: full forward, full logits
            h = hidden_after(self.loaded, self.input_ids, self.mask, self.layer)
            rows = torch.arange(h.shape[0], device=dev)
            add = torch.zeros(h.shape, dtype=delta.dtype, device=dev).index_put((rows, self.lookup), delta[self.owner])
            logits = logits_from(self.loaded, h + add.to(h.dtype), self.mask, self.layer + 1).float()  # [R, T, V]
            logp = torch.log_softmax(logits, dim=-1)
            tok_lp = logp[self.pr, self.pc, self.pt]                                  # [P]
            kl_logp = logp[self.kl_rows, self.kl_last]                                # [m, V]
        n_tmpl = len(self.tokens_per_row)
        row_lp = torch.zeros(n_tmpl, device=dev).index_add(0, self.pr_tmpl, tok_lp) / self.tokens_per_row
        m = len(self.members)
        nll = -torch.zeros(m, device=dev).index_add(0, self.tmpl_owner, row_lp) / self.n_t   # [m]
        return nll, kl_logp


def _optimise(loaded, requests: list[EditRequest], layer: int, templates: list[str], cached: bool) -> ValueResult:
    """One chunk: every request optimised on its own loss, stopping on its own NLL."""
    p, tok, model, dev = loaded.preset, loaded.tokenizer, loaded.model, loaded.device
    n = len(requests)
    rows = _Rows(tok, requests, templates)
    input_ids, mask = pad_batch(rows.ids, tok.pad_token_id, dev)
    with torch.no_grad():
        h_lower = hidden_after(loaded, input_ids, mask, layer).detach()         # [R, T, d]
    plain = torch.arange(n, device=dev) * rows.per                              # the "{}" template rows
    z_init = h_lower[plain, torch.tensor(rows.lookup, device=dev)[plain]].float()   # [n, d]
    max_norm = p.clamp_factor * z_init.norm(dim=1, keepdim=True)                # [n, 1]
    init_norm2 = z_init.norm(dim=1) ** 2                                        # [n]
    unembed = loaded.adapter.unembed(model)

    z = z_init.clone()
    nll_hist: list[list[float | None]] = []
    row_steps = [0] * n
    active = list(range(n))                  # requests still optimised (ascending)
    delta = torch.zeros_like(z_init, requires_grad=True)                        # [a, d], one per active
    opt = torch.optim.Adam([delta], lr=p.v_lr)
    kl_init = None                           # [n, V] per request, from its first forward
    view = None
    was_training = model.training
    model.eval()
    try:
        for it in range(p.v_steps):
            if view is None:
                view = _View(loaded, rows, h_lower, input_ids, mask, list(active), layer, cached)
            # The view may still hold requests that stopped; they read a zero δ and are not in the loss.
            slot = [view.members.index(i) for i in active]
            full = torch.zeros(len(view.members), delta.shape[1], dtype=delta.dtype, device=dev)
            full = full.index_put((torch.tensor(slot, device=dev, dtype=torch.long),), delta)   # [m, d]
            nll_v, kl_logp_v = view.log_probs(full, unembed)
            pick = torch.tensor(slot, device=dev, dtype=torch.long)
            nll, kl_logp = nll_v[pick], kl_logp_v[pick]                         # [a], [a, V]
            act_t = torch.tensor(active, device=dev, dtype=torch.long)
            if kl_init is None:
                kl_init = kl_logp.detach()
            kl = F.kl_div(kl_init[act_t], kl_logp, log_target=True, reduction="none").sum(-1)   # [a]
            wd = p.v_weight_decay * delta.norm(dim=1) ** 2 / init_norm2[act_t]
            loss = nll + p.kl_factor * kl + wd
            row = [None] * n
            for i, v in zip(active, nll.detach().tolist()):
                row[i] = round(v, 6)
            nll_hist.append(row)
            done = (nll.detach() < EARLY_STOP_NLL) if it < p.v_steps - 1 else torch.ones(len(active), dtype=torch.bool)
            with torch.no_grad():
                z[act_t[done]] = z_init[act_t[done]] + delta[done]
            for k in torch.nonzero(done).flatten().tolist():
                row_steps[active[k]] = it + 1
            if bool(done.all()):
                break
            opt.zero_grad()
            loss[~done].sum().backward()
            opt.step()
            with torch.no_grad():
                scale = (max_norm[act_t] / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
                delta.mul_(scale)
            if bool(done.any()):
                # Stopped requests leave the optimiser (Adam's momentum would keep moving them).
                keep = torch.nonzero(~done).flatten()
                state = opt.state[delta]
                delta = delta.detach()[keep].clone().requires_grad_(True)
                opt = torch.optim.Adam([delta], lr=p.v_lr)
                opt.state[delta] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"][keep].clone(),
                                    "exp_avg_sq": state["exp_avg_sq"][keep].clone()}
                active = [active[k] for k in keep.tolist()]
                if len(active) < REBUILD_BELOW * len(view.members):
                    view = None
    finally:
        model.train(was_training)
    # A request that stopped keeps its last NLL in later steps.
    losses, last = [], [float("nan")] * n
    for row in nll_hist:
        last = [v if v is not None else last[i] for i, v in enumerate(row)]
        losses.append(list(last))
    return ValueResult(z=z.detach(), z_init=z_init, losses=losses, steps=max(row_steps), row_steps=row_steps)
