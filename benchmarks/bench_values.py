"""Benchmark: MEMIT's value optimisation, batched with the unchanging work cached vs one request at a time.

Both sides optimise the same requests with the same preset on the same model:

- **batched**: one call of ``compute_values(loaded, requests, cached=True)`` on all
  requests: the layers up to the edited one run once; so do the tokens before each
  subject's last one in the layers above (causal attention cannot carry δ back to them,
  :class:`otelab.models.forward.SuffixForward`). Each step runs only the suffixes, packed several
  rows to a sequence, and unembeds only the positions the loss reads;
- **one at a time**: ``compute_values(loaded, [r], cached=False)`` per request, the
  seed code's way: every step runs the full forward and the full logits.

Early stopping is switched off on both sides (``--early-stop`` keeps it) so both do the
same number of gradient steps; the printed ratio is requests/s batched over requests/s
one at a time, measured in one run. Target: ≥ 5×.

Two more measurements (each its own mode):

- ``--rebuild N``: per-request early stopping on ``N`` requests, once rebuilding the packed
  forward when fewer than ``REBUILD_BELOW`` of its rows still move (the default), once never
  rebuilding (stopped rows stay in the forward, masked out of the loss), once rebuilding at
  every stop; prints values/min of each and the largest difference between their values;
- ``--rss N``: the peak resident memory of ``compute_values`` on ``N`` requests (chunked, so
  bounded for any ``N``), measured in a fresh subprocess (``ru_maxrss``), next to the peak of
  loading the model and the data alone.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_values.py [--n 10] [--steps 25] [--model smollm2-135m]
    OMP_NUM_THREADS=1 python benchmarks/bench_values.py --rebuild 16
    OMP_NUM_THREADS=1 python benchmarks/bench_values.py --rss 500 [--chunk 32]
"""
from __future__ import annotations

import argparse
import os
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="preset or path (default: $OTELAB_MODEL or smollm2-135m)")
    ap.add_argument("--n", type=int, default=10, help="requests (default 10)")
    ap.add_argument("--steps", type=int, default=None, help="gradient steps (default: the preset's v_steps)")
    ap.add_argument("--early-stop", action="store_true", help="keep the NLL early stop (steps may then differ)")
    ap.add_argument("--rebuild", type=int, default=None, metavar="N",
                    help="compare rebuilding the forward for the rows still moving vs masking, on N requests")
    ap.add_argument("--rss", type=int, default=None, metavar="N", help="peak RSS of compute_values on N requests")
    ap.add_argument("--chunk", type=int, default=None, help="requests per chunk (default: values.DEFAULT_CHUNK)")
    ap.add_argument("--_child", choices=["load", "values"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child or args.rss is not None:
        return _rss(args)
    if args.rebuild is not None:
        return _rebuild(args)

    import torch

    from otelab.engine import values as V
    from otelab.data.loaders import load_factbank
    from otelab.engine.keys import context_templates
    from otelab.models.loading import load_model

    torch.manual_seed(0)
    lm = load_model(args.model)
    if args.steps is not None:
        lm.preset = lm.preset.replace(v_steps=args.steps)
    if not args.early_stop:
        V.EARLY_STOP_NLL = float("-inf")   # never stop early: both sides do v_steps steps
    reqs = [r.request() for r in load_factbank(n=args.n)]
    templates = context_templates(lm)       # generated once, outside the timings

    t0 = time.perf_counter()
    batched = V.compute_values(lm, reqs, templates=templates, cached=True)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    single_steps = []
    for r in reqs:
        single_steps.append(V.compute_values(lm, [r], templates=templates, cached=False).steps)
    t_single = time.perf_counter() - t0

    rps_b, rps_s = len(reqs) / t_batched, len(reqs) / t_single
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {lm.preset.name}, {len(reqs)} requests, {len(templates)} context templates, "
          f"v_steps {lm.preset.v_steps}, early stop {'on' if args.early_stop else 'off'}, "
          f"torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"batched, cached             : {t_batched:8.1f} s  {rps_b:7.3f} requests/s  ({batched.steps} steps)")
    print(f"one at a time, full forward  : {t_single:8.1f} s  {rps_s:7.3f} requests/s  "
          f"({min(single_steps)}-{max(single_steps)} steps)")
    print(f"speed-up: {rps_b / rps_s:.1f}x (target >= 5x)")
    return 0


def _requests(n: int):
    """``n`` CounterFact requests (a seeded draw, when $OTELAB_DATA_DIR is set), else fact-bank ones."""
    from otelab.data.loaders import load_counterfact, sample_records

    pool = load_counterfact()
    return [r.request() for r in sample_records(pool, min(n, len(pool)), seed=0)]


def _rebuild(args) -> int:
    import torch

    from otelab.engine import values as V
    from otelab.engine.keys import context_templates
    from otelab.models.loading import load_model

    lm = load_model(args.model)
    templates = context_templates(lm)
    reqs = _requests(args.rebuild)
    chunk = args.chunk or len(reqs)
    out = {}
    for label, share in (("rebuild below 3/4 (default)", V.REBUILD_BELOW), ("never rebuild (mask)", 0.0),
                         ("rebuild at every stop", 1.0)):
        V.REBUILD_BELOW = share
        t0 = time.perf_counter()
        out[label] = V.compute_values(lm, reqs, templates=templates, chunk=chunk)
        dt = time.perf_counter() - t0
        print(f"{label:28s}: {dt:7.1f} s  {len(reqs) / dt * 60:6.2f} values/min", flush=True)
    first = next(iter(out.values()))
    steps = first.row_steps
    print(f"{len(reqs)} requests, chunk {chunk}, steps per request {min(steps)}-{max(steps)} "
          f"(mean {sum(steps) / len(steps):.1f} of {lm.preset.v_steps}), torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("largest |z| difference between the variants: "
          f"{max(float((r.z - first.z).abs().max()) for r in out.values()):.2e}")
    return 0


def _rss(args) -> int:
    import resource
    import subprocess
    import sys

    if args._child:
        from otelab.engine.keys import context_templates
        from otelab.models.loading import load_model
        from otelab.engine.values import DEFAULT_CHUNK, compute_values

        lm = load_model(args.model)
        templates = context_templates(lm)
        reqs = _requests(args.rss)
        t0 = time.perf_counter()
        if args._child == "values":
            compute_values(lm, reqs, templates=templates, chunk=args.chunk or DEFAULT_CHUNK)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB (Linux)
        print(f"{peak:.3f} {len(reqs)} {time.perf_counter() - t0:.1f}")
        return 0
    res = {}
    for child in ("load", "values"):
        cmd = [sys.executable, __file__, "--_child", child, "--rss", str(args.rss)]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--chunk", str(args.chunk)] if args.chunk else []
        res[child] = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
    peak, n, secs = float(res["values"][0]), int(res["values"][1]), float(res["values"][2])
    from otelab.engine.values import DEFAULT_CHUNK
    print(f"peak RSS, model + data loaded only      : {float(res['load'][0]):.2f} GiB")
    print(f"peak RSS, compute_values on {n} requests : {peak:.2f} GiB (chunk {args.chunk or DEFAULT_CHUNK}, "
          f"{secs:.0f} s, {n / secs * 60:.2f} values/min; target < 4 GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
