"""Sequential editing of a CounterFact stream on a real model; final-model edit scores.

Usage:
    python experiments/sequential_stream.py --method memit --mode aligned --n 100 --batch 10 \
        --data counterfact --out runs/stream-memit-aligned.json

The scores are measured on the final model over every request of the stream,
with specificity compared against the unedited model's cached outputs.

Target values: ``--values per-step`` (default; the seed code's protocol) re-optimises them
every step on the edited model; ``--values bank`` takes them from the value bank
(:mod:`otelab.engine.valuebank`: optimised once on the unedited model, computed where missing).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--method", default="memit")
    ap.add_argument("--mode", default="aligned")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--data", default="counterfact", help="counterfact (via $OTELAB_DATA_DIR) or factbank")
    ap.add_argument("--cov-tokens", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=None, help="draw the --n records with this seed (default: the first n)")
    ap.add_argument("--values", default="per-step", choices=["per-step", "bank"],
                    help="per-step: re-optimised every step on the edited model (the seed code's protocol); "
                         "bank: optimised once on the unedited model, from the value bank")
    ap.add_argument("--bank", default=None, help="the value bank's folder (default: under the otelab cache)")
    ap.add_argument("--set", nargs="*", default=[], help="preset overrides, e.g. cov_weight=2000")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from tqdm.auto import tqdm

    from otelab.data.loaders import load_counterfact, load_factbank, sample_records
    from otelab.engine.session import EditSession
    from otelab.eval.metrics import Baseline, edit_scores
    from otelab.models.loading import load_model

    lm = load_model(args.model)
    if args.set:
        lm.preset = lm.preset.replace(**{k: type(getattr(lm.preset, k))(v) for k, v in (s.split("=") for s in args.set)})
    load = load_counterfact if args.data == "counterfact" else load_factbank
    records = load(n=args.n) if args.seed is None else sample_records(load(), args.n, args.seed)
    reqs = [r.request() for r in records]
    data_dir = os.environ.get("OTELAB_DATA_DIR")
    corpus = os.path.join(data_dir, "corpus", "wikipedia_vital_summaries_en.json") if data_dir else None
    base = Baseline.compute(lm.model, lm.tokenizer, records)
    pre = edit_scores(lm.model, lm.tokenizer, records, baseline=base)
    bank = None
    if args.values == "bank":
        from otelab.engine.valuebank import ValueBank
        bank = ValueBank(lm, path=args.bank)
        bank.compute(reqs)   # before the model is edited: banked values are the unedited model's
    session = EditSession(lm, args.method, args.mode, corpus=corpus, n_tokens=args.cov_tokens)
    t0 = time.perf_counter()
    steps = []
    for i in tqdm(range(0, len(reqs), args.batch), desc=f"{args.method}/{args.mode}"):
        batch = reqs[i:i + args.batch]
        rec = session.step(batch, values=bank.get(batch, progress=False, compute=False) if bank is not None else None)
        steps.append({"step": rec.step, "timings": rec.timings, "delta_norms": rec.delta_norms})
    elapsed = time.perf_counter() - t0
    post = edit_scores(lm.model, lm.tokenizer, records, baseline=base)
    keys = ("efficacy", "paraphrase", "specificity", "specificity_retained", "neighbourhood_kl")
    out = {"settings": vars(args), "preset": lm.preset.to_dict(), "n_records": len(records),
           "pre": {k: pre.get(k) for k in keys}, "post": {k: post.get(k) for k in keys},
           "edit_seconds": round(elapsed, 1), "steps": steps}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("pre", "post", "edit_seconds")}, indent=1))


if __name__ == "__main__":
    main()
