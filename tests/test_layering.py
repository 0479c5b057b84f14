"""Layers import one way only: targets <- profiling <- predictor <- hwnas."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["targets", "profiling", "predictor", "hwnas"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", ORDER[:-1])
def test_lower_layer_never_imports_a_higher_one(layer):
    higher = set(ORDER[ORDER.index(layer) + 1 :])
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & higher)
        for p in (ROOT / layer).rglob("*.py")
        if _imports(p) & higher
    }
    assert not offenders, f"{layer} imports a higher layer: {offenders}"
