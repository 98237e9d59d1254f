"""Partial forward passes: stop after a layer, or start from a cached hidden state.

The value optimisation only perturbs the residual stream at the last edited
layer, so the layers below it are computed once and the optimisation runs only
the layers above. The covariance and the keys only need the layers up to the
edited ones, so those forwards stop early. Both work for every adapter by
swapping the model's block list for a slice of it; nothing architecture
specific is re-implemented.
"""
from __future__ import annotations

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


def final_hidden_from(loaded, hidden: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Like :func:`logits_from` but stop before the unembedding (after the final norm).

    The value optimisation needs logits at a few positions only; unembedding
    just those rows avoids most of the ``[B, T, vocab]`` work.

    Returns:
        ``[B, T, d_model]``.
    """
    with _only_blocks(loaded, start):
        return loaded.model.base_model(inputs_embeds=hidden, attention_mask=attention_mask,
                                       use_cache=False).last_hidden_state


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
