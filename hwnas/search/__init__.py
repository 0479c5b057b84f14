"""Hierarchical latency-aware differentiable search (H-DAS + a latency predictor).

    from hwnas.search import SearchConfig, run_search
    result = run_search(SearchConfig(space="digits", predictor="predictor.pt", latency_weight=0.5,
                                     epochs=10), out="runs/search")
    result.architecture   # the derived Architecture (also runs/search/architecture.json)
    result.summary        # predicted_latency_ms, val_accuracy, ... (also summary.json)

`hwnas search` is the command line over `run_search`; docs/search.md describes the method.
"""

from __future__ import annotations

from hwnas.search.config import SearchConfig
from hwnas.search.derive import derive, param_free_share
from hwnas.search.run import SearchResult, run_search
from hwnas.search.step import Searcher

__all__ = ["SearchConfig", "SearchResult", "Searcher", "derive", "param_free_share", "run_search"]
