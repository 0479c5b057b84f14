#!/usr/bin/env python3
"""Predicted latency of each sweep run's architecture, from the run's final architecture
logits: derived with the collapse guard alone, with the guard and the latency price (the
run's loss per ms: weight / latency_0, or lambda / budget; `derive(..., price=)`), and
without a guard (the plain DARTS argmax); and the mean prediction over 300 architectures
sampled from the logits (the search's distribution; generator seed 0).

    python bench/sweep_guard_check.py PREDICTOR.pt RUN [RUN ...]   (digits search runs)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from hwnas.search.derive import derive, param_free_share
from hwnas.search.latency import LatencyTerm
from hwnas.space import get_space
from hwnas.space.encoding import ArchParameters, encode
from predictor import load_predictor

space = get_space("digits")
term = LatencyTerm(load_predictor(sys.argv[1]), space)
for run in map(Path, sys.argv[2:]):
    st = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")
    summary = json.loads((run / "summary.json").read_text())
    if summary.get("latency_budget_ms") is not None:
        price = (summary.get("final_latency_weight") or 0.0) / summary["latency_budget_ms"]
    else:
        price = (summary.get("latency_weight") or 0.0) / term.latency0_ms
    alpha = ArchParameters(space)
    alpha.load_state_dict(st["alpha"])
    alpha.requires_grad_(False)
    g, _ = derive(alpha, 2)
    w, log = derive(alpha, 2, term=term, price=price)
    u, _ = derive(alpha, None)
    gen = torch.Generator().manual_seed(0)
    sampled = float(np.mean(term.batch_ms(np.stack([encode(alpha.sample(gen)) for _ in range(300)]))))
    print(
        f"{run}: guarded {term.derived_ms(g):.3f} ms ({param_free_share(g):.0%} param-free), "
        f"priced {term.derived_ms(w):.3f} ({param_free_share(w):.0%}; price {price:.3g}/ms, "
        f"{sum(line.startswith('latency price') for line in log)} changes), "
        f"unguarded {term.derived_ms(u):.3f} ({param_free_share(u):.0%}), relaxed {float(term.predicted_ms(alpha)):.3f}, "
        f"sampled mean {sampled:.3f}"
    )
