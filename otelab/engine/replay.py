"""Keys for a whole step in one pass over the edited layers (the fast replay).

MEMIT edits the layers ``l_1 < … < l_L`` of a step one after the other: the keys
of layer ``l_i`` and the current hidden state at the value layer are taken on
the model whose layers below ``l_i`` already carry this step's updates. The
straightforward way (:func:`otelab.engine.keys.compute_keys` and
:func:`otelab.engine.keys.subject_hidden`) runs a fresh forward from the embeddings
for every layer. This module gets the same numbers with far less work:

* **Prompts end at the subject.** A key is read at the subject's last token,
  and causal attention cannot look ahead, so each row is cut there.
* **Context prefixes are shared.** Every request is averaged over the same few
  context templates (``"<prefix>. {}"``). Each prefix runs once per block, as its
  own short row; the requests' rows attend to its cached keys/values, so they
  carry only their own tokens (about a third of the tokens of a full row).
* **Blocks below the first edited layer never change**, so the states that
  enter it are cached per prompt (bounded LRU) and per prefix.
* **One block at a time, updated in place.** Block ``l_i`` runs once with its
  old ``W``; its MLP input at the subject's last token is the key. Once the
  caller has solved for ``Δ_i``, the block's output becomes
  ``h_out + act Δ_iᵀ`` (``W_out``'s output enters the residual stream
  unchanged in every supported architecture: GPT-2, GPT-J, LLaMA, Qwen2; the
  engine's equivalence test checks it on each), which is exactly what block
  ``l_i`` gives with its new ``W``. The current hidden state at the value layer
  runs the plain prompts (no prefix) through the blocks above ``l_i`` only.

Rows are processed in chunks of at most ``chunk_rows``, so the forward's
activation memory does not grow with the batch. What is kept between blocks is
one hidden state per real token (and, at an edited layer, its MLP input).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from otelab.models.forward import _additive, _block_causal, _cache_kwarg, _only_blocks, _Stop, _first
from otelab.engine.keys import fill, subject_last_index
from otelab.data.requests import EditRequest

Tensor = torch.Tensor
Solve = Callable[[int, Tensor, Tensor], Tensor]   # (layer, K [d_i, n], cur [n, d_o]) -> Δ [d_o, d_i]


@dataclass
class _Group:
    """Rows that share one context prefix (``prefix`` −1: no prefix)."""

    prefix: int
    rows: list[int]              # indices into the step's row list
    ids: list[list[int]]         # each row's own tokens (after the prefix), ending at the subject


class _Chunk:
    """Some rows of a group, packed several to a sequence: the unit one block call processes.

    Rows are short and uneven, so instead of padding each to the longest, rows are
    laid end to end in sequences of about ``pack_tokens`` tokens; a block-diagonal
    mask keeps them apart and each token keeps its own position (after the prefix).
    """

    def __init__(self, ids: list[list[int]], P: int, device, pack_tokens: int):
        cap = max(pack_tokens, max(len(r) for r in ids))
        pack, off, k, fill = [], [], -1, cap
        for r in ids:                                      # next-fit, in row order
            if fill + len(r) > cap:
                k, fill = k + 1, 0
            pack.append(k)
            off.append(fill)
            fill += len(r)
        n_pack, S = pack[-1] + 1, max(o + len(r) for o, r in zip(off, ids))
        as_t = lambda x: torch.tensor(x, dtype=torch.long, device=device)
        rb = as_t([b for b, r in enumerate(ids) for _ in r])                   # row of each token
        self.at = (as_t([pack[b] for b, r in enumerate(ids) for _ in r]),
                   as_t([off[b] + t for b, r in enumerate(ids) for t in range(len(r))]))   # where it sits
        seg = torch.full((n_pack, S), -1, dtype=torch.long, device=device)
        pos = torch.zeros((n_pack, S), dtype=torch.long, device=device)
        seg[self.at] = rb
        pos[self.at] = as_t([t for r in ids for t in range(len(r))])
        self.tokens = torch.zeros((n_pack, S), dtype=torch.long, device=device)
        self.tokens[self.at] = as_t([t for r in ids for t in r])              # [n_pack, S]
        see_prefix = (seg >= 0)[:, :, None].expand(-1, -1, P)                  # [n_pack, S, P]
        self.allowed = torch.cat([see_prefix, _block_causal(seg, pos)], -1)[:, None]   # [n_pack, 1, S, P+S]
        self.positions = pos + P                                               # [n_pack, S]
        self.ids, self.n_pack = ids, n_pack
        self.spans = [(pack[b], off[b], len(r)) for b, r in enumerate(ids)]
        self.last = (as_t(pack), as_t([o + len(r) - 1 for o, r in zip(off, ids)]))   # each row's subject token


class LayerwiseKeys:
    """Compute a step's keys layer by layer while the caller edits (see the module docstring).

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel`.
        templates: the context templates (``"{}"`` and ``"<prefix>. {}"``).
        layers: the edited layers, ascending.
        z_layer: the layer whose output the values target (``max(layers)``).
        chunk_rows: rows per block call (bounds the activation memory).
        pack_tokens: tokens per packed sequence.
        cache_prompts: how many (template, prompt) states entering the first edited
            layer to keep for re-use (undo and re-step, the workbench).

    Example (a tiny random model)::

        >>> from otelab.models.loading import tiny_model
        >>> from otelab.engine.keys import context_templates
        >>> lm = tiny_model("llama")
        >>> lk = LayerwiseKeys(lm, context_templates(lm), lm.layers, max(lm.layers))
        >>> got = {}
        >>> def solve(layer, K, cur):
        ...     got[layer] = K.shape
        ...     return torch.zeros(lm.adapter.get_W(lm.model, layer).shape)
        >>> lk.run([EditRequest("{} lives in", "Alice", "Paris")], solve)
        >>> got[lm.layers[0]]
        torch.Size([192, 1])
    """

    def __init__(self, loaded, templates: Sequence[str], layers: Sequence[int], z_layer: int, *,
                 chunk_rows: int = 512, pack_tokens: int = 64, cache_prompts: int = 4096):
        self.loaded, self.templates = loaded, list(templates)
        self.layers, self.z_layer = sorted(layers), int(z_layer)
        if self.z_layer < self.layers[-1]:
            raise ValueError(f"the value layer {z_layer} lies below the edited layer {self.layers[-1]}")
        self.chunk_rows, self.pack_tokens = int(chunk_rows), int(pack_tokens)
        self.cache_prompts = int(cache_prompts)
        self._below: OrderedDict[tuple, Tensor] = OrderedDict()   # (prefix, ids) -> [T, d] entering l_1
        tok = loaded.tokenizer
        self._prefix_ids: list[list[int]] = []        # one per template with a prefix
        self._template_prefix: list[int] = []         # template -> prefix index (−1: none)
        for t in self.templates:
            head = t[:t.index("{}")].rstrip()
            if head:
                self._template_prefix.append(len(self._prefix_ids))
                self._prefix_ids.append(tok(head, add_special_tokens=True)["input_ids"])
            else:
                self._template_prefix.append(-1)
        self._prefix_below: tuple[Tensor, list] | None = None   # prefix states entering l_1, and KV below
        if "{}" not in self.templates:
            raise ValueError("the templates must include the plain prompt '{}' (the values' reference)")
        self._plain = self.templates.index("{}")

    # ------------------------------------------------------------------ blocks
    def _block(self, b: int, h: Tensor, allowed: Tensor, positions: Tensor, kv=None, keep_kv=False):
        """Run block ``b`` alone; returns (output, W_out input, this block's key/value cache or None)."""
        from transformers import DynamicCache

        lm = self.loaded
        base = lm.model.base_model
        box: dict = {}
        block = lm.adapter.block(lm.model, b)
        w_out = lm.adapter.w_out_module(lm.model, b)

        def grab_act(module, inputs):
            box["act"] = inputs[0]

        def stop(module, inputs, output):
            box["out"] = _first(output)
            raise _Stop

        cache = None
        kw = {"position_ids": positions, "use_cache": kv is not None or keep_kv}
        if kw["use_cache"]:
            cache = DynamicCache()
            if kv is not None:
                cache.update(kv[0], kv[1], b)
            kw[_cache_kwarg(base)] = cache
        handles = [w_out.register_forward_pre_hook(grab_act), block.register_forward_hook(stop)]
        try:
            with _only_blocks(lm, b):
                base(inputs_embeds=h, attention_mask=_additive(allowed, h.dtype), **kw)
        except _Stop:
            pass
        finally:
            for hd in handles:
                hd.remove()
        new_kv = (cache.layers[b].keys, cache.layers[b].values) if keep_kv else None
        return box["out"], box["act"], new_kv

    def _prefix_masks(self, device):
        P = max(len(p) for p in self._prefix_ids)
        lengths = torch.tensor([len(p) for p in self._prefix_ids], device=device)
        real = torch.arange(P, device=device)[None] < lengths[:, None]
        seg = torch.where(real, torch.arange(len(lengths), device=device)[:, None], -1)
        pos = torch.arange(P, device=device).expand(len(lengths), P)
        return _block_causal(seg, pos)[:, None], pos, lengths

    def _prefix_state(self):
        """The prefixes' states entering the first edited layer, and their KV in every block below."""
        if self._prefix_below is None:
            lm = self.loaded
            dev = lm.device
            allowed, pos, lengths = self._prefix_masks(dev)
            ids = torch.full((len(self._prefix_ids), allowed.shape[-1]), lm.tokenizer.pad_token_id, device=dev)
            for j, p in enumerate(self._prefix_ids):
                ids[j, :len(p)] = torch.tensor(p, device=dev)
            h = lm.adapter.embed(lm.model)(ids)
            h = h + self._learned_positions(pos)
            kvs = []
            for b in range(self.layers[0]):
                h, _, kv = self._block(b, h, allowed, pos, keep_kv=True)
                kvs.append(kv)
            self._prefix_below = (h, kvs)
        return self._prefix_below

    def _learned_positions(self, pos: Tensor) -> Tensor:
        """GPT-2 adds learned position embeddings to the token embeddings; rotary models add nothing."""
        wpe = getattr(getattr(self.loaded.model, "transformer", None), "wpe", None)
        return wpe(pos) if wpe is not None else torch.zeros((), device=pos.device)

    # ------------------------------------------------------------------ rows
    def _rows(self, requests: Sequence[EditRequest]) -> tuple[list[_Group], list[int]]:
        """Cut every (request, template) row at the subject; group rows by shared prefix.

        Returns:
            the groups, and each row's template index (row ``i·n_t + j``).
        """
        tok = self.loaded.tokenizer
        n_t = len(self.templates)
        groups = {p: _Group(p, [], []) for p in range(-1, len(self._prefix_ids))}
        for i, r in enumerate(requests):
            for j, t in enumerate(self.templates):
                text, end = fill(t, r)
                ids, idx = subject_last_index(tok, text, end)
                ids = ids[:idx + 1]
                p = self._template_prefix[j]
                pre = self._prefix_ids[p] if p >= 0 else []
                if p >= 0 and (len(ids) <= len(pre) or ids[:len(pre)] != pre):
                    p, pre = -1, []   # the tokeniser merged across the boundary: run the row whole
                groups[p].rows.append(i * n_t + j)
                groups[p].ids.append(ids[len(pre):])
        return [g for g in groups.values() if g.rows], [j for _ in requests for j in range(n_t)]

    def _chunks(self, g: _Group) -> list[tuple[list[int], _Chunk]]:
        P = len(self._prefix_ids[g.prefix]) if g.prefix >= 0 else 0
        dev = self.loaded.device
        out = []
        for s in range(0, len(g.rows), self.chunk_rows):
            out.append((g.rows[s:s + self.chunk_rows],
                        _Chunk(g.ids[s:s + self.chunk_rows], P, dev, self.pack_tokens)))
        return out

    def _enter_first(self, g: _Group, ch: _Chunk, prefix_kv: list) -> Tensor:
        """States entering the first edited layer ``[n_pack, S, d]`` (from the LRU cache where possible)."""
        lm = self.loaded
        keys = [(g.prefix, tuple(r)) for r in ch.ids]
        if all(k in self._below for k in keys):
            rows = [self._below[k] for k in keys]
            h = rows[0].new_zeros(ch.n_pack, ch.tokens.shape[1], rows[0].shape[-1])
            h[ch.at] = torch.cat(rows)
            for k in keys:
                self._below.move_to_end(k)
            return h
        h = lm.adapter.embed(lm.model)(ch.tokens) + self._learned_positions(ch.positions)   # [n_pack, S, d]
        for b in range(self.layers[0]):
            kv = self._expand(prefix_kv[b], g.prefix, ch.n_pack) if g.prefix >= 0 else None
            h, _, _ = self._block(b, h, ch.allowed, ch.positions, kv)
        for k, (p, o, n) in zip(keys, ch.spans):
            self._below[k] = h[p, o:o + n].clone()
            self._below.move_to_end(k)
        while len(self._below) > self.cache_prompts:
            self._below.popitem(last=False)
        return h

    def _expand(self, kv, prefix: int, B: int):
        """One prefix's cached keys/values, repeated for ``B`` rows: ``[B, heads, P_j, d_head]`` each."""
        n = len(self._prefix_ids[prefix])
        return tuple(t[prefix:prefix + 1, :, :n].expand(B, -1, -1, -1) for t in kv)

    # ------------------------------------------------------------------ the pass
    @torch.no_grad()
    def run(self, requests: Sequence[EditRequest], solve: Solve) -> None:
        """Walk the edited layers; at each, hand its keys and current values to ``solve``.

        Arguments:
            requests: the step's (validated) requests.
            solve: ``solve(layer, K, cur) -> Δ``, called once per edited layer in
                ascending order, with ``K`` the keys ``[d_i, n]`` (averaged over the
                templates) and ``cur`` the hidden state after the value layer at the
                subject's last token of the plain prompts ``[n, d_o]``, both taken on
                the model with this step's earlier layers already edited. It must
                write ``Δ`` ``[d_o, d_i]`` into the model (it is the engine's solve)
                and return it.
        """
        lm = self.loaded
        groups, template_of = self._rows(requests)
        n, n_t = len(requests), len(self.templates)
        hp, prefix_kv = self._prefix_state() if self._prefix_ids else (None, [])
        p_allowed, p_pos, _ = self._prefix_masks(lm.device) if self._prefix_ids else (None, None, None)
        parts = [(g, rows, ch, self._enter_first(g, ch, prefix_kv)) for g in groups for rows, ch in self._chunks(g)]
        plain = [k for k, (g, rows, ch, h) in enumerate(parts) if g.prefix == -1]
        is_plain = torch.tensor([j == self._plain for j in template_of], device=lm.device)
        for b in range(self.layers[0], self.layers[-1] + 1):
            kv_b = None
            if hp is not None:
                hp_out, hp_act, kv_b = self._block(b, hp, p_allowed, p_pos, keep_kv=True)
            outs, acts = [], []
            for g, rows, ch, h in parts:
                kv = self._expand(kv_b, g.prefix, ch.n_pack) if g.prefix >= 0 else None
                out, act, _ = self._block(b, h, ch.allowed, ch.positions, kv)
                outs.append(out)
                acts.append(act)
            if b in self.layers:
                d_i = acts[0].shape[-1]
                K = torch.zeros(n * n_t, d_i, dtype=acts[0].dtype, device=lm.device)   # [n·n_t, d_i]
                for (g, rows, ch, h), act in zip(parts, acts):
                    K[torch.tensor(rows, device=lm.device)] = act[ch.last]
                K = K.view(n, n_t, d_i).mean(1).T                                       # [d_i, n]
                cur = self._current(b, [(parts[k], outs[k]) for k in plain], is_plain, n)  # [n, d_o]
                delta = solve(b, K, cur).to(acts[0].dtype)                              # [d_o, d_i]
                outs = [o + a @ delta.T for o, a in zip(outs, acts)]
                if hp is not None:
                    hp_out = hp_out + hp_act @ delta.T
            parts = [(g, rows, ch, o) for (g, rows, ch, _), o in zip(parts, outs)]
            if hp is not None:
                hp = hp_out

    def _current(self, b: int, plain_parts, is_plain: Tensor, n: int) -> Tensor:
        """Hidden state after ``z_layer`` at the plain prompts' subject, given block ``b``'s old output."""
        lm = self.loaded
        n_t = len(self.templates)
        cur = None
        for (g, rows, ch, _), h in plain_parts:
            for c in range(b + 1, self.z_layer + 1):
                h, _, _ = self._block(c, h, ch.allowed, ch.positions)
            rows_t = torch.tensor(rows, device=lm.device)
            keep = is_plain[rows_t]
            if cur is None:
                cur = torch.zeros(n, h.shape[-1], dtype=h.dtype, device=lm.device)   # [n, d_o]
            cur[rows_t[keep] // n_t] = h[ch.last][keep]
        return cur
