"""Deriving the discrete architecture, with the collapse guard.

`ArchParameters.derive()` applies DARTS's rule (per node the two strongest inputs by edge
weight, each with its most likely op; per stage the most likely depth and each cell's two
strongest connections). DARTS then tends to collapse onto parameter-free ops (skip and
pooling), and a latency term pushes the same way. The guard is P-DARTS's remedy, widened
from skips to every parameter-free op: a cell keeps at most `max_param_free` parameter-free
edges (default 2 of its 2 x nodes); the weakest extra ones (lowest op probability) take the
most likely op with parameters on the same edge. Each change is logged.

`--derive priced` also prices the derive (`price` > 0: the search's loss per ms of predicted
latency): after the guard, `repair.weigh_latency` makes the single changes that lower the
predicted latency by more than they cost in architecture score at that price, where the
argmax would pick among a latency search's near-ties at random. At price 0 the derive is
DARTS's plus the guard. Opt-in: on digits it lowered the prediction, not the measured
latency (docs/benchmarks.md, issue 18).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hwnas.search.config import DEFAULT_MAX_PARAM_FREE, PARAM_FREE_OPS
from hwnas.search.repair import weigh_latency
from hwnas.space import CELL_OPS, NUM_STAGES, Architecture, Genotype, Stage
from hwnas.space.encoding import ArchParameters

if TYPE_CHECKING:
    from hwnas.search.latency import LatencyTerm


def _cell_name(c: int) -> str:
    return f"stage{c}.cell" if c < NUM_STAGES else f"reduction{c - NUM_STAGES}.cell"


def param_free_share(arch: Architecture) -> float:
    """Share of cell edges (every cell, every node, both edges) that carry no parameters."""
    genos = [s.cell for s in arch.stages] + list(arch.reductions)
    edges = [op for g in genos for node in g for op, _ in node]
    return sum(op in PARAM_FREE_OPS for op in edges) / len(edges)


def expected_depth(alpha: ArchParameters) -> list[float]:
    """E[cells] per stage under the depth softmax."""
    with torch.no_grad():
        out = []
        for s in range(NUM_STAGES):
            probs = alpha.depth_probs(s)  # on the search's device: the choices go there, not back
            choices = torch.tensor(alpha.space.depth_choices, dtype=torch.float32, device=probs.device)
            out.append(float((probs * choices).sum()))
        return out


def _guard(g: Genotype, c: int, alpha: ArchParameters, cap: int, log: list[str]) -> Genotype:
    nodes = [list(node) for node in g]
    free = []
    for i, node in enumerate(nodes):
        probs = torch.softmax(alpha.alpha[alpha._node(c, i)].detach(), dim=-1)
        for e, (op, j) in enumerate(node):
            if op in PARAM_FREE_OPS:
                free.append((float(probs[j, CELL_OPS.index(op)]), i, e, j, probs[j]))
    free.sort(key=lambda t: t[0])
    for p, i, e, j, probs in free[: max(0, len(free) - cap)]:
        ranked = sorted(
            (o for o in CELL_OPS if o not in PARAM_FREE_OPS), key=lambda o: -float(probs[CELL_OPS.index(o)])
        )
        old = nodes[i][e][0]
        nodes[i][e] = (ranked[0], j)
        log.append(
            f"{_cell_name(c)} node {i} input {j}: {old} (p={p:.3f}) -> {ranked[0]} "
            f"(p={float(probs[CELL_OPS.index(ranked[0])]):.3f}): more than {cap} parameter-free edges"
        )
    return tuple(tuple(node) for node in nodes)  # type: ignore[return-value]


def derive(
    alpha: ArchParameters,
    max_param_free: int | None = DEFAULT_MAX_PARAM_FREE,
    *,
    term: LatencyTerm | None = None,
    price: float = 0.0,
    kinds: frozenset[str] = frozenset({"node", "depth", "slot"}),
) -> tuple[Architecture, list[str]]:
    """The discrete architecture of `alpha` (DARTS rule) with at most `max_param_free`
    parameter-free edges per cell (None: no guard), then, with `term` and `price` > 0, the
    changes worth their latency at that price (to choices of `kinds`: `weigh_latency`);
    returns it and the changes made."""
    arch, log = _guarded(alpha, max_param_free)
    if term is None or price <= 0:
        return arch, log
    arch, priced = weigh_latency(arch, alpha, term, price, max_param_free=max_param_free, kinds=kinds)
    return arch, log + priced


def _guarded(alpha: ArchParameters, max_param_free: int | None) -> tuple[Architecture, list[str]]:
    arch = alpha.derive()
    if max_param_free is None:
        return arch, []
    log: list[str] = []
    stages = tuple(
        Stage(cell=_guard(st.cell, s, alpha, max_param_free, log), depth=st.depth, connections=st.connections)
        for s, st in enumerate(arch.stages)
    )
    reductions = tuple(
        _guard(g, NUM_STAGES + r, alpha, max_param_free, log) for r, g in enumerate(arch.reductions)
    )
    return Architecture(space=arch.space, stages=stages, reductions=reductions), log
