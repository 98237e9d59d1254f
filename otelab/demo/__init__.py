"""``otelab demo``: verification plus aligned-vs-misaligned streams, ``metrics.json`` and ``report.html``."""
from otelab.demo.run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
