"""Static checks of the notebooks (their execution is nbval's job, under ``notebooks/``)."""
from __future__ import annotations

import importlib.util
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


# notebook -> the exercises whose reference solution it keeps in a hidden cell (otelab.toy.exercises.SOLUTIONS)
HIDDEN_SOLUTIONS = {"01_null_space_collapse": ("eq4",),
                    "02_lemma_3_1_equivalence": ("ote_update", "aligned_step"),
                    "03_prop_3_4_building_stable_editors": ("prop_a3",),
                    "04_conflicts_and_memorize_the_latest": ("conflict_step",)}


@pytest.mark.parametrize("stem", sorted(HIDDEN_SOLUTIONS))
def test_exercise_solutions_are_hidden_after_the_exercise(stem):
    # ARENA's layout: the exercise cell (the learner's stub and the checker), then the solution in a
    # collapsed cell; the solution's code is nowhere visible above it, and it is otelab's own copy
    from otelab.toy.exercises import solution

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


def _execute_module():
    # notebooks/ is not a package: load notebooks/execute.py by path
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS[0].parent / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_open_without_a_kernel(path):
    # opened without a kernel, a widget output shows its text/plain and a stored progress bar shows how far a
    # past run had got (issue 16): the note stands in for every widget, and no tqdm text is stored anywhere
    ex = _execute_module()
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            plain = ex._text(data.get("text/plain", ""))
            if ex.WIDGET_VIEW in data:
                assert plain == ex.WIDGET_NOTE, f"{path.name} cell {i}: widget fallback {plain[:60]!r}"
            text = plain + ex._text(out.get("text", ""))
            assert not ex.PROGRESS_BAR.search(text), f"{path.name} cell {i}: stored progress bar {text[:60]!r}"
            assert not re.match(r"(VBox|HBox|FigureWidget)\(", plain), f"{path.name} cell {i}: raw widget repr"
    assert not ex.tidy_notebook(nb), f"{path.name}: run python notebooks/execute.py --tidy-only {path.name[:2]}"


def _code(source, *outputs):
    return {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": source, "outputs": list(outputs)}


def test_tidy_keeps_results_drops_what_only_a_past_run_shows(tmp_path):
    ex = _execute_module()
    view = {"model_id": "abc", "version_major": 2, "version_minor": 0}
    widget = {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {ex.WIDGET_VIEW: view, "text/plain": ["VBox(children=(HBox(children=(IntSlider(value=200…"]}}
    bar_widget = {"output_type": "display_data", "metadata": {},
                  "data": {ex.WIDGET_VIEW: view, "text/plain": ["Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"]}}
    bar_stderr = {"output_type": "stream", "name": "stderr",
                  "text": ["Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]\r",
                           "Loading weights: 100%|██████████| 272/272 [00:01<00:00, 250.1it/s]\n"]}
    warning = {"output_type": "stream", "name": "stderr",
               "text": ["UserWarning: something\n", " 50%|█████     | 1/2 [00:01<00:01, 1.0it/s]\n"]}
    result = {"output_type": "stream", "name": "stdout", "text": ["efficacy 0.93\n"]}
    timing = {"output_type": "stream", "name": "stdout", "text": ["step 2 · last step 119.4 s\n"]}
    nb = {"metadata": {"widgets": {"state": {}}}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# title"},
        _code("ui", widget),
        _code("lm = load_model()", bar_widget, bar_stderr, warning, result),
        _code("# NBVAL_IGNORE_OUTPUT\n# reason: the status line reports wall-clock step times\nprint(wb.status_line())",
              timing),
        _code("# NBVAL_IGNORE_OUTPUT\n# reason: the recorded runs grow as the experiments finish\nprint(runs)", result),
    ]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert ex.tidy(path) is True
    got = json.loads(path.read_text())
    assert "widgets" not in got["metadata"]
    cells = got["cells"]
    assert cells[1]["outputs"][0]["data"] == {ex.WIDGET_VIEW: view, "text/plain": [ex.WIDGET_NOTE]}
    # a stderr stream keeps what is not a bar: someone's message
    assert cells[2]["outputs"] == [dict(warning, text="UserWarning: something\n"), result]
    assert cells[3]["outputs"] == []
    assert cells[4]["outputs"] == [result]             # ignored for another reason than time: kept
    text = path.read_text()
    assert ex.tidy(path) is False and path.read_text() == text


def test_nbval_compares_runs_without_their_progress_bars():
    # notebooks/conftest.py filters nbval's own outputs (NotebookNode, read by attribute) through without_progress
    import nbformat

    ex = _execute_module()
    outs = [nbformat.from_dict(o) for o in (
        {"output_type": "display_data", "metadata": {},
         "data": {ex.WIDGET_VIEW: {"model_id": "abc"}, "text/plain": "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]"}},
        {"output_type": "stream", "name": "stderr", "text": "Loading weights: 100%|██████████| 272/272 [00:01<00:00, 250.1it/s]\n"},
        {"output_type": "stream", "name": "stderr", "text": "UserWarning: x\n 50%|█████     | 1/2 [00:01<00:01, 1.0it/s]\r"},
        {"output_type": "stream", "name": "stdout", "text": "replay: 10 records\n"})]
    kept = ex.without_progress(outs)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in kept] == [
        ("stream", "stderr", "UserWarning: x\n"), ("stream", "stdout", "replay: 10 records\n")]


def test_sanitizer_maps_the_widget_note_and_a_fresh_repr_to_one_token():
    # nbval compares text/plain after notebooks/sanitize.cfg: the stored note and the repr a run prints must agree
    from nbval.plugin import get_sanitize_patterns

    ex = _execute_module()
    patterns = get_sanitize_patterns((NOTEBOOKS[0].parent / "sanitize.cfg").read_text())

    def sanitize(s):
        for regex, replace in patterns:   # as nbval's IPyNbCell.sanitize
            s = re.sub(regex, replace, s)
        return s

    fresh = "VBox(children=(HBox(children=(VBox(children=(IntSlider(value=200, continuous_update=False)),)),)),))"
    assert sanitize(ex.WIDGET_NOTE) == sanitize(fresh) == "WIDGET-REPR"
    assert sanitize("Tab(children=())") != "WIDGET-REPR"   # only the widgets the notebooks show are masked
