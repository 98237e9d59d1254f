"""The subject's last token: one rule (otelab.models.tokens.last_overlapping) for keys, values and latent states.

- :func:`otelab.engine.keys.subject_last_index` (keys and values): the text tokenised WITH
  special tokens.
- :func:`otelab.eval.batching.subject_last_token` (latent drift): the text tokenised WITHOUT
  special tokens, plus the leading special tokens.

Both take the LAST token overlapping the subject (ROME's rule). Until this rule was shared the
keys took the FIRST token holding the subject's last character, which differs when a byte-level
tokenizer splits that character (the tiny tokenizer's "é" of "Pelé"); under the SmolLM2 tokenizer
the two rules agree on every fact-bank and CounterFact prompt, so no recorded number moved.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from otelab.data.loaders import load_counterfact, load_factbank
from otelab.engine.keys import subject_last_index
from otelab.eval.batching import encode_many, lead_ids, subject_last_token
from otelab.eval.records import fill_subject
from otelab.models.loading import tiny_tokenizer

# subjects ending in a character outside ASCII, in CounterFact's style
NON_ASCII = [("{} professionally plays the sport of", "Pelé"), ("{} is a twin city of", "Hokkaidō"),
             ("The capital of {} is", "São Tomé"), ("{} is located in", "Zürich")]


def _records() -> list[tuple[str, str]]:
    """(template, subject) of the fact bank, the first 1000 CounterFact edits when the data is there, NON_ASCII."""
    pairs = [(r.prompt, r.subject) for r in load_factbank()]
    if os.environ.get("OTELAB_DATA_DIR"):
        try:
            pairs += [(r.prompt, r.subject) for r in load_counterfact(n=1000)]
        except (OSError, ValueError):
            pass
    return pairs + NON_ASCII


def _both(tok, template: str, subject: str) -> tuple[int, int, bool]:
    """(keys' index, evaluation's index, whether the two token sequences are the same)."""
    start = template.index("{}")
    text, end = fill_subject(template, subject), start + len(subject)
    ids, k = subject_last_index(tok, text, end)
    e = len(lead_ids(tok)) + subject_last_token(tok, text, start, end)
    return k, e, ids == encode_many(tok, [text], lead=True)[0]


def _smollm2_tokenizer():
    cache = Path(os.environ.get("OTELAB_CACHE") or Path.home() / ".cache" / "otelab").expanduser()
    root = cache / "models" / "smollm2-135m"
    if not (root / "tokenizer.json").is_file():
        pytest.skip("the SmolLM2 tokenizer is not in the otelab cache")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(root)


def test_finders_agree_everywhere_under_the_smollm2_tokenizer():
    tok = _smollm2_tokenizer()
    for template, subject in _records():
        k, e, same_ids = _both(tok, template, subject)
        assert same_ids, f"{template!r} / {subject!r}: keys and evaluation tokenise the text differently"
        assert k == e, f"{template!r} / {subject!r}: keys take token {k}, the evaluation token {e}"


def test_finders_agree_everywhere_under_the_tiny_tokenizer_and_take_the_last_split_token():
    tok = tiny_tokenizer()  # 384 byte-level tokens: most non-ASCII characters are two tokens
    split = 0
    for template, subject in _records():
        k, e, same_ids = _both(tok, template, subject)
        assert same_ids and k == e, (template, subject, k, e)
        text = fill_subject(template, subject)
        end = template.index("{}") + len(subject)
        spans = tok(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
        a, b = spans[k]
        assert a <= end - 1 < b, (subject, spans[k])
        assert k + 1 == len(spans) or spans[k + 1][0] >= end, (subject, spans[k:k + 2])   # nothing after it holds it
        split += k > 0 and spans[k - 1][0] <= end - 1 < spans[k - 1][1]
    assert split, "expected the tiny tokenizer to split some subject's last character into several tokens"
