"""The paper's long-stream protocol on one editor: a seeded CounterFact draw edited in steps, checkpoints, final scores.

Usage (the paper's 2,000 edits in 20 steps of 100, checkpoints every 5 steps):
    OMP_NUM_THREADS=1 python experiments/paper_stream.py --method memit --mode aligned --n 2000 --batch 100 \
        --cov-weight 3000 --values bank --out experiments/results/stream2000-memit-aligned.json

The run's JSON (``otelab.workbench.stream`` format) is rewritten atomically after every step; the
session is saved beside it (``<out>.session``) at every checkpoint. ``--resume``
continues an interrupted run from both. Values: ``bank`` (the value bank, values of the
unedited model computed once and reused), ``unedited`` (optimised on the unedited
model for every batch, nothing stored), ``edited`` (re-optimised every step on the
edited model: the seed code's protocol).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

TASKS = ("sst2", "mrpc", "mmlu", "rte", "cola", "nli")


def parse(argv=None) -> argparse.Namespace:
    from otelab.engine.session import RECT_KEEP, check_combo
    from otelab.engine.store import SessionError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="preset name (default SmolLM2-135M)")
    ap.add_argument("--data", default="counterfact", choices=("counterfact", "factbank"))
    ap.add_argument("--n", type=int, default=2000, help="records drawn (seeded) for the stream")
    ap.add_argument("--batch", type=int, default=100, help="edits per step")
    ap.add_argument("--seed", type=int, default=0, help="seed of the draw and of the checkpoint sample")
    ap.add_argument("--method", default="memit")
    ap.add_argument("--mode", default="aligned")
    ap.add_argument("--cov-weight", type=float, default=None,
                    help="μ, the C0 weight (run labels and file names call it λ; default: the preset's)")
    ap.add_argument("--rect-keep", type=float, default=RECT_KEEP,
                    help="RECT's share of entries kept (the paper's 20%%; the seed code's 40%%: 0.4)")
    ap.add_argument("--values", default="bank", choices=("bank", "unedited", "edited"))
    ap.add_argument("--bank", default=None, help="value bank folder (default: the bank's own under the cache)")
    ap.add_argument("--value-templates", default="context", choices=("context", "plain"),
                    help="prompts the values are optimised on: the preset's context templates (the seed code's "
                         "way) or the plain prompt only (about 3x cheaper; what the recorded 2,000-edit runs use)")
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--sample-per-batch", type=int, default=20, help="records per batch scored at checkpoints")
    ap.add_argument("--texts", type=int, default=16, help="held-out texts for PPL / top-1 agreement")
    ap.add_argument("--glue-n", type=int, default=100, help="items per general-capability task (0: none)")
    ap.add_argument("--capability-every", type=int, default=None,
                    help="steps between general-capability evaluations (default: at every checkpoint; the "
                         "unedited and the final model always)")
    ap.add_argument("--shots", type=int, default=0, help="worked examples in front of every task prompt")
    ap.add_argument("--latent-n", type=int, default=20, help="edited and as many unrelated records for latent drift")
    ap.add_argument("--eval-batch", type=int, default=32, help="sequences per evaluation forward pass")
    ap.add_argument("--no-reference-cache", action="store_true",
                    help="compute the unedited references and store nothing (default: read them from, or store "
                         "them in, <otelab cache>/references, keyed by the model and everything evaluated)")
    ap.add_argument("--cov-tokens", type=int, default=None, help="covariance tokens (default: the preset's)")
    ap.add_argument("--out", default=None, help="the run's JSON (one editor: --method, --mode, ...)")
    ap.add_argument("--resume", action="store_true", help="continue --out from the session saved beside it")
    ap.add_argument("--runs", nargs="+", default=None, metavar="SPEC",
                    help="several editors in one process (one model load, one set of unedited references): "
                         "method:mode[:lam=λ][:keep=share][:values=bank|edited|unedited][:batch=n], e.g. "
                         "memit:aligned:lam=3000 rect:aligned:keep=0.4 memit:naive:values=edited memit:aligned:batch=2000 "
                         "(the one-time edit); :edits=n edits only the first n records of the draw; written to --out-dir as <method>-<mode>[-...]-lam<λ>.json; "
                         "finished files are skipped, unfinished ones resumed")
    ap.add_argument("--out-dir", default=None, help="the folder of --runs' files")
    args = ap.parse_args(argv)
    if args.runs:
        if args.out or not args.out_dir:
            ap.error("--runs writes to --out-dir (and takes no --out)")
        try:
            args.specs = [parse_spec(x, args) for x in args.runs]
        except ValueError as e:
            ap.error(str(e))
        return args
    if not args.out:
        ap.error("give --out (one editor) or --runs with --out-dir")
    try:
        check_combo(args.method, args.mode)
    except SessionError as e:
        ap.error(str(e))
    for name in ("n", "batch", "checkpoint_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    out = Path(args.out)
    if out.exists() and not args.resume:
        ap.error(f"{out} exists; pass --resume to continue it, or choose another --out")
    if args.resume and not out.exists():
        ap.error(f"--resume: {out} does not exist")
    return args


SPEC_KEYS = {"lam": float, "keep": float, "values": str, "batch": int, "edits": int}


def parse_spec(text: str, args) -> dict:
    """``method:mode[:key=value...]`` → the run's settings and file name (checked before any model work)."""
    from otelab.engine.session import RECT_KEEP, check_combo
    from otelab.engine.store import SessionError

    parts = text.split(":")
    if len(parts) < 2:
        raise ValueError(f"run {text!r}: expected method:mode[:key=value...]")
    spec = {"method": parts[0], "mode": parts[1], "lam": args.cov_weight, "keep": args.rect_keep,
            "values": args.values, "batch": args.batch, "edits": args.n}
    try:
        check_combo(spec["method"], spec["mode"])
    except SessionError as e:
        raise ValueError(f"run {text!r}: {e}") from None
    for kv in parts[2:]:
        k, _, v = kv.partition("=")
        if k not in SPEC_KEYS or not v:
            raise ValueError(f"run {text!r}: unknown option {kv!r} (options: {', '.join(SPEC_KEYS)})")
        try:
            spec[k] = SPEC_KEYS[k](v)
        except ValueError:
            raise ValueError(f"run {text!r}: {k} must be a {SPEC_KEYS[k].__name__}, got {v!r}") from None
    if spec["values"] not in ("bank", "edited", "unedited"):
        raise ValueError(f"run {text!r}: values must be bank, edited or unedited")
    if not 1 <= spec["edits"] <= args.n:
        raise ValueError(f"run {text!r}: edits must be between 1 and --n ({args.n})")
    if spec["lam"] is None:
        raise ValueError(f"run {text!r}: give lam=λ (or --cov-weight) so that the file name says it")
    name = [spec["method"], "ote" if spec["batch"] >= spec["edits"] else spec["mode"]]
    if spec["method"] == "rect" and spec["keep"] != RECT_KEEP:
        name.append(f"keep{spec['keep']:g}")
    if spec["values"] != "bank":
        name.append(f"values-{spec['values']}")
    if spec["batch"] not in (args.batch, spec["edits"]):
        name.append(f"batch{spec['batch']}")
    if spec["edits"] < args.n:
        name.append(f"edits{spec['edits']}")
    spec["file"] = "-".join(name) + f"-lam{spec['lam']:g}.json"
    return spec


