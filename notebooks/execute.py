"""Re-execute notebooks in place (one at a time, niced), then tidy them for opening without a kernel.

Usage (from anywhere; ``OTELAB_DATA_DIR`` must point at the reference data):
    python notebooks/execute.py 07 08            # at CI size (OTELAB_CI_SIZE=1), the committed baseline
    python notebooks/execute.py 08 --full        # without OTELAB_CI_SIZE
    python notebooks/execute.py --tidy-only 06 07 08   # tidy the stored outputs, run nothing

Each notebook is run by ``jupyter nbconvert --execute --inplace`` with ``nice -n 19`` and one
torch thread, then tidied (:func:`tidy`). Stops at the first notebook that fails.

What :func:`tidy` changes, and why: a committed notebook is read by people who open it without a
running kernel, and its stored outputs are nbval's baseline. Whatever only a live kernel can
show, or only describes the run that produced the file, is taken out; results stay.

- ``metadata["widgets"]``, the saved widget state, is removed (20 MB for notebook 06; a kernel
  rebuilds it, and tests/test_notebooks.py keeps it out and the file under 1 MB).
- A widget output (``application/vnd.jupyter.widget-view+json``) keeps that mime, so a kernel that
  re-runs the cell renders the widget, but its ``text/plain``, the fallback shown without a
  kernel, becomes :data:`WIDGET_NOTE` instead of the widget's model repr (``VBox(children=…``).
  ``notebooks/sanitize.cfg`` maps the note and a fresh repr to the same token for nbval.
- A progress bar is removed (a tqdm widget, or the tqdm lines of a stderr stream, and the stream
  when nothing else is left): it shows how far a past run had got (``Loading weights: 0%``), never
  a result. ``notebooks/conftest.py`` leaves progress bars out of nbval's comparison the same way
  (:func:`without_progress`), so a cell that shows one need not be ignored.
- A cell marked ``# NBVAL_IGNORE_OUTPUT`` whose ``# reason:`` line says its output is wall-clock
  time (``time``, ``times``, ``timing(s)``, ``wall-clock``) keeps no output: the cell itself
  declares its output to be the timing of one past run on one machine, so no stored copy of it
  is true for the reader (notebook 06's ``last step 119.4 s``). A run fills it in again.

``tidy`` is idempotent, rewrites nothing else, and needs no kernel, so it can be applied to
committed notebooks without executing them (``--tidy-only``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 1_000_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "(interactive widget: run this cell to see it)"
# one tqdm bar, as notebooks/sanitize.cfg's [tqdm_bar]: "Loading weights:  42%|████  | 21/50 [00:01<00:02, 12.3it/s]"
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+\s*\[[^\]]*\]")
IGNORE_MARKER = re.compile(r"^\s*#\s*NBVAL_IGNORE_OUTPUT\s*$")
TIMING_REASON = re.compile(r"^\s*#\s*reason:.*\b(wall-clock|times?|timings?)\b", re.IGNORECASE)


def _text(value) -> str:
    # nbformat stores multi-line text as a list of lines or as one string
    return "".join(value) if isinstance(value, list) else value


def strip_progress(text: str) -> str:
    """``text`` without its tqdm bars (a bar is a piece of text up to its ``\\r`` or ``\\n``)."""
    return "".join(p for p in re.findall(r"[^\r\n]*(?:\r\n|\r|\n|$)", text) if not PROGRESS_BAR.search(p))


def without_progress(outputs: list) -> list:
    """``outputs`` without progress bars: tqdm widgets dropped, tqdm lines cut from stderr (emptied streams dropped).

    Works on a notebook's JSON and on nbval's outputs (``NotebookNode``, kept as such).
    """
    kept = []
    for out in outputs:
        if out["output_type"] == "stream" and out["name"] == "stderr":
            text = _text(out["text"])
            rest = strip_progress(text)
            if not rest.strip():
                continue
            out = out if rest == text else type(out)(out, text=rest)
        elif WIDGET_VIEW in out.get("data", {}) and PROGRESS_BAR.search(_text(out["data"].get("text/plain", ""))):
            continue
        kept.append(out)
    return kept


def reports_timing(cell: dict) -> bool:
    """Whether ``cell`` is ``# NBVAL_IGNORE_OUTPUT`` with a ``# reason:`` naming wall-clock time."""
    lines = _text(cell["source"]).splitlines()
    return any(IGNORE_MARKER.match(line) and i + 1 < len(lines) and TIMING_REASON.match(lines[i + 1])
               for i, line in enumerate(lines))


def _with_widget_note(out: dict) -> dict:
    data = out.get("data", {})
    if WIDGET_VIEW in data and _text(data.get("text/plain", "")) != WIDGET_NOTE:
        return dict(out, data=dict(data, **{"text/plain": [WIDGET_NOTE]}))
    return out


def tidy_notebook(nb: dict) -> bool:
    """Apply the rules of this module's docstring to a notebook's JSON, in place; returns whether it changed."""
    changed = nb.get("metadata", {}).pop("widgets", None) is not None
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or not cell.get("outputs"):
            continue
        if reports_timing(cell):
            outputs = []
        else:
            outputs = [_with_widget_note(o) for o in without_progress(cell["outputs"])]
        if outputs != cell["outputs"]:
            cell["outputs"] = outputs
            changed = True
    return changed


def tidy(path: Path) -> bool:
    """Tidy a notebook file (see :func:`tidy_notebook`), atomically and only if it changes; returns whether it did."""
    from otelab.cache import atomic_write_bytes

    nb = json.loads(path.read_text(encoding="utf-8"))
    if not tidy_notebook(nb):
        return False
    # nbformat's own layout (sorted keys, indent 1), so a tidied file diffs cleanly against a saved one
    atomic_write_bytes(path, (json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("numbers", nargs="+", help="notebook numbers, e.g. 07 08")
    ap.add_argument("--full", action="store_true", help="run at full size (no OTELAB_CI_SIZE)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--tidy-only", action="store_true", help="only tidy the stored outputs (no kernel, no data)")
    args = ap.parse_args(argv)
    paths = []
    for n in args.numbers:
        found = sorted(HERE.glob(f"{int(n):02d}_*.ipynb"))
        if len(found) != 1:
            ap.error(f"notebook {n}: {len(found)} files match {int(n):02d}_*.ipynb in {HERE}")
        paths.append(found[0])
    if args.tidy_only:
        for path in paths:
            print(f"{path.name}: {'tidied' if tidy(path) else 'already tidy'}, {path.stat().st_size:,} bytes")
        return 0
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
        tidy(path)
        size = path.stat().st_size
        print(f"{path.name}: executed and tidied, {size:,} bytes")
        if size >= MAX_BYTES:
            print(f"{path.name} is {size:,} bytes, over the {MAX_BYTES:,} the tests allow", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
