"""Sweep SmolLM2's covariance weight λ (and Tikhonov for AlphaEdit) on a short stream.

The target values of each batch are optimised once, on the unedited model, and
reused for every setting, so the sweep isolates the least-squares step (the
values of a real sequential run are optimised on the already-edited model).

Usage:
    python experiments/sweep_smollm2.py --n 30 --batch 10 --out runs/sweep.json
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--cov-weights", type=float, nargs="*", default=[100, 300, 1000, 3000, 10000])
    ap.add_argument("--cov-tokens", type=int, default=20_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from otelab.covariance import get_covariance
    from otelab.data import load_counterfact
    from otelab.engine import EditSession
    from otelab.metrics import Baseline, edit_scores
    from otelab.models import load_model
    from otelab.values import compute_values

    lm = load_model()
    records = load_counterfact(n=args.n)
    reqs = [r.request() for r in records]
    data_dir = os.environ.get("OTELAB_DATA_DIR")
    corpus = os.path.join(data_dir, "corpus", "wikipedia_vital_summaries_en.json") if data_dir else None
    cov = get_covariance(lm, list(lm.layers), corpus=corpus, n_tokens=args.cov_tokens)
    base = Baseline.compute(lm.model, lm.tokenizer, records)
    batches = [reqs[i:i + args.batch] for i in range(0, len(reqs), args.batch)]
    values = [compute_values(lm, b) for b in batches]
    preset0 = lm.preset
    rows = []
    for method, mode in (("memit", "aligned"), ("memit", "naive")):
        for w in args.cov_weights:
            lm.preset = preset0.replace(cov_weight=w)
            s = EditSession(lm, method, mode, cov=cov, progress=False)
            for b, v in zip(batches, values):
                s.step(b, values=v)
            res = edit_scores(lm.model, lm.tokenizer, records, baseline=base, show_progress=False)
            row = {"method": method, "mode": mode, "cov_weight": w,
                   **{k: round(res[k], 3) for k in ("efficacy", "paraphrase", "specificity", "specificity_retained")}}
            print(row, flush=True)
            rows.append(row)
            s.reset()
    lm.preset = preset0
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
