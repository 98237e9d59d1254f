"""Partial forwards (otelab.models.forward) agree with the model's own full forward, on every architecture."""
from __future__ import annotations

import pytest
import torch

from otelab.engine.keys import pad_batch
from otelab.models.forward import SuffixForward, hidden_after, logits_from, w_out_inputs

TEXTS = ["Alice Smith lives in the city of", "The capital of Norway is", "Bob plays"]   # uneven lengths


def _batch(lm, texts=TEXTS):
    """Right-padded ids and mask ``[B, T]`` and the real lengths ``[B]``."""
    rows = [lm.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    ids, mask = pad_batch(rows, lm.tokenizer.pad_token_id, lm.device)
    return ids, mask, mask.sum(1)


def _full(lm, ids, mask):
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)


def _close(a, b, mask):
    """Equal at the real (unpadded) positions."""
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hidden_after_is_the_full_forwards_hidden_state(tiny_any, layer):
    ids, mask, _ = _batch(tiny_any)
    with torch.no_grad():
        h = hidden_after(tiny_any, ids, mask, layer)                     # [B, T, d]
    _close(h, _full(tiny_any, ids, mask).hidden_states[layer + 1], mask)


def test_hidden_after_stops_at_the_layer(tiny_llama):
    ids, mask, _ = _batch(tiny_llama)
    calls = []
    blocks = tiny_llama.adapter.blocks(tiny_llama.model)
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            hidden_after(tiny_llama, ids, mask, 1)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]


@pytest.mark.parametrize("start", [1, 2, 3])
def test_logits_from_a_cached_state_equal_the_full_logits(tiny_any, start):
    # GPT-2 adds learned position embeddings below block 0: a second addition would show here
    ids, mask, _ = _batch(tiny_any)
    full = _full(tiny_any, ids, mask)
    with torch.no_grad():
        logits = logits_from(tiny_any, full.hidden_states[start], mask, start)   # [B, T, vocab]
    _close(logits, full.logits, mask)
    assert len(tiny_any.adapter.blocks(tiny_any.model)) == 4                    # the block list is restored


def test_block_list_restored_after_an_error(tiny_llama):
    ids, mask, _ = _batch(tiny_llama)
    before = tiny_llama.adapter.blocks(tiny_llama.model)
    with pytest.raises(Exception):
        logits_from(tiny_llama, torch.zeros(1, 2, 3), mask, 1)                  # wrong width
    assert tiny_llama.adapter.blocks(tiny_llama.model) is before


def test_w_out_inputs_are_the_hooked_mlp_inputs(tiny_any):
    ids, mask, _ = _batch(tiny_any)
    seen = {}
    hooks = [tiny_any.adapter.w_out_module(tiny_any.model, l).register_forward_pre_hook(
        lambda m, a, l=l: seen.__setitem__(l, a[0].detach().clone())) for l in (1, 2)]
    try:
        _full(tiny_any, ids, mask)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        got = w_out_inputs(tiny_any, ids, mask, [1, 2])
    assert sorted(got) == [1, 2]
    d_i = tiny_any.adapter.get_W(tiny_any.model, 1).shape[1]
    for l in (1, 2):
        assert got[l].shape == (*ids.shape, d_i)                                  # [B, T, d_i]
        _close(got[l], seen[l], mask)


@pytest.mark.parametrize("pack_tokens", [4, 64])
def test_suffix_forward_equals_the_full_forward_on_the_suffixes(tiny_any, pack_tokens):
    ids, mask, lengths = _batch(tiny_any)
    start = 2
    split = torch.tensor([3, 0, 1])                                               # row 1: no prefix at all
    full = _full(tiny_any, ids, mask)
    with torch.no_grad():
        ref = tiny_any.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        sf = SuffixForward(tiny_any, full.hidden_states[start], lengths, split, start, pack_tokens=pack_tokens)
        out = sf.final_hidden(sf.suffix)                                          # [n_pack, S, d]
    for b in range(len(TEXTS)):
        pos = torch.arange(int(split[b]), int(lengths[b]))
        pack, col = sf.locate(torch.full_like(pos, b), pos)
        torch.testing.assert_close(out[pack, col], ref[b, pos], rtol=1e-4, atol=1e-5)


def test_suffix_forward_without_prefixes(tiny_llama):
    ids, mask, lengths = _batch(tiny_llama)
    full = _full(tiny_llama, ids, mask)
    with torch.no_grad():
        ref = tiny_llama.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        sf = SuffixForward(tiny_llama, full.hidden_states[1], lengths, torch.zeros(3, dtype=torch.long), 1)
        out = sf.final_hidden(sf.suffix)
    assert sf.kv == []
    for b in range(len(TEXTS)):
        pos = torch.arange(int(lengths[b]))
        pack, col = sf.locate(torch.full_like(pos, b), pos)
        torch.testing.assert_close(out[pack, col], ref[b, pos], rtol=1e-4, atol=1e-5)
