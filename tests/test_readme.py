"""README.md's Python examples import what exists: every ``otelab`` import in its code blocks resolves."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _otelab_imports() -> list[str]:
    """The ``import otelab…`` / ``from otelab… import …`` statements of README's ```python blocks, as source."""
    out = []
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "otelab":
                out.append(ast.unparse(node))
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "otelab" for a in node.names):
                out.append(ast.unparse(node))
    return out


def test_readme_has_otelab_examples():
    assert len(_otelab_imports()) >= 5


@pytest.mark.parametrize("statement", _otelab_imports())
def test_readme_import_resolves(statement):
    exec(compile(statement, "README.md", "exec"), {})
