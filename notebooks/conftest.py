"""nbval settings for the notebooks: figures and widgets are not compared, only printed text.

Plotly figures embed their data as floats and random div ids (``text/html``), and widget views
carry random model ids, so their outputs differ from run to run and machine to machine. The
notebooks assert their claims in code and print rounded numbers; those printed lines are the
baseline nbval compares.
"""
from __future__ import annotations

SKIP_MIME = (
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-view+json",
    "application/vnd.jupyter.widget-state+json",
    "text/html",
)


def pytest_collectstart(collector):
    # nbval's notebook collector (IPyNbFile) owns `skip_compare`; other collectors are untouched
    if hasattr(collector, "skip_compare"):
        collector.skip_compare = tuple(collector.skip_compare) + SKIP_MIME
