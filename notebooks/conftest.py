"""nbval settings for the notebooks: figures, widgets and progress bars are not compared, only printed text.

Plotly figures embed their data as floats and random div ids (``text/html``), and widget views
carry random model ids, so their outputs differ from run to run and machine to machine. The
notebooks assert their claims in code and print rounded numbers; those printed lines are the
baseline nbval compares.

Progress bars (tqdm widgets, tqdm lines on stderr) are left out of both sides of the comparison:
``execute.py``'s tidy removes them from the committed notebooks, which are opened without a
kernel, while a run prints them again (transformers' "Loading weights" bar in a cell that loads
a model).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

SKIP_MIME = (
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
    "text/html",
)

# execute.py is a script beside this file, not an importable module: load it by path
_spec = importlib.util.spec_from_file_location("notebooks_execute", Path(__file__).with_name("execute.py"))
_execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_execute)


def pytest_collectstart(collector):
    # nbval's notebook collector (IPyNbFile) owns `skip_compare`; other collectors are untouched
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + SKIP_MIME


def pytest_itemcollected(item):
    # nbval's cell item (IPyNbCell) calls self.compare_outputs(run's outputs, stored outputs)
    compare = getattr(item, "compare_outputs", None)
    if compare is not None:
        item.compare_outputs = lambda test, ref, skip_compare=None: compare(
            _execute.without_progress(test), _execute.without_progress(ref), skip_compare)
