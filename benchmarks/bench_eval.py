"""Batched vs one-prompt-at-a-time teacher-forced scoring on SmolLM2 (CPU).

The prompts are those of the first ``--records`` fact-bank records (edit +
paraphrase + neighbourhood prompts); every prompt is scored for its new and its
true target, as :func:`otelab.eval.metrics.edit_scores` does. "One at a time" runs
one forward per prompt (its two targets together, like the seed code's per-prompt
evaluation) on the first ``--single`` prompts; "batched" scores all prompts with
``--batch`` sequences per forward. Both rates are measured in this one run and
the ratio is printed; the two paths' scores are also checked to agree.

Usage: python benchmarks/bench_eval.py [--records 100] [--single 150] [--batch 32]
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--single", type=int, default=150, help="prompts timed one at a time (a subset: it is slow)")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    from otelab.eval import metrics as M
    from otelab.data.loaders import load_factbank
    from otelab.models.loading import load_model

    lm = load_model(args.model, device="cpu")
    model, tok = lm.model, lm.tokenizer
    prompts, news, trues = [], [], []
    for r in load_factbank(args.records):
        for p in [r.text] + r.paraphrase_prompts + r.neighborhood_prompts:
            prompts.append(p); news.append(r.target_new); trues.append(r.target_true)
    pair_p = [p for p in prompts for _ in (0, 1)]
    pair_t = [t for n, tr in zip(news, trues) for t in (n, tr)]
    print(f"{args.model} on CPU ({torch.get_num_threads()} threads): {args.records} records, "
          f"{len(prompts)} prompts, {len(pair_p)} (prompt, target) pairs")

    M.target_logprobs(model, tok, pair_p[:8], pair_t[:8], batch_size=8)  # warm-up

    k = min(args.single, len(prompts))
    t0 = time.perf_counter()
    with M.ForwardCounter(model) as fc1:
        single = torch.cat([M.target_logprobs(model, tok, pair_p[2 * i:2 * i + 2], pair_t[2 * i:2 * i + 2],
                                              batch_size=2) for i in range(k)])
    t_single = time.perf_counter() - t0

    t0 = time.perf_counter()
    with M.ForwardCounter(model) as fcb:
        batched = M.target_logprobs(model, tok, pair_p, pair_t, batch_size=args.batch, show_progress=True)
    t_batched = time.perf_counter() - t0

    diff = float((batched[:2 * k] - single).abs().max())
    rate_single, rate_batched = k / t_single, len(prompts) / t_batched
    print(f"one prompt at a time: {k} prompts in {t_single:.1f} s, {fc1.count} forwards -> {rate_single:.1f} prompts/s")
    print(f"batched (batch {args.batch}): {len(prompts)} prompts in {t_batched:.1f} s, {fcb.count} forwards "
          f"-> {rate_batched:.1f} prompts/s")
    print(f"speed-up: {rate_batched / rate_single:.1f}x   (max |difference| of the scores: {diff:.2e})")


if __name__ == "__main__":
    main()