def draw(args, records_all):
    """The stream (``otelab.data.loaders.sample_records``: the same draw as ``otelab values compute --seed``)
    and unrelated records for latent drift (drawn from the rest)."""
    from otelab.data.loaders import sample_records

    if args.n > len(records_all):
        sys.exit(f"--n {args.n}: the data holds only {len(records_all)} records")
    stream = sample_records(records_all, args.n, args.seed)
    chosen = {id(r) for r in stream}
    rest = [r for r in records_all if id(r) not in chosen]
    return stream, sample_records(rest, min(args.latent_n, len(rest)), args.seed + 1)


def capability_tasks(n: int, shots: int):
    """``n`` items per task (the data directory's GLUE files, else the built-in probes) and few-shot examples
    taken from the items after them."""
    from otelab.data.loaders import load_glue
    from otelab.eval.metrics import pick_demonstrations

    tasks, demos = {}, {}
    for t in TASKS:
        items = load_glue(t)
        tasks[t] = items[:n]
        if shots:
            demos[t] = pick_demonstrations(t, items[n:], shots)
            if len(demos[t]) < shots:
                sys.exit(f"task {t}: only {len(demos[t])} worked examples left after the first {n} items")
    return tasks, demos or None


def setup(args):
    """The model, the stream, the unrelated records, the capability tasks and the held-out texts."""
    from otelab.data.texts import held_out_texts
    from otelab.data.loaders import load_counterfact, load_factbank
    from otelab.models.loading import load_model

    lm = load_model(args.model)
    records_all = load_counterfact() if args.data == "counterfact" else load_factbank()
    stream, unrelated = draw(args, records_all)
    tasks, demos = capability_tasks(args.glue_n, args.shots) if args.glue_n else ({}, None)
    texts = held_out_texts(args.texts) if args.texts else []
    latent = [stream[i] for i in range(0, len(stream), max(1, len(stream) // args.latent_n))][:args.latent_n]
    return lm, stream, dict(texts=texts, tasks=tasks, demos=demos, latent_records=latent + unrelated)


def evaluator(lm, stream, args, batch: int, inputs: dict):
    """The :class:`otelab.workbench.stream.StreamEval` of the stream at ``batch`` edits per step (unedited references)."""
    from otelab.workbench.stream import StreamEval

    return StreamEval(lm, stream, batch, sample_per_batch=args.sample_per_batch, seed=args.seed,
                      eval_batch_size=args.eval_batch, capability_every=args.capability_every,
                      cache=not args.no_reference_cache, **inputs)


def edit_stream(lm, ev, stream, args, *, method: str, mode: str, cov_weight: float, values: str,
                rect_keep: float, out: Path, command: str) -> dict:
    """One editor over the stream: fresh (or resumed from ``<out>.session``), recorded in ``out``.

    The model's weights are back at W0 when this returns (the session is reset).
    """
    import torch

    from otelab.engine.session import EditSession
    from otelab.workbench.stream import run_stream, value_provider, write_run

    t_start = time.perf_counter()
    lm.preset = lm.preset.replace(cov_weight=float(cov_weight))
    session_dir = out.with_name(out.name + ".session")
    resume = out.exists()
    session = (EditSession.load(session_dir, lm) if resume else
               EditSession(lm, method, mode, n_tokens=args.cov_tokens, rect_keep=rect_keep))
    try:
        templates = ["{}"] if args.value_templates == "plain" else None
        provider = value_provider(session, values, args.bank, progress=True, templates=templates)
        t_values = 0.0
        if provider is not None and values == "bank":
            t0 = time.perf_counter()
            provider([r.request() for r in stream])  # fill the bank once, on the unedited model (resumable)
            t_values = time.perf_counter() - t0
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "out_dir", "resume", "runs")}
        settings.update(model=lm.preset.name, method=method, mode=mode, cov_weight=lm.preset.cov_weight,
                        values=values, rect_keep=rect_keep, batch=ev.batch_size,
                        threads=torch.get_num_threads(), command=command)
        t0 = time.perf_counter()
        run = run_stream(session, ev, out, values=provider, checkpoint_every=args.checkpoint_every,
                         session_dir=session_dir, resume=resume, settings=settings)
        t_stream = time.perf_counter() - t0
        run["timings"].update(bank_fill=round(t_values, 1), stream=round(t_stream, 1),
                              run_total=round(time.perf_counter() - t_start, 1),
                              final_all_records=run["final"]["seconds"])
        write_run(out, run)
    finally:
        session.reset()
    fin, last = run["final"], run["checkpoints"][-1]
    print(f"{out.name}: {len(stream)} edits, stream {t_stream:.0f} s (bank fill {t_values:.0f} s); final, all "
          f"records: " + ", ".join(f"{k} {fin[k]:.3f}" for k in ("efficacy", "paraphrase", "specificity"))
          + (f"; PPL {last['lm']['ppl']:.2f} (unedited {last['lm']['ppl_unedited']:.2f}), top-1 agreement "
             f"{last['lm']['top1_agreement']:.3f}" if "lm" in last else ""), flush=True)
    return run


def protocol(args, argv) -> None:
    """``--runs``: every spec in one process, one evaluator (unedited references) per batch size and length."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for spec in args.specs:
        f = out_dir / spec["file"]
        if f.exists() and json.loads(f.read_text(encoding="utf-8")).get("final") is not None:
            print(f"{f.name}: finished, skipped", flush=True)
        else:
            todo.append(spec)
    if not todo:
        return
    lm, stream, inputs = setup(args)
    evs: dict[tuple[int, int], object] = {}
    for spec in todo:
        key = (spec["batch"], spec["edits"])
        if key not in evs:
            evs[key] = evaluator(lm, stream[:spec["edits"]], args, spec["batch"], inputs)
        edit_stream(lm, evs[key], stream[:spec["edits"]], args, method=spec["method"], mode=spec["mode"],
                    cov_weight=spec["lam"], values=spec["values"], rect_keep=spec["keep"],
                    out=out_dir / spec["file"],
                    command=" ".join(["python", "experiments/paper_stream.py"] + list(argv or sys.argv[1:])))


def main(argv=None) -> None:
    args = parse(argv)
    if args.runs:
        return protocol(args, argv)
    t_start = time.perf_counter()
    lm, stream, inputs = setup(args)
    ev = evaluator(lm, stream, args, args.batch, inputs)
    run = edit_stream(lm, ev, stream, args, method=args.method, mode=args.mode,
                      cov_weight=args.cov_weight if args.cov_weight is not None else lm.preset.cov_weight,
                      values=args.values, rect_keep=args.rect_keep, out=Path(args.out),
                      command=" ".join(["python", "experiments/paper_stream.py"] + list(argv or sys.argv[1:])))
    run["timings"]["total"] = round(time.perf_counter() - t_start, 1)
    from otelab.workbench.stream import write_run
    write_run(Path(args.out), run)
    print(f"total {run['timings']['total']:.0f} s (model load, references, bank, stream, final evaluation)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
