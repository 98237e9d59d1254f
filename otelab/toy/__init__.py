"""The synthetic OLS toy: a seeded world, the editing rules run on it, its plots, exercises and ``otelab verify``.

The toy calls the same core (:mod:`otelab.ote`) as the real-model engine; nothing here touches a model.
"""
from otelab.toy.world import (
    RULES, TASKS, ToyConfig, ToyTrace, ToyWorld, collapse_summary, collapse_sweep, forgetting_table, make_world,
    run_rule,
)

__all__ = ["ToyConfig", "ToyWorld", "ToyTrace", "make_world", "run_rule", "RULES", "TASKS",
           "collapse_summary", "collapse_sweep", "forgetting_table"]
