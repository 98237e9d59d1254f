"""Keys (otelab.engine.keys): the input of W_out at the subject's last token, averaged over context templates."""
from __future__ import annotations

import pytest
import torch

from otelab.data.requests import EditRequest
from otelab.engine.keys import (compute_keys, context_templates, encode, fill, pad_batch, subject_hidden,
                                subject_last_index)


def _hooked_w_out_input(lm, text: str, layer: int) -> torch.Tensor:
    """The input of layer ``layer``'s W_out at every position of one unpadded prompt ``[T, d_i]``."""
    seen = {}
    handle = lm.adapter.w_out_module(lm.model, layer).register_forward_pre_hook(
        lambda m, a: seen.__setitem__("k", a[0][0].detach().clone()))
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([lm.tokenizer(text)["input_ids"]]), use_cache=False)
    finally:
        handle.remove()
    return seen["k"]


def _subject_last(lm, text: str, subject_end: int) -> int:
    """The subject's last token, counted independently: the tokens of the text up to the subject's end."""
    return len(lm.tokenizer(text[:subject_end])["input_ids"]) - 1


def test_fill_puts_the_subject_into_the_template():
    r = EditRequest("{} lives in the city of", "Alice Smith", "Paris")
    assert fill("{}", r) == ("Alice Smith lives in the city of", 11)
    text, end = fill("The day. {}", r)
    assert text == "The day. Alice Smith lives in the city of" and text[:end].endswith("Alice Smith")
    text, end = fill("{}", EditRequest("The capital of {} is", "Norway", "Rome"))
    assert text[:end] == "The capital of Norway"


@pytest.mark.parametrize("layer", [1, 2])
def test_keys_at_the_subjects_last_token_equal_the_hooked_mlp_input(tiny_any, edit_requests, layer):
    K = compute_keys(tiny_any, edit_requests, layer, templates=["{}"])            # [d_i, n]
    assert K.shape == (tiny_any.adapter.get_W(tiny_any.model, layer).shape[1], len(edit_requests))
    for j, r in enumerate(edit_requests):
        text, end = fill("{}", r)
        k = _hooked_w_out_input(tiny_any, text, layer)[_subject_last(tiny_any, text, end)]
        torch.testing.assert_close(K[:, j], k, rtol=1e-4, atol=1e-5)


def test_keys_average_over_the_templates(tiny_llama, edit_requests):
    templates = ["{}", "The day. {}", "Because of it. {}"]
    K = compute_keys(tiny_llama, edit_requests, 1, templates=templates)
    each = torch.stack([compute_keys(tiny_llama, edit_requests, 1, templates=[t]) for t in templates])
    torch.testing.assert_close(K, each.mean(0), rtol=1e-4, atol=1e-5)


def test_keys_do_not_depend_on_batch_mates(tiny_llama, edit_requests):
    # right padding and the attention mask: a short prompt batched with long ones keys as it does alone
    K = compute_keys(tiny_llama, edit_requests, 2, templates=["{}"])
    for j, r in enumerate(edit_requests):
        torch.testing.assert_close(K[:, j:j + 1], compute_keys(tiny_llama, [r], 2, templates=["{}"]),
                                   rtol=1e-4, atol=1e-5)


def test_subject_hidden_is_the_residual_at_the_subjects_last_token(tiny_any, edit_requests):
    h = subject_hidden(tiny_any, edit_requests, 2)                                  # [n, d_model]
    for j, r in enumerate(edit_requests):
        text, end = fill("{}", r)
        ids = torch.tensor([tiny_any.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            full = tiny_any.model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[3]
        torch.testing.assert_close(h[j], full[0, _subject_last(tiny_any, text, end)], rtol=1e-4, atol=1e-5)


def test_encode_is_request_major(tiny_llama, edit_requests):
    templates = ["{}", "The day. {}"]
    enc = encode(tiny_llama, edit_requests[:2], templates)
    assert enc.input_ids.shape[0] == 4 and enc.attention_mask.shape == enc.input_ids.shape
    for row, (r, t) in enumerate([(r, t) for r in edit_requests[:2] for t in templates]):
        text, end = fill(t, r)
        assert int(enc.lengths[row]) == len(tiny_llama.tokenizer(text)["input_ids"])
        assert int(enc.subject_last[row]) == _subject_last(tiny_llama, text, end)


def test_subject_last_index_refuses_an_offset_outside_the_text(tiny_llama):
    with pytest.raises(ValueError, match="subject's last token"):
        subject_last_index(tiny_llama.tokenizer, "Bob plays", 100)


def test_pad_batch_pads_right():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_context_templates_are_deterministic_and_start_with_the_plain_prompt(make_tiny):
    a, b = context_templates(make_tiny("llama")), context_templates(make_tiny("llama"))
    assert a == b and a[0] == "{}"
    n = sum(count for _, count in make_tiny("llama").preset.context_templates)
    assert len(a) == 1 + n and all(t.endswith(". {}") and t.count("{}") == 1 for t in a[1:])
