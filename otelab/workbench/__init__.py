"""Orchestration above the evaluation layer: the ``Workbench`` (one or two sessions on one stream, no widget code)
and long streams (``StreamEval``, ``run_stream``, recorded runs)."""
from otelab.workbench.bench import Sizes, Workbench, WorkbenchData, WorkbenchError, load_data

__all__ = ["Sizes", "Workbench", "WorkbenchData", "WorkbenchError", "load_data"]
