"""Hierarchical latency-aware differentiable search (H-DAS + a latency predictor).

    from hwnas.search import SearchConfig, run_search
    result = run_search(SearchConfig(space="digits", predictor="predictor.pt", latency_weight=0.5,
                                     epochs=10), out="runs/search")
    result.architecture   # the derived Architecture (also runs/search/architecture.json)
    result.summary        # predicted_latency_ms, val_accuracy, ... (also summary.json)

`hwnas search` is the command line over `run_search`; docs/search.md describes the method.
"""

from __future__ import annotations

import importlib
from typing import Any

from hwnas.search.config import SearchConfig

#: Names served from their modules on first use, so `hwnas.search.config` (which the CLI's
#: flags read) stays light: no torch until a search runs.
_LAZY = {
    "SearchResult": "hwnas.search.run",
    "run_search": "hwnas.search.run",
    "Searcher": "hwnas.search.step",
    "derive": "hwnas.search.derive",
    "param_free_share": "hwnas.search.derive",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwnas.search' has no attribute {name!r}")


__all__ = ["SearchConfig", "SearchResult", "Searcher", "derive", "param_free_share", "run_search"]
