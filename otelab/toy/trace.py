"""The toy's per-step record: what :func:`otelab.toy.world.run_rule` measures after every step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

Tensor = torch.Tensor

__all__ = ["ToyTrace", "METRICS"]


# --------------------------------------------------------------------------- the trace

METRICS = ("preserved_error", "edits_error", "latest_error", "delta_norm", "cond", "ote_distance",
           "virtual_ote_distance", "omitted_norm", "error_norm")


@dataclass
class ToyTrace:
    """Per-step metrics of one rule on one world (index i is after step i + 1).

    Attributes:
        rule: the rule's name; task: the task whose OTE ``ote_distance`` compares with.
        preserved_error: ``‖W_t K0 − V0‖ / ‖V0‖``.
        edits_error: ``‖W_t K − V‖ / ‖V‖`` over every edited key at its latest requested value.
        latest_error: the same over the latest batch.
        delta_norm: ``‖W_t − W0‖_F``.
        cond: condition number of ``W_t`` (NaN on steps where it was not computed).
        ote_distance: ``‖W_t − W_OTE,t‖ / ‖W_OTE,t − W0‖`` for the rule's task.
        virtual_ote_distance: the same for ``W_t + E_t`` (Algorithm 1's virtual weights, Prop. A.3);
            NaN unless the editor carries an error ``E``.
        omitted_norm: ``‖S_t C0 P‖`` with ``S_t = W_t − W0``, the term Eq. 3 drops from Eq. 4
            (memorize rules only; NaN otherwise).
        error_norm: ``‖E_t‖_F``, Algorithm 1's carried error (NaN unless the editor carries one).
        W_final: ``W_T`` ``[d_o, d_i]``.
    """

    rule: str
    task: str
    preserved_error: list = field(default_factory=list)
    edits_error: list = field(default_factory=list)
    latest_error: list = field(default_factory=list)
    delta_norm: list = field(default_factory=list)
    cond: list = field(default_factory=list)
    ote_distance: list = field(default_factory=list)
    virtual_ote_distance: list = field(default_factory=list)
    omitted_norm: list = field(default_factory=list)
    error_norm: list = field(default_factory=list)
    W_final: Optional[Tensor] = field(default=None, repr=False)

    @property
    def steps(self) -> list[int]:
        return list(range(1, len(self.preserved_error) + 1))

    def to_dict(self) -> dict[str, list]:
        """``{"step": [...], metric: [...]}``, plain floats."""
        return {"step": self.steps, **{m: list(getattr(self, m)) for m in METRICS}}

    def to_frame(self):
        """The trace as a pandas DataFrame, one row per step, with ``rule`` and ``task`` columns."""
        import pandas as pd

        df = pd.DataFrame(self.to_dict())
        df.insert(0, "rule", self.rule)
        df.insert(1, "task", self.task)
        return df

    def at(self, metric: str, step: int) -> float:
        """The value of ``metric`` after ``step`` (1-based)."""
        return getattr(self, metric)[step - 1]
