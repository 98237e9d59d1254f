"""Print the recorded 2,000-edit protocol as markdown: final scores, the paper beside them, the λ sweep, verdicts.

Usage (from the repository root; reads whatever runs are recorded so far):
    python experiments/paper_tables.py
    python experiments/paper_tables.py --folder experiments/results/paper2000 \
        --extra experiments/results/stream2000-memit-aligned-lam1000.json > tables.md

The text is generated from the runs alone (``otelab.paper.protocol.markdown``), for pasting into
``experiments/results/README.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=str(RESULTS / "paper2000"), help="the folder of the protocol's run files")
    ap.add_argument("--extra", nargs="*", default=[str(RESULTS / "stream2000-memit-aligned-lam1000.json")],
                    help="single run files read as well (a label the folder has wins)")
    ap.add_argument("--title", default="The paper's protocol on SmolLM2", help="the section heading")
    args = ap.parse_args(argv)
    from otelab.paper.protocol import markdown, protocol_runs

    try:
        runs = protocol_runs(args.folder, *args.extra)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no recorded run in {args.folder} or {', '.join(args.extra) or 'the extra files'}",
              file=sys.stderr)
        return 2
    print(markdown(runs, title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
