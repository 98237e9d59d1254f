"""Does the stream evaluation see damage on SmolLM2, and what does it cost? (issue 12, part 3)

Phases, each written to ``--out`` as it finishes (rerun with the same ``--out`` to skip
finished phases):

1. ``reference_answers`` / ``capability_unedited``: the six tasks zero-shot on the
   unedited model (the per-item option scores are kept).
2. ``damage``: a naive MEMIT stream with λ = ``--cov-weight`` over ``--edits`` CounterFact
   edits in steps of ``--batch``, with synthetic values z = z_init + noise (z_init of the
   unedited model; noise of the mean norm of real values, measured with ``compute_values``
   on ``--calib`` requests), so that no value optimisation is needed; the session is saved.
3. ``capability_damaged``: the same tasks on the damaged model, with agreement and margin
   against the unedited answers, and PPL / top-1 agreement for context.
4. ``checkpoint``: the time of one :meth:`otelab.workbench.stream.StreamEval.checkpoint` without the
   capability part (whose time is phase 3's), at ``--sample-per-batch`` records per batch.
5. ``few_shot_<shots>``: does a ``--shots``-shot format lift the binary tasks above one label on
   the unedited model (first ``--shot-n`` items, against zero-shot on the same items)?

Usage: OMP_NUM_THREADS=1 python experiments/stream_eval_check.py --out experiments/results/stream-eval-smollm2.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--glue-n", type=int, default=100)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--shot-n", type=int, default=30, help="items per task for the few-shot comparison")
    ap.add_argument("--edits", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--cov-weight", type=float, default=1000.0)
    ap.add_argument("--calib", type=int, default=10)
    ap.add_argument("--sample-per-batch", type=int, default=20)
    ap.add_argument("--texts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from otelab.data.texts import held_out_texts
    from otelab.data.loaders import load_counterfact
    from otelab.eval.drift import LMBaseline, lm_drift
    from otelab.engine.session import EditSession
    from otelab.engine.keys import subject_hidden
    from otelab.eval.metrics import CapabilityAnswers, capability_answers, capability_scores, general_capability
    from otelab.models.loading import load_model
    from otelab.workbench.stream import StreamEval, write_run
    from otelab.engine.values import ValueResult, compute_values

    sys_path = Path(__file__).resolve().parent
    import sys
    sys.path.insert(0, str(sys_path))
    from paper_stream import capability_tasks

    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res["settings"] = dict(vars(args), threads=torch.get_num_threads(), values="synthetic: z_init + noise",
                           model="smollm2-135m")

    def save():
        write_run(out, res)

    lm = load_model()
    model, tok = lm.model, lm.tokenizer
    tasks, _ = capability_tasks(args.glue_n, 0)

    # 1. the unedited answers (kept in the JSON, so a rerun does not recompute them)
    if "reference_answers" not in res:
        t0 = time.perf_counter()
        ref0 = capability_answers(model, tok, tasks, show_progress=True)
        res["reference_answers"] = {"gold": ref0.gold, "scores": ref0.scores, "seconds": round(time.perf_counter() - t0, 1)}
        save()
    ref0 = CapabilityAnswers(res["reference_answers"]["gold"], res["reference_answers"]["scores"])
    if "capability_unedited" not in res:
        chance = {t: max(sum(g == c for g in gold) for c in set(gold)) / len(gold) for t, gold in ref0.gold.items()}
        res["capability_unedited"] = {"zero_shot": capability_scores(ref0, ref0),
                                      "majority_class_share": chance}
        save()

    # 2. a damaged model
    texts = held_out_texts(args.texts)
    lmb = LMBaseline.compute(model, tok, texts)
    recs = load_counterfact()
    rng = random.Random(args.seed)
    stream = rng.sample(recs, args.edits)
    reqs = [r.request() for r in stream]
    session_dir = out.with_name(out.name + ".session")
    lm.preset = lm.preset.replace(cov_weight=args.cov_weight)
    if "damage" not in res:
        t0 = time.perf_counter()
        real = compute_values(lm, reqs[:args.calib])
        scale = float((real.z - real.z_init).norm(dim=1).mean())
        t_calib = time.perf_counter() - t0
        g = torch.Generator().manual_seed(args.seed)
        # like banked values: z_init of the unedited model, for every request, before any edit
        z_all = torch.cat([subject_hidden(lm, reqs[b:b + 50], max(lm.preset.layers)).detach()
                           for b in range(0, len(reqs), 50)])                             # [n, d]
        s = EditSession(lm, "memit", "naive")
        steps = []
        for b in range(0, len(reqs), args.batch):
            batch = reqs[b:b + args.batch]
            z0 = z_all[b:b + args.batch]                                                  # [n_b, d]
            noise = torch.randn(z0.shape, generator=g, dtype=z0.dtype)
            noise = noise / noise.norm(dim=1, keepdim=True) * scale                   # [n_b, d]
            rec = s.step(batch, values=ValueResult(z=z0 + noise, z_init=z0))
            steps.append({"step": rec.step, "timings": rec.timings, "delta_norms": rec.delta_norms})
            print(steps[-1], flush=True)
        s.save(session_dir)
        res["damage"] = {"method": "memit", "mode": "naive", "cov_weight": args.cov_weight, "edits": len(reqs),
                         "value_noise_norm": scale, "calibration_seconds": round(t_calib, 1),
                         "note": "z = z_init (unedited model) + noise of the mean norm of real values "
                                 "(compute_values on the first requests)",
                         "steps": steps, "dW_total": s.delta_norm()}
        save()
    else:
        s = EditSession.load(session_dir, lm)

    # 3. the measures on the damaged model
    if "capability_damaged" not in res:
        t0 = time.perf_counter()
        cap = general_capability(model, tok, tasks, reference=ref0, show_progress=True)
        res["capability_damaged"] = {"zero_shot": cap, "seconds": round(time.perf_counter() - t0, 1),
                                     "lm": lm_drift(model, tok, lmb)}
        save()
        print(json.dumps(res["capability_damaged"], indent=1))

    # 4. one checkpoint's other parts (capability: its seconds above), at the paper's sample size
    if "checkpoint" not in res:
        from otelab.workbench.bench import unedited_weights

        with unedited_weights(s):
            t0 = time.perf_counter()
            ev = StreamEval(lm, stream, args.batch, texts=texts, sample_per_batch=args.sample_per_batch,
                            seed=args.seed)
            t_ref = time.perf_counter() - t0
        ck = ev.checkpoint(lm, s.n_steps)
        res["checkpoint"] = {"seconds_without_capability": ck["seconds"],
                             "capability_seconds": res["capability_damaged"]["seconds"],
                             "reference_seconds": round(t_ref, 1), "edit_sample": ck["edit_sample"],
                             "lm": ck["lm"], "latent": ck["latent"], "edits": ck["edits"],
                             "load_average": os.getloadavg()}
        save()
        print(json.dumps(res["checkpoint"], indent=1))

    # 5. does a few-shot format lift the tasks? (unedited model, first --shot-n items, MMLU left out: its
    # prompts are the longest); zero-shot on the same items is read off the reference answers
    if args.shots and f"few_shot_{args.shots}" not in res:
        from otelab.workbench.bench import unedited_weights

        names = [t for t in tasks if t != "mmlu"]
        few_tasks, demos = capability_tasks(args.shot_n, args.shots)
        few_tasks = {t: few_tasks[t] for t in names}
        demos = {t: demos[t] for t in names}
        zero = CapabilityAnswers({t: ref0.gold[t][:args.shot_n] for t in names},
                                 {t: ref0.scores[t][:args.shot_n] for t in names})
        with unedited_weights(s):
            t0 = time.perf_counter()
            few = capability_answers(model, tok, few_tasks, demos=demos, show_progress=True)
            t_few = time.perf_counter() - t0
        res[f"few_shot_{args.shots}"] = {
            "tasks": names, "items": args.shot_n, "shots": args.shots, "model": "unedited",
            "zero_shot": capability_scores(zero), "few_shot": capability_scores(few), "seconds_few_shot": round(t_few, 1)}
        save()
        print(json.dumps(res[f"few_shot_{args.shots}"], indent=1))

if __name__ == "__main__":
    main()
