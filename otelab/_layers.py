"""The layer rules of the package as data, and a checker that reads every module's imports (AST, nothing imported).

A *layer* is a top-level module or subpackage of ``otelab`` (``otelab.ote``, ``otelab.engine``, ...). A module may
import its own layer and the layers :data:`LAYERS` lists for it; every other ``otelab`` import is a violation, lazy
imports inside functions and ``TYPE_CHECKING`` imports included (they state a dependency just the same).
Three more rules: the core never imports ``transformers``; ``transformers`` and ``umap`` are imported inside
functions only (``import otelab`` stays fast); no linear solve or inverse outside the core (one normal equation).

``tests/test_layers.py`` runs :func:`violations` on the package; ``docs/make_architecture.py`` prints the table.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

_BASE = ("otelab.config", "otelab.cache")
_BELOW_ENGINE = ("otelab.ote", "otelab.models", "otelab.data") + _BASE

# layer -> the lower layers it may import, bottom up. Every otelab module belongs to exactly one layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "otelab.config": (),
    "otelab.cache": (),
    "otelab.ote": (),
    "otelab._layers": (),
    "otelab.toy": ("otelab.ote",) + _BASE,
    "otelab.data": _BASE,
    "otelab.models": ("otelab.data",) + _BASE,
    "otelab.engine": _BELOW_ENGINE,
    "otelab.eval": ("otelab.engine",) + _BELOW_ENGINE,
    "otelab.workbench": ("otelab.eval", "otelab.engine") + _BELOW_ENGINE,
    "otelab.paper": ("otelab.workbench", "otelab.eval", "otelab.engine") + _BELOW_ENGINE,
    # views may draw the toy and the paper's tables (the demo's toy figure belongs in the panel table)
    "otelab.views": ("otelab.paper", "otelab.workbench", "otelab.eval", "otelab.engine", "otelab.toy")
    + _BELOW_ENGINE,
    "otelab.demo": ("otelab.views", "otelab.paper", "otelab.workbench", "otelab.eval", "otelab.engine", "otelab.toy")
    + _BELOW_ENGINE,
    "otelab.cli": ("otelab", "otelab.demo", "otelab.views", "otelab.paper", "otelab.workbench", "otelab.eval",
                   "otelab.engine", "otelab.toy") + _BELOW_ENGINE,
    # the package itself: the public API re-exports the lower layers, never the top ones (import otelab stays light)
    "otelab": ("otelab.eval", "otelab.engine", "otelab.toy") + _BELOW_ENGINE,
}
# ``python -m otelab`` would belong with the command line
ALIASES = {"otelab.__main__": "otelab.cli"}

# imports that break a rule on purpose, each with the reason; (module, imported layer) -> why
ALLOWED: dict[tuple[str, str], str] = {}
# known breaches waiting for a move (issue 15); the layer test fails on a stale entry, so remove it with the fix
PENDING: dict[tuple[str, str], str] = {}

HEAVY = ("transformers", "umap")           # third-party packages imported only inside functions
CORE_FORBIDDEN = ("transformers",)         # never imported by the core, not even lazily
SOLVERS = frozenset({                      # attribute / function names of a linear solve or an inverse
    "solve", "solve_ex", "inv", "inv_ex", "inverse", "pinv", "pinverse", "lstsq", "cholesky_solve", "lu_solve",
    "solve_triangular", "cho_solve",
})
# modules that may solve outside the core, each with the reason
SOLVE_ALLOWED: dict[str, str] = {
    "otelab.toy.references": "the independent float64 numpy reference (lstsq / solve) that `otelab verify` checks the "
                         "core against; a second solver is its point",
}


def layer_of(module: str) -> str:
    """The layer a dotted ``otelab`` module name belongs to: ``otelab.eval.drift`` -> ``otelab.eval``.

    Arguments:
        module: a dotted module name starting with ``otelab``.
    Returns:
        A key of :data:`LAYERS`.
    """
    module = ALIASES.get(module, module)
    parts = module.split(".")
    return ".".join(parts[:2])


def iter_modules(root: Path) -> Iterator[tuple[str, Path]]:
    """Every module under the package folder ``root`` (the folder named ``otelab``), sorted.

    Arguments:
        root: the package folder.
    Returns:
        An iterator of (dotted module name, file path); a package's ``__init__.py`` is named after the package.
    """
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, root: Path) -> list[str]:
    """The dotted names a ``from ... import ...`` statement loads (relative imports resolved)."""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[:len(package) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = []
    for alias in node.names:
        sub = Path(root.parent, *f"{target}.{alias.name}".split("."))
        # ``from otelab import ote`` loads the module otelab.ote; ``from otelab import x`` only the package
        names.append(f"{target}.{alias.name}" if sub.with_suffix(".py").exists() or sub.is_dir() else target)
    return names


class _Imports(ast.NodeVisitor):
    """Every import statement of a tree with whether it runs at import time, in one pass."""

    def __init__(self):
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self._depth = 0        # > 0 inside a function or under ``if TYPE_CHECKING:``; neither runs at import

    def _nested(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_If(self, node: ast.If):
        if "TYPE_CHECKING" in ast.dump(node.test):
            self._nested(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import):
        self.found.append((node, self._depth == 0))

    visit_ImportFrom = visit_Import


def _imports(tree: ast.Module, module: str, is_package: bool, root: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported dotted name, line, at module level) for every import of a module, lazy ones included."""
    collector = _Imports()
    collector.visit(tree)
    for node, top in collector.found:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, top
        else:
            for name in _resolve(module, is_package, node, root):
                yield name, node.lineno, top


