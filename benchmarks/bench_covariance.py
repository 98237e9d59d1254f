"""Benchmark: C0 with the truncated forward against a full forward, same hooks, one run.

Computes the preserved covariance of SmolLM2-135M for the preset's layers (3..7)
twice over the same tokens: once stopping after layer 7's down_proj input (what
otelab does), once running all 30 layers and the LM head. Prints tokens/s of
each and the speed-up (target: at least 3x). Checks that both give the same C0.

Usage:
    python benchmarks/bench_covariance.py [--n-tokens 4096] [--repeats 2]
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="preset or model (default smollm2-135m)")
    parser.add_argument("--corpus", default="wiki", help="corpus spec (default: wiki)")
    parser.add_argument("--n-tokens", type=int, default=4096)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant; best is kept")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from otelab.data.corpus import get_corpus
    from otelab.engine.covariance import compute_covariance
    from otelab.models.loading import load_model

    loaded = load_model(args.model, device="cpu")
    corpus = get_corpus(args.corpus)
    layers = list(loaded.preset.layers)
    results = {}

    def run(stop_early: bool):
        results[stop_early] = compute_covariance(
            loaded, layers, corpus, args.n_tokens, max_len=args.max_len,
            batch_size=args.batch_size, progress=False, stop_early=stop_early)

    # Warm-up (allocator, kernels) on a few tokens, both variants.
    for stop in (True, False):
        compute_covariance(loaded, layers, corpus, 256, max_len=args.max_len,
                           batch_size=args.batch_size, progress=False, stop_early=stop)
    # Interleave the variants so that machine-load drift hits both alike; keep the best time.
    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeats):
        for stop in (True, False):
            start = time.perf_counter()
            run(stop)
            best[stop] = min(best[stop], time.perf_counter() - start)
    truncated, full = best[True], best[False]

    worst = max(float((results[True][l] - results[False][l]).abs().max()
                      / results[False][l].abs().max()) for l in layers)
    n_layers = loaded.adapter.n_layers(loaded.model)
    print(f"model {loaded.preset.name} ({n_layers} layers), C0 for layers {layers}, "
          f"{args.n_tokens} tokens of {corpus.id}, max_len {args.max_len}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"truncated forward (stops after layer {layers[-1]}): {args.n_tokens / truncated:8.0f} tokens/s")
    print(f"full forward (all layers + LM head):      {args.n_tokens / full:8.0f} tokens/s")
    print(f"speed-up: {full / truncated:.2f}x (target >= 3x); max relative C0 difference {worst:.1e}")


if __name__ == "__main__":
    main()
