"""Static checks of the notebooks (their execution is nbval's job, under ``notebooks/``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MARKER = re.compile(r"^\s*#.*\bNBVAL_[A-Z_]+")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_nbval_markers_are_exact_and_explained(path):
    # nbval honours a marker only when the comment is exactly "# NBVAL_...": text after it on the
    # same line silently disables it. The reason goes on the next comment line.
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        lines = "".join(cell["source"]).splitlines()
        for j, line in enumerate(lines):
            if MARKER.match(line):
                assert re.fullmatch(r"\s*#\s*NBVAL_[A-Z_]+\s*", line), f"cell {i}: {line!r} has text after the marker"
                nxt = lines[j + 1] if j + 1 < len(lines) else ""
                assert nxt.lstrip().startswith("# reason:"), f"cell {i}: {line.strip()} needs a '# reason:' line"


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_saved_widget_state(path):
    # nbconvert --execute stores every widget's state in the metadata (20 MB for notebook 06);
    # it is not compared by nbval and a kernel rebuilds it, so committed notebooks carry none
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], f"{path.name}: strip metadata['widgets'] before committing"
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size} bytes"


# notebook -> the exercises whose reference solution it keeps in a hidden cell (otelab.exercises.SOLUTIONS)
HIDDEN_SOLUTIONS = {"01_null_space_collapse": ("eq4",)}


@pytest.mark.parametrize("stem", sorted(HIDDEN_SOLUTIONS))
def test_exercise_solutions_are_hidden_after_the_exercise(stem):
    # ARENA's layout: the exercise cell (the learner's stub and the checker), then the solution in a
    # collapsed cell; the solution's code is nowhere visible above it, and it is otelab's own copy
    from otelab.exercises import solution

    cells = json.loads((NOTEBOOKS[0].parent / f"{stem}.ipynb").read_text())["cells"]
    code = [("".join(c["source"]), c["metadata"]) for c in cells if c["cell_type"] == "code"]
    for name in HIDDEN_SOLUTIONS[stem]:
        sol = solution(name)
        body = sol.source[sol.source.index(f"def {sol.function}"):]
        where = [i for i, (src, _) in enumerate(code) if body in src]
        assert len(where) == 1, f"{stem}: the solution of {name!r} should be in one cell, found {where}"
        i = where[0]
        src, meta = code[i]
        assert meta.get("jupyter", {}).get("source_hidden") is True, f"{stem}: the solution cell is not hidden"
        assert f"assert check_{name}({sol.function})" in src
        stub = code[i - 1][0]
        assert f"def {sol.function}(" in stub and f"check_{name}({sol.function})" in stub and "NotImplementedError" in stub
