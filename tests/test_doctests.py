"""The docstring examples of the core, the engine and a few shared rules run, and the main public functions have one."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import otelab.engine

# the core, the engine, and the one token rule, the one metric vocabulary, the scoring's packing and the
# workbench's status texts
MODULES = (["otelab.ote"] + sorted(f"otelab.engine.{m.name}" for m in pkgutil.iter_modules(otelab.engine.__path__))
           + ["otelab.models.tokens", "otelab.eval.measure", "otelab.eval.packing", "otelab.workbench.status"])
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# public names whose docstring must carry a runnable example
DOCUMENTED = {
    "otelab.ote": ["ote_update", "aligned_update", "naive_update", "SequentialEditor", "nullspace_projector",
                   "prune", "rect", "rls_step"],
    "otelab.engine.session": ["EditSession"],
    "otelab.engine.keys": ["compute_keys"],
    "otelab.engine.replay": ["LayerwiseKeys"],
    "otelab.models.tokens": ["last_overlapping"],
    "otelab.eval.measure": ["metric"],
    "otelab.eval.packing": ["pack_rows", "tree_row"],
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"


@pytest.mark.parametrize("name, objects", DOCUMENTED.items())
def test_main_functions_have_examples(name, objects):
    module = importlib.import_module(name)
    missing = [o for o in objects if ">>>" not in (getattr(module, o).__doc__ or "")]
    assert missing == [], f"{name}: no example in the docstring of {missing}"


def test_examples_are_found():
    # a renamed flag or a module that is not collected would make the run above pass vacuously
    found = doctest.DocTestFinder().find(importlib.import_module("otelab.ote"))
    assert sum(len(t.examples) for t in found) >= 40
