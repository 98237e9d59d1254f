"""The seed code's per-step protocol beside the banked-values runs: a markdown table and the PPL / top-1 curve.

Usage:
    python experiments/perstep_table.py experiments/results/perstep2000 experiments/results/paper2000
"""
from __future__ import annotations

import sys
from pathlib import Path

from otelab.paper import protocol


def main(perstep: str, bank: str) -> None:
    runs = protocol.protocol_runs(perstep, *(Path(bank) / f"memit-{m}-lam10000.json" for m in ("aligned", "naive")))
    print("| run | edits | efficacy [95 %] | paraphrase | specificity | PPL | top-1 | cap. agreement | unrelated drift "
          "| Σ‖ΔW‖ | stream min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in runs.items():
        f, ck = r["final"], r["checkpoints"][-1]
        dw = sum(r["steps"][-1]["dW"].values())
        lo, hi = f["efficacy_ci"]
        print(f"| {label} | {ck['edits']:,} | {f['efficacy']:.3f} [{lo:.3f}, {hi:.3f}] | {f['paraphrase']:.3f} "
              f"| {f['specificity']:.3f} | {ck['lm']['ppl']:.2f} | {ck['lm']['top1_agreement']:.3f} "
              f"| {ck['capability_mean']['agreement']:.3f} | {ck['latent']['cos_drift_unrelated']:.3f} | {dw:.0f} "
              f"| {r['timings']['stream'] / 60:.0f} |")
    print()
    print("| edits | " + " | ".join(runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    steps = sorted({c["edits"] for r in runs.values() for c in r["checkpoints"]})
    for e in steps:
        cells = []
        for r in runs.values():
            c = next((c for c in r["checkpoints"] if c["edits"] == e), None)
            cells.append(f"{c['lm']['ppl']:.2f} / {c['lm']['top1_agreement']:.3f}" if c else "–")
        print(f"| {e:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
