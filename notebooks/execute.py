"""Re-execute notebooks in place (one at a time, niced) and strip the saved widget state.

Usage (from anywhere; ``OTELAB_DATA_DIR`` must point at the reference data):
    python notebooks/execute.py 07 08            # at CI size (OTELAB_CI_SIZE=1), the committed baseline
    python notebooks/execute.py 08 --full        # without OTELAB_CI_SIZE

Each notebook is run by ``jupyter nbconvert --execute --inplace`` with ``nice -n 19`` and one
torch thread, then ``metadata["widgets"]`` is removed (tests/test_notebooks.py keeps it out and
the file under 1 MB). Stops at the first notebook that fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 1_000_000


def strip_widgets(path: Path) -> int:
    """Remove the saved widget state from a notebook, atomically; returns the file's size in bytes."""
    from otelab.cache import atomic_write_bytes

    nb = json.loads(path.read_text(encoding="utf-8"))
    if nb.get("metadata", {}).pop("widgets", None) is not None:
        atomic_write_bytes(path, (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("numbers", nargs="+", help="notebook numbers, e.g. 07 08")
    ap.add_argument("--full", action="store_true", help="run at full size (no OTELAB_CI_SIZE)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = []
    for n in args.numbers:
        found = sorted(HERE.glob(f"{int(n):02d}_*.ipynb"))
        if len(found) != 1:
            ap.error(f"notebook {n}: {len(found)} files match {int(n):02d}_*.ipynb in {HERE}")
        paths.append(found[0])
    if not os.environ.get("OTELAB_DATA_DIR"):
        ap.error("set OTELAB_DATA_DIR to the reference data (e.g. /work/shared/data)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.full:
        env.pop("OTELAB_CI_SIZE", None)
    else:
        env["OTELAB_CI_SIZE"] = "1"
    for path in paths:
        print(f"executing {path.name} ({'full size' if args.full else 'CI size'})", flush=True)
        cmd = ["nice", "-n", "19", sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               "--inplace", f"--ExecutePreprocessor.timeout={args.timeout}", path.name]
        if subprocess.run(cmd, cwd=HERE, env=env).returncode != 0:
            print(f"{path.name} failed; the notebooks after it were not run", file=sys.stderr)
            return 1
        size = strip_widgets(path)
        print(f"{path.name}: executed, widget state stripped, {size:,} bytes")
        if size >= MAX_BYTES:
            print(f"{path.name} is {size:,} bytes, over the {MAX_BYTES:,} the tests allow", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
