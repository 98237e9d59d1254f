"""The layout keeps its plan: the layer rules of :mod:`otelab._layers` hold, and the checker catches a breach."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otelab import _layers as L

ROOT = Path(__file__).resolve().parents[1] / "otelab"


def test_package_keeps_the_layer_rules():
    assert L.violations(ROOT) == []


def test_every_layer_is_a_module_or_subpackage():
    for layer in L.LAYERS:
        if layer == "otelab":
            continue
        path = ROOT.parent / Path(*layer.split("."))
        assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), layer
        assert set(L.LAYERS[layer]) <= set(L.LAYERS), layer


def test_rules_are_acyclic():
    # a layer's allowed layers never allow it back: the table is a partial order, bottom up
    for layer, lower in L.LAYERS.items():
        for other in lower:
            assert layer not in L.LAYERS[other], (layer, other)


def test_the_brief_arrows():
    # the arrows issue 15 names, read off the table
    assert L.LAYERS["otelab.ote"] == ()
    assert set(L.LAYERS["otelab.toy"]) <= {"otelab.ote", "otelab.config", "otelab.cache"}
    top = {"otelab.engine", "otelab.eval", "otelab.workbench", "otelab.views", "otelab.demo", "otelab.cli"}
    assert not top & set(L.LAYERS["otelab.models"])
    assert not (top - {"otelab.engine"}) & set(L.LAYERS["otelab.engine"])
    assert not {"otelab.views", "otelab.workbench", "otelab.demo", "otelab.cli"} & set(L.LAYERS["otelab.eval"])
    assert not {"otelab.demo", "otelab.cli"} & set(L.LAYERS["otelab.views"])
    assert [k for k, v in L.LAYERS.items() if "otelab.cli" in v] == []
    assert L.layer_of("otelab.__main__") == "otelab.cli"


def _check(module: str, source: str, root: Path = ROOT) -> list[str]:
    return L.module_violations(module, source, root)


@pytest.mark.parametrize("module, source, needle", [
    ("otelab.ote", "import transformers\n", "the core imports transformers"),
    ("otelab.ote", "def f():\n    from transformers import AutoModel\n", "the core imports transformers"),
    ("otelab.ote", "from otelab.config import ci_size\n", "layer otelab.ote imports otelab.config"),
    ("otelab.eval.metrics", "from otelab.views import panels\n", "imports otelab.views.panels"),
    ("otelab.eval.metrics", "from ..views import panels\n", "imports otelab.views.panels"),
    ("otelab.eval.metrics", "from ..workbench.bench import Sizes\n", "imports otelab.workbench.bench"),
    ("otelab.eval.metrics", "def f():\n    import otelab.demo.run\n", "imports otelab.demo.run"),
    ("otelab.models.loading", "def f():\n    from otelab.engine.session import EditSession\n", "layer otelab.engine"),
    ("otelab.engine.keys", "from otelab.eval import metrics\n", "layer otelab.eval"),
    ("otelab.toy.world", "from otelab.models.loading import tiny_model\n", "layer otelab.models"),
    ("otelab.views.panels", "from otelab.cli.tables import format_table\n", "layer otelab.cli"),
    ("otelab.workbench.bench", "from otelab.demo import run\n", "layer otelab.demo"),
    ("otelab", "from otelab.workbench.bench import Workbench\n", "layer otelab.workbench"),
    ("otelab.models.forward", "import transformers\n", "transformers imported at module level"),
    ("otelab.eval.drift", "import umap\n", "umap imported at module level"),
    ("otelab.engine.session", "import torch\nx = torch.linalg.solve(A, B)\n", "solve outside the core"),
    ("otelab.eval.metrics", "y = A.inverse()\n", "inverse outside the core"),
    ("otelab.workbench.stream", "import numpy as np\nnp.linalg.pinv(A)\n", "pinv outside the core"),
    ("otelab.engine.replay", "from torch.linalg import lstsq\n", "lstsq outside the core"),
    ("otelab.eval.drift", "torch.cholesky_solve(B, L)\n", "cholesky_solve outside the core"),
])
def test_checker_reports_a_forbidden_import(module, source, needle):
    found = _check(module, source)
    assert any(needle in line for line in found), found


@pytest.mark.parametrize("module, source", [
    ("otelab.eval.metrics", "from otelab.engine.keys import fill\nfrom . import drift\nfrom .drift import x\n"),
    ("otelab.ote", "import torch\nA = torch.linalg.solve(A, B)\n"),         # the core solves
    ("otelab.toy.references", "import numpy as np\nnp.linalg.lstsq(X, Y)\n"),   # the allowed reference
    ("otelab.views.panels", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import transformers\n"),
    ("otelab.models.loading", "def f():\n    import transformers\n"),
    ("otelab.engine.session", "def solve(layer, K, V):\n    pass\nsolve(1, 2, 3)\n"),  # a local name, no solver
    ("otelab.cli.main", "from otelab.demo.run import run_demo\nimport otelab\n"),
])
def test_checker_accepts_allowed_imports(module, source):
    assert _check(module, source) == []


def test_checker_on_a_fake_package(tmp_path):
    # a whole package with breaches of every kind; relative and lazy imports resolved against it
    pkg = tmp_path / "otelab"
    for sub in ("eval", "views", "models", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from otelab.eval import report\n")
    (pkg / "ote.py").write_text("import torch\nimport transformers\n")
    (pkg / "views" / "panels.py").write_text("import plotly\n")
    (pkg / "eval" / "report.py").write_text("from otelab.views import panels\n")
    (pkg / "eval" / "drift.py").write_text("from ..views.panels import x\nfrom . import report\n")
    (pkg / "models" / "loading.py").write_text("def load():\n    from otelab.cli import main\n")
    (pkg / "cli" / "main.py").write_text("from otelab.views import panels\n")
    (pkg / "newthing.py").write_text("")
    found = [v for v in L.violations(pkg) if "PENDING" not in v]
    expect = [
        "otelab.eval.drift:1: layer otelab.eval imports otelab.views.panels",
        "otelab.eval.report:1: layer otelab.eval imports otelab.views.panels",
        "otelab.models.loading:2: layer otelab.models imports otelab.cli",
        "otelab.newthing: belongs to no layer",
        "otelab.ote:2: the core imports transformers",
    ]
    assert len(found) == len(expect), found
    for line, want in zip(found, expect):
        assert line.startswith(want), (line, want)


@pytest.mark.parametrize("path, line, needle", [
    ("eval/report.py", "from otelab.views import panels", "layer otelab.eval imports otelab.views.panels"),
    ("models/forward.py", "def f():\n    from ..engine import keys", "layer otelab.models imports otelab.engine.keys"),
    ("ote.py", "import transformers", "the core imports transformers"),
    ("engine/session.py", "x = torch.linalg.inv(torch.eye(2))", "inv outside the core"),
])
def test_a_forbidden_line_added_to_the_real_package_fails(tmp_path, path, line, needle):
    # the package as it is, plus one bad line: exactly that line is reported
    import shutil

    pkg = tmp_path / "otelab"
    shutil.copytree(ROOT, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(pkg / path, "a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")
    found = L.violations(pkg)
    assert len(found) == 1 and needle in found[0], found


def test_stale_pending_entry_is_reported(tmp_path, monkeypatch):
    pkg = tmp_path / "otelab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.setattr(L, "PENDING", {("otelab.eval.report", "otelab.cli"): "moved"})
    assert any("stale" in v for v in L.violations(pkg))


def test_import_otelab_loads_no_top_layer():
    code = ("import json, sys, otelab\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('otelab') or m in "
            "('transformers', 'umap', 'plotly', 'ipywidgets'))))")
    env_path = str(ROOT.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": env_path}).stdout
    loaded = json.loads(out)
    assert "otelab" in loaded
    top = ("otelab.workbench", "otelab.views", "otelab.demo", "otelab.cli", "otelab.paper")
    assert [m for m in loaded if m.startswith(top)] == []
    assert [m for m in loaded if not m.startswith("otelab")] == []


def test_architecture_doc_is_current():
    # docs/architecture.md is generated from the docstrings and the layer table; a stale copy fails here
    make = ROOT.parent / "docs" / "make_architecture.py"
    done = subprocess.run([sys.executable, str(make), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
