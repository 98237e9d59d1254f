"""Sweep SmolLM2's value-optimisation settings and covariance weight λ on a short stream.

For each value setting (``--value-sets``, e.g. ``v_lr=0.5,clamp_factor=4``) the
target values of each batch are optimised once, on the unedited model, and
reused for every λ, so the λ sweep isolates the least-squares step (the
values of a real sequential run are optimised on the already-edited model).

Usage:
    python experiments/sweep_smollm2.py --n 30 --batch 10 --out runs/sweep.json \
        --value-sets v_lr=0.1,clamp_factor=0.75 v_lr=0.5,clamp_factor=4
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--cov-weights", type=float, nargs="*", default=[100, 300, 1000, 3000, 10000])
    ap.add_argument("--cov-tokens", type=int, default=20_000)
    ap.add_argument("--value-sets", nargs="*", default=[""],
                    help="comma-separated preset overrides for the value optimisation")
    ap.add_argument("--modes", nargs="*", default=["aligned", "naive"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from otelab.engine.covariance import get_covariance
    from otelab.data.loaders import load_counterfact
    from otelab.engine.session import EditSession
    from otelab.eval.metrics import Baseline, edit_scores
    from otelab.models.loading import load_model
    from otelab.engine.values import compute_values

    lm = load_model()
    records = load_counterfact(n=args.n)
    reqs = [r.request() for r in records]
    data_dir = os.environ.get("OTELAB_DATA_DIR")
    corpus = os.path.join(data_dir, "corpus", "wikipedia_vital_summaries_en.json") if data_dir else None
    cov = get_covariance(lm, list(lm.layers), corpus=corpus, n_tokens=args.cov_tokens)
    base = Baseline.compute(lm.model, lm.tokenizer, records)
    batches = [reqs[i:i + args.batch] for i in range(0, len(reqs), args.batch)]
    preset0 = lm.preset
    rows = []
    for vs in args.value_sets:
        over = {k: type(getattr(preset0, k))(v) for k, v in (kv.split("=") for kv in vs.split(",") if kv)}
        lm.preset = preset0.replace(**over)
        t0 = time.perf_counter()
        values = [compute_values(lm, b) for b in batches]
        v_sec = time.perf_counter() - t0
        final_nll = [x for v in values for x in v.losses[-1]]
        v_info = {"values": vs or "preset", "value_seconds": round(v_sec, 1),
                  "mean_steps": sum(v.steps for v in values) / len(values),
                  "final_nll_mean": round(sum(final_nll) / len(final_nll), 3),
                  "final_nll_max": round(max(final_nll), 3)}
        print(v_info, flush=True)
        for mode in args.modes:
            for w in args.cov_weights:
                lm.preset = preset0.replace(**over, cov_weight=w)
                s = EditSession(lm, "memit", mode, cov=cov, progress=False)
                for b, v in zip(batches, values):
                    s.step(b, values=v)
                res = edit_scores(lm.model, lm.tokenizer, records, baseline=base, show_progress=False)
                row = {**v_info, "mode": mode, "cov_weight": w,
                       **{k: round(res[k], 3) for k in ("efficacy", "paraphrase", "specificity_retained")}}
                print(row, flush=True)
                rows.append(row)
                s.reset()
    lm.preset = preset0
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
