"""The paper's long-stream protocol on one editor: a seeded CounterFact draw edited in steps, checkpoints, final scores.

Usage (the paper's 2,000 edits in 20 steps of 100, checkpoints every 5 steps):
    OMP_NUM_THREADS=1 python experiments/paper_stream.py --method memit --mode aligned --n 2000 --batch 100 \
        --cov-weight 3000 --values bank --out experiments/results/stream2000-memit-aligned.json

The run's JSON (``otelab.stream`` format) is rewritten atomically after every step; the
session is saved beside it (``<out>.session``) at every checkpoint. ``--resume``
continues an interrupted run from both. Values: ``bank`` (the value bank, values of the
unedited model computed once and reused), ``unedited`` (optimised on the unedited
model for every batch, nothing stored), ``edited`` (re-optimised every step on the
edited model: the seed code's protocol).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

TASKS = ("sst2", "mrpc", "mmlu", "rte", "cola", "nli")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="preset name (default SmolLM2-135M)")
    ap.add_argument("--data", default="counterfact", choices=("counterfact", "factbank"))
    ap.add_argument("--n", type=int, default=2000, help="records drawn (seeded) for the stream")
    ap.add_argument("--batch", type=int, default=100, help="edits per step")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draw and of the checkpoint sample")
    ap.add_argument("--method", default="memit")
    ap.add_argument("--mode", default="aligned")
    ap.add_argument("--cov-weight", type=float, default=None, help="λ (default: the preset's)")
    ap.add_argument("--values", default="bank", choices=("bank", "unedited", "edited"))
    ap.add_argument("--bank", default=None, help="value bank folder (default: the bank's own under the cache)")
    ap.add_argument("--value-templates", default="context", choices=("context", "plain"),
                    help="prompts the values are optimised on: the preset's context templates (the seed code's "
                         "way) or the plain prompt only (about 3x cheaper; what the recorded 2,000-edit runs use)")
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--sample-per-batch", type=int, default=20, help="records per batch scored at checkpoints")
    ap.add_argument("--texts", type=int, default=16, help="held-out texts for PPL / top-1 agreement")
    ap.add_argument("--glue-n", type=int, default=100, help="items per general-capability task (0: none)")
    ap.add_argument("--shots", type=int, default=0, help="worked examples in front of every task prompt")
    ap.add_argument("--latent-n", type=int, default=20, help="edited and as many unrelated records for latent drift")
    ap.add_argument("--cov-tokens", type=int, default=None, help="covariance tokens (default: the preset's)")
    ap.add_argument("--out", required=True, help="the run's JSON")
    ap.add_argument("--resume", action="store_true", help="continue --out from the session saved beside it")
    args = ap.parse_args(argv)
    for name in ("n", "batch", "checkpoint_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    out = Path(args.out)
    if out.exists() and not args.resume:
        ap.error(f"{out} exists; pass --resume to continue it, or choose another --out")
    if args.resume and not out.exists():
        ap.error(f"--resume: {out} does not exist")
    return args


def draw(args, records_all):
    """The stream (``otelab.data.sample_records``: the same draw as ``otelab values compute --seed``)
    and unrelated records for latent drift (drawn from the rest)."""
    from otelab.data import sample_records

    if args.n > len(records_all):
        sys.exit(f"--n {args.n}: the data holds only {len(records_all)} records")
    stream = sample_records(records_all, args.n, args.seed)
    chosen = {id(r) for r in stream}
    rest = [r for r in records_all if id(r) not in chosen]
    return stream, sample_records(rest, min(args.latent_n, len(rest)), args.seed + 1)


def capability_tasks(n: int, shots: int):
    """``n`` items per task (the data directory's GLUE files, else the built-in probes) and few-shot examples
    taken from the items after them."""
    from otelab.data import load_glue
    from otelab.metrics import pick_demonstrations

    tasks, demos = {}, {}
    for t in TASKS:
        items = load_glue(t)
        tasks[t] = items[:n]
        if shots:
            demos[t] = pick_demonstrations(t, items[n:], shots)
            if len(demos[t]) < shots:
                sys.exit(f"task {t}: only {len(demos[t])} worked examples left after the first {n} items")
    return tasks, demos or None


def main(argv=None) -> None:
    args = parse(argv)
    import torch

    from otelab.cli_eval import held_out_texts
    from otelab.data import load_counterfact, load_factbank
    from otelab.engine import EditSession
    from otelab.models import load_model
    from otelab.stream import StreamEval, run_stream, value_provider, write_run

    out = Path(args.out)
    session_dir = out.with_name(out.name + ".session")
    t_start = time.perf_counter()
    lm = load_model(args.model)
    if args.cov_weight is not None:
        lm.preset = lm.preset.replace(cov_weight=float(args.cov_weight))
    records_all = load_counterfact() if args.data == "counterfact" else load_factbank()
    stream, unrelated = draw(args, records_all)
    tasks, demos = capability_tasks(args.glue_n, args.shots) if args.glue_n else ({}, None)
    texts = held_out_texts(args.texts) if args.texts else []
    latent = [stream[i] for i in range(0, len(stream), max(1, len(stream) // args.latent_n))][:args.latent_n]
    # the unedited model's references come first (on resume too: the session is restored after)
    ev = StreamEval(lm, stream, args.batch, texts=texts, tasks=tasks, demos=demos,
                    sample_per_batch=args.sample_per_batch, latent_records=latent + unrelated, seed=args.seed)
    if args.resume:
        session = EditSession.load(session_dir, lm)
    else:
        session = EditSession(lm, args.method, args.mode, n_tokens=args.cov_tokens)
    values = value_provider(session, args.values, args.bank, progress=True,
                            templates=["{}"] if args.value_templates == "plain" else None)
    t_values = 0.0
    if values is not None and args.values == "bank":
        t0 = time.perf_counter()
        values([r.request() for r in stream])  # fill the bank once, on the unedited model (resumable)
        t_values = time.perf_counter() - t0
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume")}
    settings.update(model=lm.preset.name, cov_weight=lm.preset.cov_weight, threads=torch.get_num_threads(),
                    command=" ".join(["python", "experiments/paper_stream.py"] + list(argv or sys.argv[1:])))
    t0 = time.perf_counter()
    run = run_stream(session, ev, out, values=values, checkpoint_every=args.checkpoint_every,
                     session_dir=session_dir, resume=args.resume, settings=settings)
    fin = run["final"]
    t_stream = time.perf_counter() - t0
    run["timings"].update(bank_fill=round(t_values, 1), stream=round(t_stream, 1),
                          total=round(time.perf_counter() - t_start, 1), final_all_records=fin["seconds"])
    write_run(out, run)
    print(f"{len(stream)} edits, {session.n_steps} steps: stream {t_stream:.0f} s "
          f"(bank fill {t_values:.0f} s, total {run['timings']['total']:.0f} s)")
    print("final, all records: " + ", ".join(f"{k} {fin[k]:.3f}" for k in ("efficacy", "paraphrase", "specificity")))
    last = run["checkpoints"][-1]
    if "lm" in last:
        print(f"PPL {last['lm']['ppl']:.2f} (unedited {last['lm']['ppl_unedited']:.2f}), "
              f"top-1 agreement {last['lm']['top1_agreement']:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
