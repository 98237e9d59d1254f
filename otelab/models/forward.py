"""Partial forward passes: stop after a layer, or start from a cached hidden state.

The value optimisation only perturbs the residual stream at the last edited
layer, so the layers below it are computed once and the optimisation runs only
the layers above; and since causal attention cannot carry the perturbation
backwards, the positions before it are also run once (:class:`SuffixForward`).
The covariance and the keys only need the layers up to the edited ones, so
those forwards stop early. All of it works for every adapter by swapping the
model's block list for a slice of it and using the library's own key/value
cache; nothing architecture specific is re-implemented.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

Tensor = torch.Tensor


class _Stop(Exception):
    """Raised from a hook to end a forward pass early."""


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _parent_of(model: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for name, module in model.named_modules():
        if module is target:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr
    raise RuntimeError("the block list is not a sub-module of the model")


@contextmanager
def _only_blocks(loaded, start: int) -> Iterator[None]:
    """Temporarily keep blocks ``start:`` only, and make the embedding an identity.

    The caller passes the cached hidden state as ``inputs_embeds``; learned
    position embeddings (GPT-2's ``wpe``) were already added below, so they are
    zeroed for the duration.
    """
    model = loaded.model
    blocks = loaded.adapter.blocks(model)
    parent, attr = _parent_of(model, blocks)
    setattr(parent, attr, torch.nn.ModuleList(list(blocks)[start:]))
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    hook = wpe.register_forward_hook(lambda m, i, out: torch.zeros_like(out)) if wpe is not None else None
    try:
        yield
    finally:
        setattr(parent, attr, blocks)
        if hook is not None:
            hook.remove()


def hidden_after(loaded, input_ids: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
    """The residual stream after block ``layer``; the forward stops there.

    Returns:
        ``[B, T, d_model]``.
    """
    block = loaded.adapter.block(loaded.model, layer)
    box = {}

    def hook(module, inputs, output):
        box["h"] = _first(output)
        raise _Stop

    handle = block.register_forward_hook(hook)
    try:
        loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box["h"]


def logits_from(loaded, hidden: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Run blocks ``start:`` (then the final norm and unembedding) on a hidden state.

    Arguments:
        hidden: the residual stream entering block ``start`` ``[B, T, d_model]``.
        attention_mask: ``[B, T]``, the same as for the forward that produced ``hidden``.
    Returns:
        logits ``[B, T, vocab]``.
    """
    with _only_blocks(loaded, start):
        return loaded.model(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).logits


def w_out_inputs(loaded, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """The inputs of W_out (the keys) at every position, for each layer; stops after the last.

    Returns:
        ``{layer: [B, T, d_i]}``.
    """
    adapter, model = loaded.adapter, loaded.model
    out: dict[int, Tensor] = {}
    last = max(layers)
    handles = []

    def make(layer):
        def hook(module, inputs):
            out[layer] = inputs[0]
            if layer == last:
                raise _Stop
        return hook

    for layer in layers:
        handles.append(adapter.w_out_module(model, layer).register_forward_pre_hook(make(layer)))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


def _cache_kwarg(module: torch.nn.Module) -> str:
    """The name under which this transformers version takes a key/value cache."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean "may attend" mask as the additive float mask every attention backend accepts."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def _block_causal(seg: Tensor, pos: Tensor) -> Tensor:
    """In packed rows, who may attend to whom: earlier tokens of the same row.

    A pad (``seg`` −1) sees only itself, so no attention row is empty (no NaN).

    Arguments:
        seg: the row each token belongs to, −1 for pads ``[n_pack, W]``.
        pos: each token's position in its row ``[n_pack, W]``.
    Returns:
        ``[n_pack, W, W]`` booleans, query by key.
    """
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    return (same & (pos[:, None, :] <= pos[:, :, None])) | eye


class SuffixForward:
    """Blocks ``start:`` run on each row's suffix only; the prefixes' keys and values are computed once.

    A change to the residual stream at position ``split[b]`` of row ``b`` cannot reach the
    positions before it: attention is causal. So in every block above, those positions'
    keys and values are constants. They are computed once here (one forward of the prefixes
    that fills the library's key/value cache), and each later call runs only the suffixes
    ``[split[b], lengths[b])`` against them. The value optimisation perturbs the subject's
    last token, so its per-step forward shrinks to the tokens from the subject on.

    Suffixes are short and of uneven length, so rather than padding each to the longest,
    several rows are packed into one sequence of about ``pack_tokens`` tokens; a
    block-diagonal mask keeps the rows apart and each token keeps its own position.

    Arguments:
        loaded: a :class:`otelab.models.loading.LoadedModel`.
        hidden: the residual stream entering block ``start`` ``[B, T, d_model]`` (right-padded).
        lengths: real tokens per row ``[B]``.
        split: per row, the first position whose state may change ``[B]``.
        start: the first block to run.
        pack_tokens: suffix tokens per packed sequence (at least the longest suffix).
    """

    def __init__(self, loaded, hidden: Tensor, lengths: Tensor, split: Tensor, start: int,
                 pack_tokens: int = 64):
        self.loaded, self.start = loaded, start
        dev, d = hidden.device, hidden.shape[-1]
        lengths, split = lengths.tolist(), split.tolist()
        n_suf = [n - s for n, s in zip(lengths, split)]
        cap = max(pack_tokens, max(n_suf))
        # Next-fit packing in row order: each row's pack, and its offsets in the suffix and prefix packs.
        self._pack, self._off, pre_off = [], [], []
        pack, fill, pre_fill = -1, cap, 0
        for n, s in zip(n_suf, split):
            if fill + n > cap:
                pack, fill, pre_fill = pack + 1, 0, 0
            self._pack.append(pack)
            self._off.append(fill)
            pre_off.append(pre_fill)
            fill, pre_fill = fill + n, pre_fill + s
        self._split = split
        n_pack = pack + 1
        S = max(o + n for o, n in zip(self._off, n_suf))
        P = max(o + s for o, s in zip(pre_off, split))

        def layout(width, offsets, counts, firsts):
            """Index lists that move row b's positions firsts[b] + i (i < counts[b]) into a pack."""
            rb, rt, pk, pt = [], [], [], []
            for b, (o, c, f) in enumerate(zip(offsets, counts, firsts)):
                rb += [b] * c
                rt += range(f, f + c)
                pk += [self._pack[b]] * c
                pt += range(o, o + c)
            as_t = lambda x: torch.tensor(x, dtype=torch.long, device=dev)
            seg = torch.full((n_pack, width), -1, dtype=torch.long, device=dev)
            pos = torch.zeros((n_pack, width), dtype=torch.long, device=dev)
            seg[as_t(pk), as_t(pt)] = as_t(rb)
            pos[as_t(pk), as_t(pt)] = as_t(rt)
            return (as_t(rb), as_t(rt)), (as_t(pk), as_t(pt)), seg, pos

        src, dst, seg_s, self.positions = layout(S, self._off, n_suf, split)     # [n_pack, S]
        self.suffix = hidden.new_zeros(n_pack, S, d).index_put(dst, hidden[src])  # [n_pack, S, d]
        causal_s = _block_causal(seg_s, self.positions)                          # [n_pack, S, S]
        self.kv: list[tuple[int, Tensor, Tensor]] = []
        if P == 0:
            self.mask = _additive(causal_s[:, None], hidden.dtype)             # [n_pack, 1, S, S]
            return
        src_p, dst_p, seg_p, pos_p = layout(P, pre_off, split, [0] * len(split))   # [n_pack, P]
        prefix = hidden.new_zeros(n_pack, P, d).index_put(dst_p, hidden[src_p])   # [n_pack, P, d]
        causal_p = _block_causal(seg_p, pos_p)                                   # [n_pack, P, P]
        see_prefix = (seg_s[:, :, None] == seg_p[:, None, :]) & (seg_s[:, :, None] >= 0)   # [n_pack, S, P]
        self.mask = _additive(torch.cat([see_prefix, causal_s], -1)[:, None], hidden.dtype)  # [n_pack,1,S,P+S]
        from transformers import DynamicCache

        cache = DynamicCache()
        base = loaded.model.base_model
        with torch.no_grad(), _only_blocks(loaded, start):
            base(inputs_embeds=prefix, attention_mask=_additive(causal_p[:, None], hidden.dtype),
                 position_ids=pos_p, use_cache=True, **{_cache_kwarg(base): cache})
        n_blocks = len(loaded.adapter.blocks(loaded.model))
        self.kv = [(i, cache.layers[i].keys, cache.layers[i].values) for i in range(start, n_blocks)]

    def locate(self, rows: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Where position ``positions[k]`` of row ``rows[k]`` sits in :attr:`suffix`.

        Arguments:
            rows, positions: ``[m]``; each position at or after its row's split.
        Returns:
            ``(pack, column)`` index tensors ``[m]``, for indexing ``[n_pack, S, ...]`` tensors.
        """
        as_t = lambda x: torch.tensor(x, device=rows.device)[rows]
        return as_t(self._pack), as_t(self._off) + positions - as_t(self._split)

    def final_hidden(self, suffix: Tensor) -> Tensor:
        """Run blocks ``start:`` and the final norm on (a perturbed copy of) :attr:`suffix`.

        Arguments:
            suffix: ``[n_pack, S, d_model]``, laid out as :attr:`suffix`.
        Returns:
            ``[n_pack, S, d_model]``; index it with :meth:`locate`.
        """
        from transformers import DynamicCache

        base = self.loaded.model.base_model
        kw = {"position_ids": self.positions, "use_cache": bool(self.kv)}
        if self.kv:
            cache = DynamicCache()
            for i, k, v in self.kv:   # a fresh cache per call: the forward appends to it
                cache.update(k, v, i)
            kw[_cache_kwarg(base)] = cache
        with _only_blocks(self.loaded, self.start):
            return base(inputs_embeds=suffix, attention_mask=self.mask, **kw).last_hidden_state
