"""Generation, fluency and consistency: greedy continuations, ROME's n-gram entropy and TF-IDF consistency."""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Sequence

from otelab.eval.batching import encode_many, eval_mode, model_device, pad_id_of, pad_with_positions, progress_bar

# ----------------------------------------------------------------------------
# Fluency and consistency

_WORD = re.compile(r"\w+|[^\w\s]")


def _ngram_entropy_one(text: str, ns: Sequence[int], weights: Sequence[float]) -> float:
    tokens = _WORD.findall(text)
    hs = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        hs.append(w * h)
    return sum(hs) / len(hs)


def ngram_entropy(texts: str | Sequence[str], ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted n-gram entropy, ROME's fluency score (higher = more varied text).

    For each text: H_n = -Σ p log2 p over the frequency distribution of its
    word n-grams, then the mean of (2/3·H_2, 4/3·H_3); the texts' scores are
    averaged. Words are runs of letters/digits and single punctuation marks
    (a regex stand-in for NLTK's word_tokenize, which the seed code uses).

    Arguments:
        texts: one text or a list of texts.
        ns, weights: n-gram orders and their weights.

    Returns:
        The mean score in bits (0 for texts shorter than 3 words).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("ngram_entropy needs at least one text")
    return sum(_ngram_entropy_one(t, ns, weights) for t in texts) / len(texts)


def greedy_generate(model, tok, prompts: Sequence[str], max_new_tokens: int = 50, batch_size: int = 16,
                    show_progress: bool | None = None) -> list[str]:
    """Greedy continuations of each prompt, generated in left-padded batches.

    Arguments:
        model, tok: a causal LM and its tokenizer.
        prompts: the prompts.
        max_new_tokens: tokens generated per prompt.
        batch_size: prompts per ``generate`` call.

    Returns:
        The decoded continuations (without the prompt), in input order.
    """
    from transformers import GenerationConfig

    ids = encode_many(tok, prompts, lead=True)
    for i, s in enumerate(ids):
        if not s:
            raise ValueError(f"prompt {i} ({prompts[i]!r}) tokenises to nothing")
    pad = pad_id_of(tok)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tok, "eos_token_id", None)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: list[str] = [""] * len(ids)
    device = model_device(model)
    with eval_mode(model):
        for b0 in progress_bar(range(0, len(order), batch_size), math.ceil(len(order) / batch_size), "generating",
                            show_progress):
            rows = order[b0:b0 + batch_size]
            inp, mask, _, _ = pad_with_positions([ids[i] for i in rows], pad, "left", device)
            gen = model.generate(input_ids=inp, attention_mask=mask, generation_config=cfg)
            for r, i in enumerate(rows):
                out[i] = tok.decode(gen[r, inp.shape[1]:], skip_special_tokens=True)
    return out


def generation_fluency(model, tok, prompts: Sequence[str], max_new_tokens: int = 50, batch_size: int = 16,
                       show_progress: bool | None = None) -> dict[str, Any]:
    """Generate greedily from each prompt and score the texts' n-gram entropy.

    As in ROME the scored text is prompt + continuation.

    Arguments:
        model, tok: a causal LM and its tokenizer.
        prompts: generation prompts.
        max_new_tokens: tokens per continuation.
        batch_size: prompts per batch.

    Returns:
        ``{"ngram_entropy": float, "texts": [prompt + continuation, ...]}``.
    """
    conts = greedy_generate(model, tok, prompts, max_new_tokens, batch_size, show_progress)
    texts = [p + c for p, c in zip(prompts, conts)]
    return {"ngram_entropy": ngram_entropy(texts), "texts": texts}


def tfidf_consistency(generations: Sequence[str | Sequence[str]], reference_texts: Sequence[str]) -> dict[str, Any]:
    """TF-IDF cosine between each generation and its reference text (ROME's consistency).

    ROME uses an IDF table fitted on Wikipedia; here scikit-learn's
    ``TfidfVectorizer`` (default settings, L2-normalised rows) is fitted on the
    references plus the generations being scored, so no external IDF table is
    needed. Absolute values therefore depend on the evaluated set; compare runs
    on the same records.

    Arguments:
        generations: one text, or a list of texts (joined with spaces), per item.
        reference_texts: one reference text per item (e.g. a Wikipedia-style
            description of the new target).

    Returns:
        ``{"consistency": mean cosine, "per_item": [cosine, ...]}``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(generations) != len(reference_texts):
        raise ValueError(f"got {len(generations)} generations but {len(reference_texts)} reference texts")
    if not generations:
        raise ValueError("tfidf_consistency needs at least one item")
    gens = [g if isinstance(g, str) else " ".join(g) for g in generations]
    for i, r in enumerate(reference_texts):
        if not isinstance(r, str) or not r.strip():
            raise ValueError(f"item {i}: the reference text is empty or not a string")
    vec = TfidfVectorizer().fit(list(reference_texts) + gens)
    a = vec.transform(gens)
    b = vec.transform(list(reference_texts))
    cos = [float(a[i].multiply(b[i]).sum()) for i in range(len(gens))]  # rows are unit-norm
    return {"consistency": sum(cos) / len(cos), "per_item": cos}
