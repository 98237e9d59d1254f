"""Time of the final all-record edit evaluation of a CounterFact stream on SmolLM2 (CPU).

Scores ``--records`` records drawn (seeded) from ``$OTELAB_DATA_DIR/counterfact``
with :func:`otelab.eval.metrics.edit_scores` (efficacy, paraphrase, specificity: what
:meth:`otelab.workbench.stream.StreamEval.final` runs), counts the forward passes and the
tokens actually run (pairs sharing a prefix are run once), and extrapolates to
``--target`` records by the token count of that many records (counted here
without running the model). The unedited model is used: the cost does not
depend on the edits. Then the same records again through the full forward
(``logits_to_keep``: the output layer over every kept column of every row)
instead of the output layer at the target positions only, and the ratio.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_final_eval.py [--records 300] [--target 2000] [--no-compare]
"""
from __future__ import annotations

import argparse
import os
import random
import time


def host_tokens(tok, records) -> tuple[int, int]:
    """(sequences, tokens) that edit_scores runs for these records after prefix sharing."""
    from otelab.eval.batching import encode_many
    from otelab.eval.scoring import plan_hosts
    prompts, targets = [], []
    for r in records:
        for p in [r.text] + r.paraphrase_prompts + r.neighborhood_prompts:
            prompts += [p, p]
            targets += [r.target_new, r.target_true]
    p_ids = encode_many(tok, prompts, True)
    t_ids = encode_many(tok, [" " + t.strip() for t in targets], False)
    hosts = set(plan_hosts([tuple(p + t[:-1]) for p, t in zip(p_ids, t_ids)]).values())
    return len(hosts), sum(len(h) for h in hosts)


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
    from otelab.data.loaders import load_counterfact
    from otelab.models.loading import load_model

    lm = load_model(args.model, device="cpu")
    everything = load_counterfact()
    recs = random.Random(args.seed).sample(everything, args.target)
    n_seq_t, n_tok_t = host_tokens(lm.tokenizer, recs)
    run = recs[:args.records]
    n_seq, n_tok = host_tokens(lm.tokenizer, run)
    t0 = time.perf_counter()
    with M.ForwardCounter(lm.model) as fc:
        res = M.edit_scores(lm.model, lm.tokenizer, run, batch_size=args.batch, show_progress=True)
    dt = time.perf_counter() - t0
    print(f"{args.model}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{args.records} records: {n_seq} sequences, {n_tok} tokens, {fc.count} forwards, {dt:.1f} s "
          f"({n_tok / dt:.0f} tokens/s); efficacy {res['efficacy']:.3f}, specificity {res['specificity']:.3f}")
    print(f"{args.target} records: {n_seq_t} sequences, {n_tok_t} tokens -> about {dt * n_tok_t / n_tok:.0f} s "
          f"at this rate (x{n_tok_t / n_tok:.2f})")
    if args.no_compare:
        return
    head_only = B.split_head
    B.split_head = lambda model: None   # the full forward, as before the head-only scoring
    try:
        t0 = time.perf_counter()
        full = M.edit_scores(lm.model, lm.tokenizer, run, batch_size=args.batch, show_progress=True)
        dt_full = time.perf_counter() - t0
    finally:
        B.split_head = head_only
    same = all(a["efficacy"] == b["efficacy"] and a["specificity"] == b["specificity"]
               for a, b in zip(res["per_record"], full["per_record"]))
    print(f"full forward (logits_to_keep): {dt_full:.1f} s -> head only is x{dt_full / dt:.2f} faster; "
          f"per-record scores {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
