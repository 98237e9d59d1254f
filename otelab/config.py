"""Run-size switches shared by the CLI, the notebooks and the tests."""
from __future__ import annotations

import os

CI_ENV = "OTELAB_CI_SIZE"
CI_COV_TOKENS = 20_000  # tokens of the preserved covariance at CI size


def ci_size() -> bool:
    """True when ``$OTELAB_CI_SIZE`` is set to something other than ``""``, ``0``, ``false`` or ``no``."""
    return os.environ.get(CI_ENV, "").strip().lower() not in ("", "0", "false", "no")
