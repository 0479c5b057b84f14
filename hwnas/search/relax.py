"""Per-step relaxed choices read from `ArchParameters`: the full DARTS mixture or a sample.

One representation serves both modes: every searched decision block (a cell node, a stage's
cell slot) becomes a weight matrix `[inputs, ops]` plus the list of (input, op) pairs to
compute; a stage's depth becomes a weight per exit plus the exits to compute.

* full (DARTS/H-DAS): weight = edge weight (soft choice of two inputs, the same function as
  the encoding's, so the supernet and the predictor see one relaxation) x softmax over ops;
  every pair and every exit is computed.
* sampled (GDAS / MSG-DAS): Gumbel-TopK draws two inputs per node and K distinct ops per drawn
  input (K sub-graphs that share no op on any edge; K = 1 is GDAS's single path) and one exit
  per stage; only those are computed. The weights are hard in the forward pass and carry the
  soft (tempered Gumbel-softmax) gradient straight through to the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hwnas.space import NUM_STAGES
from hwnas.space.encoding import EDGES_PER_NODE, ArchParameters, _edge_weights

N_CELLS = 2 * NUM_STAGES - 1  # stage normal cells 0..2, then reductions 3..4


@dataclass
class Block:
    """One decision block: weights [inputs, ops] and the (input, op) pairs to run."""

    weights: torch.Tensor
    active: list[tuple[int, int]]


@dataclass
class Relaxed:
    """Everything the supernet needs for one forward pass."""

    cells: list[list[Block]]  # [cell][node]
    slots: list[list[Block]]  # [stage][slot k]
    exits: list[torch.Tensor]  # [stage] weight per depth choice
    active_exits: list[list[int]]  # [stage] indices into depth_choices to compute
    run_depth: list[int]  # [stage] cells to run: the deepest active exit


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device="cpu").to(device)
    return -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))


def _full_block(beta: torch.Tensor, alpha: torch.Tensor) -> Block:
    w = _edge_weights(beta)[:, None] * torch.softmax(alpha, dim=-1)
    return Block(w, [(j, o) for j in range(alpha.shape[0]) for o in range(alpha.shape[1])])


def _sampled_block(
    beta: torch.Tensor,
    alpha: torch.Tensor,
    k: int,
    tau: float,
    gen: torch.Generator | None,
    sample_inputs: bool = True,
) -> Block:
    n_in = beta.shape[0]
    if sample_inputs:
        yb = beta + _gumbel(beta.shape, gen, beta.device)
        soft_e = _edge_weights(yb / tau)
        picked = sorted(torch.topk(yb, min(EDGES_PER_NODE, n_in)).indices.tolist())
        hard_e = torch.zeros_like(soft_e)
        hard_e[picked] = 1.0
        e = hard_e - soft_e.detach() + soft_e
    else:  # GDAS: every candidate input, weighted by the (soft) edge weights; only ops drawn
        e = _edge_weights(beta)
        picked = list(range(n_in))
    za = alpha + _gumbel(alpha.shape, gen, alpha.device)
    soft_o = torch.softmax(za / tau, dim=-1)
    kk = min(k, alpha.shape[1])
    top = torch.topk(za, kk, dim=-1).indices
    hard_o = torch.zeros_like(soft_o).scatter(-1, top, 1.0 / kk)
    o = hard_o - soft_o.detach() + soft_o
    active = [(j, int(op)) for j in picked for op in sorted(top[j].tolist())]
    return Block(e[:, None] * o, active)


def relax(
    alpha: ArchParameters,
    mode: str = "full",
    *,
    k: int = 1,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    sample_inputs: bool = True,
) -> Relaxed:
    """The weights of one step. `mode` is 'full' or 'sampled' (K ops per drawn edge)."""
    space = alpha.space
    if mode not in ("full", "sampled"):
        raise ValueError(f"unknown relaxation mode {mode!r}")

    def block(beta: torch.Tensor, logits: torch.Tensor) -> Block:
        if mode == "full":
            return _full_block(beta, logits)
        return _sampled_block(beta, logits, k, tau, generator, sample_inputs)

    cells = []
    for c in range(N_CELLS):
        blocks = []
        for i in range(space.nodes):
            n = alpha._node(c, i)
            blocks.append(block(alpha.beta[n], alpha.alpha[n]))
        cells.append(blocks)
    slots, exits, active_exits = [], [], []
    for s in range(NUM_STAGES):
        row = []
        for kk in range(space.max_depth):
            n = alpha._slot(s, kk)
            row.append(block(alpha.conn_beta[n], alpha.conn_alpha[n]))
        slots.append(row)
        logits = alpha.depth[s]
        if mode == "full":
            exits.append(torch.softmax(logits, dim=-1))
            active_exits.append(list(range(len(space.depth_choices))))
        else:
            y = logits + _gumbel(logits.shape, generator, logits.device)
            soft = torch.softmax(y / tau, dim=-1)
            d = int(y.argmax())
            hard = torch.zeros_like(soft)
            hard[d] = 1.0
            exits.append(hard - soft.detach() + soft)
            active_exits.append([d])
    run_depth = [max(space.depth_choices[d] for d in act) for act in active_exits]
    return Relaxed(cells, slots, exits, active_exits, run_depth)
