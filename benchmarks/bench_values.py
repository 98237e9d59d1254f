"""Benchmark: MEMIT's value optimisation, batched with the unchanging work cached vs one request at a time.

Both sides optimise the same requests with the same preset on the same model:

- **batched**: one call of ``compute_values(loaded, requests, cached=True)`` on all
  requests: the layers up to the edited one run once; so do the tokens before each
  subject's last one in the layers above (causal attention cannot carry δ back to them,
  :class:`otelab.forward.SuffixForward`). Each step runs only the suffixes, packed several
  rows to a sequence, and unembeds only the positions the loss reads;
- **one at a time**: ``compute_values(loaded, [r], cached=False)`` per request, the
  seed code's way: every step runs the full forward and the full logits.

Early stopping is switched off on both sides (``--early-stop`` keeps it) so both do the
same number of gradient steps; the printed ratio is requests/s batched over requests/s
one at a time, measured in one run. Target: ≥ 5×.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_values.py [--n 10] [--steps 25] [--model smollm2-135m]
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
    args = ap.parse_args(argv)

    import torch

    from otelab import values as V
    from otelab.data import load_factbank
    from otelab.keys import context_templates
    from otelab.models import load_model

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


if __name__ == "__main__":
    raise SystemExit(main())
