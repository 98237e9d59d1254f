"""A step of banked edits: the layer-by-layer key pass against a fresh forward per layer.

With the values given (banked), a step is keys + solves. This prints, in one run
on the same batches: the per-step time of ``EditSession.step(values=...)`` with
``keys="layerwise"`` (otelab.engine.replay) and with ``keys="full"`` (a forward from the
embeddings for every edited layer, as before), their ratio, and the peak RSS of
a step of ``--rss-batch`` edits in a fresh process.

The step's time does not depend on what the values are, so by default they are
fixed targets made from the unedited hidden states (``--values bank`` takes them
from the value bank instead, computing what is missing first).

    python benchmarks/bench_replay.py --n 100 --steps 3 --rss-batch 500
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def requests(n: int, offset: int = 0):
    from otelab.data.loaders import load_counterfact, load_factbank
    if os.environ.get("OTELAB_DATA_DIR"):
        recs = load_counterfact(n=offset + n)[offset:]
    else:
        recs = load_factbank(n=offset + n)[offset:]
    return [r.request() for r in recs]


def fixed_values(lm, reqs, seed: int = 0):
    from otelab.engine.keys import subject_hidden
    from otelab.engine.values import ValueResult
    z0 = subject_hidden(lm, reqs, max(lm.layers))                                     # [n, d]
    g = torch.Generator().manual_seed(seed)
    step = torch.nn.functional.normalize(torch.randn(z0.shape, generator=g), dim=1)
    return ValueResult(z=z0 + 0.3 * z0.norm(dim=1, keepdim=True) * step, z_init=z0)


def values(lm, reqs, source: str):
    if source == "bank":
        from otelab.engine.valuebank import ValueBank
        return ValueBank(lm).get(reqs)
    return fixed_values(lm, reqs)


def rss_child(batch: int, source: str) -> None:
    """One step of ``batch`` edits in this (fresh) process; prints its peak RSS in MB."""
    from otelab.engine.session import EditSession
    from otelab.models.loading import load_model
    lm = load_model()
    reqs = requests(batch)
    val = values(lm, reqs, source)
    s = EditSession(lm, "memit", "aligned", progress=False)
    s.step(reqs, values=val)
    print(json.dumps({"batch": batch, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="edits per step")
    ap.add_argument("--steps", type=int, default=3, help="layerwise steps timed (the full path runs the first)")
    ap.add_argument("--values", choices=("fixed", "bank"), default="fixed")
    ap.add_argument("--rss-batch", type=int, default=500, help="batch of the peak-RSS step (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--_rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._rss_child:
        return rss_child(args._rss_child, args.values)

    from otelab.engine.session import EditSession
    from otelab.models.loading import load_model
    lm = load_model()
    batches = [requests(args.n, k * args.n) for k in range(args.steps)]
    vals = [values(lm, b, args.values) for b in batches]
    print(f"torch threads {torch.get_num_threads()}, {args.n} edits per step, values: {args.values}")
    times = {}
    for keys, k_steps in (("layerwise", args.steps), ("full", 1)):
        s = EditSession(lm, "memit", "aligned", keys=keys, progress=False)
        s.step(batches[0][:2], values=type(vals[0])(z=vals[0].z[:2], z_init=vals[0].z_init[:2]))   # warm-up
        s.reset()
        times[keys] = []
        for b, v in zip(batches[:k_steps], vals[:k_steps]):
            t = time.perf_counter()
            rec = s.step(b, values=v)
            times[keys].append(time.perf_counter() - t)
            print(f"  {keys:9s} step {rec.step}: {times[keys][-1]:6.2f} s  "
                  f"(keys {rec.timings['keys']:.2f} s, solves {rec.timings['solve']:.2f} s)")
        s.reset()
    lw, full = times["layerwise"][0], times["full"][0]
    print(f"step 1 of {args.n} edits: layerwise {lw:.2f} s, full {full:.2f} s, ratio {full / lw:.1f}x; "
          f"layerwise mean over {args.steps} steps {sum(times['layerwise']) / args.steps:.2f} s")
    if args.rss_batch:
        out = subprocess.run([sys.executable, __file__, "--_rss-child", str(args.rss_batch), "--values", args.values]
                             + (["--threads", str(args.threads)] if args.threads else []),
                             capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peak RSS of one step of {rss['batch']} edits (fresh process, model loaded): {rss['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