def _solver_calls(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(name, line) of every call or ``from ... import`` of a solver name (``torch.linalg.solve``, ``A.inverse()``)."""
    for node in ast.walk(tree):
        # attribute calls only: a bare ``solve(...)`` is a local name (the engine's per-layer callback); a solver
        # imported bare (``from torch.linalg import solve``) is caught at its import
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SOLVERS:
            yield node.func.attr, node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("linalg"):
            for alias in node.names:
                if alias.name in SOLVERS:
                    yield alias.name, node.lineno


def module_violations(module: str, source: str | ast.Module, root: Path, is_package: bool = False) -> list[str]:
    """The rule breaches of one module's source.

    Arguments:
        module: its dotted name (``otelab.eval.report``); decides its layer.
        source: its Python source (or its parsed tree).
        root: the package folder, to tell a submodule (``from otelab import ote``) from a name.
        is_package: whether the source is a package's ``__init__.py`` (relative imports start from it).
    Returns:
        One line per breach, ``path-like name:line: what``; empty when the module keeps every rule.
    """
    tree = source if isinstance(source, ast.Module) else ast.parse(source)
    layer = layer_of(module)
    allowed = set(LAYERS.get(layer, ())) | {layer}
    out = []
    for name, line, top in _imports(tree, module, is_package, root):
        head = name.split(".")[0]
        if head == "otelab":
            target = layer_of(name)
            key = (module, target)
            if target not in allowed and key not in ALLOWED and key not in PENDING:
                out.append(f"{module}:{line}: layer {layer} imports {name} (layer {target})")
        elif layer == "otelab.ote" and head in CORE_FORBIDDEN:
            out.append(f"{module}:{line}: the core imports {name}")
        elif top and head in HEAVY:
            out.append(f"{module}:{line}: {name} imported at module level (import it inside the function)")
    if module not in SOLVE_ALLOWED and layer != "otelab.ote":
        out += [f"{module}:{line}: {name} outside the core (solve the normal equation in otelab.ote)"
                for name, line in _solver_calls(tree)]
    return out


def violations(root: Path | str) -> list[str]:
    """Every rule breach in the package folder ``root``, plus stale :data:`PENDING` entries.

    Arguments:
        root: the package folder (``.../otelab``).
    Returns:
        One line per breach, sorted; empty when the layout keeps its plan.
    """
    root = Path(root)
    out, seen = [], set()
    for module, path in iter_modules(root):
        if layer_of(module) not in LAYERS:
            out.append(f"{module}: belongs to no layer; add {layer_of(module)} to otelab._layers.LAYERS")
            continue
        tree, is_package = ast.parse(path.read_text()), path.name == "__init__.py"
        seen.update((module, layer_of(n)) for n, _, _ in _imports(tree, module, is_package, root)
                    if n.split(".")[0] == "otelab")
        out += module_violations(module, tree, root, is_package)
    out += [f"{m}: PENDING entry for {t} is stale (the import is gone); remove it from otelab._layers"
            for m, t in PENDING if (m, t) not in seen]
    return sorted(out)
