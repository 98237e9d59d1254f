"""Time of the final all-record edit evaluation of a CounterFact stream on SmolLM2 (CPU).

Scores ``--records`` records drawn (seeded) from ``$OTELAB_DATA_DIR/counterfact``
with :func:`otelab.eval.metrics.edit_scores` (efficacy, paraphrase, specificity: what
:meth:`otelab.workbench.stream.StreamEval.final` runs), counts the forward passes and the
tokens actually run (pairs sharing a prefix are run once; sequences sharing a
prefix are packed into one row as a prefix tree), and extrapolates to
``--target`` records by the token count of that many records (counted here
without running the model). The unedited model is used: the cost does not
depend on the edits. Then, in the same run, the same records with one sequence
per row (no packing), and with one sequence per row through the full forward
(``logits_to_keep``: the output layer over every kept column of every row)
instead of the output layer at the target positions only, and the ratios.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_final_eval.py [--records 300] [--target 2000] [--no-compare]
"""
from __future__ import annotations

import argparse
import os
import random
import time


def host_tokens(tok, records) -> tuple[int, int, int]:
    """(sequences, tokens, packed tokens) that edit_scores runs for these records after prefix sharing."""
    from otelab.eval.batching import encode_many
    from otelab.eval.packing import pack_rows, tree_row
    from otelab.eval.scoring import PACK_ROW, plan_hosts
    prompts, targets = [], []
    for r in records:
        for p in [r.text] + r.paraphrase_prompts + r.neighborhood_prompts:
            prompts += [p, p]
            targets += [r.target_new, r.target_true]
    p_ids = encode_many(tok, prompts, True)
    t_ids = encode_many(tok, [" " + t.strip() for t in targets], False)
    hosts = set(plan_hosts([tuple(p + t[:-1]) for p, t in zip(p_ids, t_ids)]).values())
    packed = sum(len(tree_row(r).tokens) for r in pack_rows(hosts, PACK_ROW))
    return len(hosts), sum(len(h) for h in hosts), packed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--target", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compare", action="store_true", help="skip the full-forward comparison")
    args = ap.parse_args()

    import torch

    from otelab.eval import batching as B
    from otelab.eval import metrics as M
    from otelab.eval import scoring as S
    from otelab.data.loaders import load_counterfact
    from otelab.models.loading import load_model

    lm = load_model(args.model, device="cpu")
    everything = load_counterfact()
    recs = random.Random(args.seed).sample(everything, args.target)
    n_seq_t, n_tok_t, n_packed_t = host_tokens(lm.tokenizer, recs)
    run = recs[:args.records]
    n_seq, n_tok, n_packed = host_tokens(lm.tokenizer, run)

    def timed():
        t0 = time.perf_counter()
        with M.ForwardCounter(lm.model) as fc:
            res = M.edit_scores(lm.model, lm.tokenizer, run, batch_size=args.batch, show_progress=True)
        return res, fc.count, time.perf_counter() - t0

    res, count, dt = timed()
    print(f"{args.model}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{args.records} records: {n_seq} sequences, {n_tok} tokens, {n_packed} packed, {count} forwards, "
          f"{dt:.1f} s ({n_packed / dt:.0f} tokens/s); efficacy {res['efficacy']:.3f}, "
          f"specificity {res['specificity']:.3f}")
    print(f"{args.target} records: {n_seq_t} sequences, {n_tok_t} tokens, {n_packed_t} packed -> about "
          f"{dt * n_packed_t / n_packed:.0f} s at this rate (x{n_packed_t / n_packed:.2f})")
    if args.no_compare:
        return

    def same(other):
        return "identical" if all(a[k] == b[k] for a, b in zip(res["per_record"], other["per_record"])
                                  for k in ("efficacy", "paraphrase", "specificity")) else "DIFFER"

    packs, head_only = S.packs, B.split_head
    S.packs = lambda model: False  # one sequence per row, as before the packing
    try:
        rows, _, dt_rows = timed()
        print(f"one sequence per row: {dt_rows:.1f} s -> packing is x{dt_rows / dt:.2f} faster; per-record "
              f"scores {same(rows)}")
        B.split_head = lambda model: None  # and the full forward, as before the head-only scoring
        full, _, dt_full = timed()
        print(f"one sequence per row, full forward (logits_to_keep): {dt_full:.1f} s -> x{dt_full / dt:.2f} "
              f"slower than packed; per-record scores {same(full)}")
    finally:
        S.packs, B.split_head = packs, head_only


if __name__ == "__main__":
    main()
