#!/usr/bin/env python3
"""Predicted latency of each sweep run's architecture: derived with the collapse guard (as
written) and without it (the plain DARTS argmax), from the run's final architecture logits.

    python bench/sweep_guard_check.py PREDICTOR.pt RUN [RUN ...]   (digits search runs)
"""

from __future__ import annotations

import sys

import torch

from hwnas.search.derive import derive, param_free_share
from hwnas.search.latency import LatencyTerm
from hwnas.space import get_space
from hwnas.space.encoding import ArchParameters
from predictor import load_predictor

space = get_space("digits")
term = LatencyTerm(load_predictor(sys.argv[1]), space)
for run in sys.argv[2:]:
    st = torch.load(f"{run}/checkpoint.pt", weights_only=True, map_location="cpu")
    alpha = ArchParameters(space)
    alpha.load_state_dict(st["alpha"])
    alpha.requires_grad_(False)
    g, _ = derive(alpha, 2)
    u, _ = derive(alpha, None)
    print(f"{run}: guarded {term.derived_ms(g):.3f} ms ({param_free_share(g):.0%} param-free), "
          f"unguarded {term.derived_ms(u):.3f} ms ({param_free_share(u):.0%}), relaxed {float(term.predicted_ms(alpha)):.3f}")
