"""Check recorded stream runs by replaying their edits: is every step's ‖Δ‖ what the record says?

Usage:
    OMP_NUM_THREADS=1 python experiments/check_records.py experiments/results/paper2000/*.json

For each ``otelab-stream/1`` record made with banked values, the same draw is edited again with
the same editor, λ, RECT share and value templates (keys and solves only: no evaluation, about
2-6 s a step on SmolLM2), and each step's per-layer ‖Δ‖_F is compared with the recorded one.
A run whose steps differ by more than ``--rtol`` was made with other inputs than the settings
say (a different covariance, value bank, context templates or code); the script prints the first
such step. One model load for all files; the weights are reset to W0 between runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="stream records (JSON)")
    ap.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance on ‖Δ‖ per layer and step")
    ap.add_argument("--steps", type=int, default=None, help="check only the first N steps")
    return ap.parse_args(argv)


def replay(lm, run: dict, records_all, steps: int | None) -> list[dict]:
    """Edit the recorded draw again; return ``{layer: ‖Δ‖}`` per step."""
    from otelab.data.loaders import sample_records
    from otelab.engine.session import RECT_KEEP, EditSession
    from otelab.workbench.stream import value_provider

    st = run["settings"]
    lm.preset = lm.preset.replace(cov_weight=float(st["cov_weight"]))
    stream = sample_records(records_all, int(st["n"]), int(st["seed"]))
    ids = [r.case_id for r in stream]
    if ids != run["stream"]["case_ids"]:
        raise SystemExit("the draw does not give the recorded case ids")
    batch = int(run["stream"]["batch_size"])
    session = EditSession(lm, run["session"]["method"], run["session"]["mode"], progress=False,
                          rect_keep=float(st.get("rect_keep") or RECT_KEEP))
    templates = ["{}"] if st.get("value_templates") == "plain" else None
    provider = value_provider(session, "bank", st.get("bank"), templates=templates)
    out = []
    try:
        n_steps = len(run["steps"]) if steps is None else min(steps, len(run["steps"]))
        for i in range(n_steps):
            reqs = [r.request() for r in stream[i * batch:(i + 1) * batch]]
            out.append(session.step(reqs, values=provider(reqs)).delta_norms)
    finally:
        session.reset()
    return out


def main(argv=None) -> int:
    args = parse(argv)
    from otelab.data.loaders import load_counterfact
    from otelab.models.loading import load_model

    runs = {}
    for f in args.files:
        run = json.loads(f.read_text(encoding="utf-8"))
        if run.get("format") != "otelab-stream/1" or run["settings"].get("values") != "bank" \
                or run["settings"].get("data") != "counterfact":
            print(f"{f.name}: skipped (not a banked CounterFact stream record)")
            continue
        runs[f] = run
    if not runs:
        return 0
    lm = load_model(next(iter(runs.values()))["settings"]["model"])
    records_all = load_counterfact()
    bad = 0
    for f, run in runs.items():
        got = replay(lm, run, records_all, args.steps)
        worst, first = 0.0, None
        for rec, new in zip(run["steps"], got):
            for layer, ref in rec["delta_norms"].items():
                rel = abs(new[layer] - ref) / max(abs(ref), 1e-12)
                worst = max(worst, rel)
                if rel > args.rtol and first is None:
                    first = (rec["step"], layer, ref, new[layer])
        verdict = "ok" if first is None else \
            f"DIFFERS from step {first[0]} (layer {first[1]}: recorded {first[2]:.6g}, replayed {first[3]:.6g})"
        bad += first is not None
        print(f"{f.name}: {len(got)} steps replayed, largest relative difference {worst:.2e}: {verdict}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
