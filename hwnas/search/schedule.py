"""Search schedules as data: which logits each phase trains, which it holds, and how depth is priced.

* `joint` (hwnas's own): one phase; cell ops, stage connections and depth relaxed together in
  one supernet every step. Depth is priced by the latency term (the predictor knows what a
  cell costs) plus `depth_penalty` x expected cells (default 0 here: H-DAS's 0.4 outweighs
  the cross-entropy's gradient on the depth logits and drives every stage to the minimum,
  docs/benchmarks.md "Schedules").
* `hdas` (H-DAS's phases, msight-tech/research-hdas):
  1. `cells` (Hc-DAS, `search_cellcnn.py`): stage-specific cells searched in a fixed chain,
     the stage level held: every stage at `chain_depth` cells (2 where the space allows,
     so 2-2-2 cells + 2 reductions = DARTS's 8-layer proxy), cell k fed the sum of the
     previous two states through `skip_connect` (DARTS feeds them to the cell's two inputs
     separately: our skeleton, H-DAS's evaluation wiring, feeds one sum to both).
  2. `stages` (Hs-DAS / distribution search, `search_stage.py`,
     `searchDistribution_trainer.py`): the connections and depth of every stage with the
     cells of phase 1 fixed (one-hot, not trained, only their two ops per node computed);
     after each architecture step a second Adam step on H-DAS's depth objective
     `-cal_depth(connections) + depth_penalty x expected cells` (`hdas_depth`).
  `--epochs` is the total, split between the phases (phase 1 gets the odd one): the same
  number of weight steps as `joint` (H-DAS runs 50 epochs per phase: `--epochs 100`).

The latency term prices the whole deployed network in every phase: the predictor reads
`ArchParameters.encode()`, whose held part is at its held value (phase 1: the stage level at
its initial, uniform relaxation, i.e. the expected latency over the stage choices; phase 2:
the cells one-hot at phase 1's genotype).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hwnas.search.config import (  # noqa: F401 (the schedule names live with the config: light to import)
    DEFAULT_SCHEDULE,
    HDAS_DEPTH_PENALTY,
    SCHEDULES,
    check_schedule,
    default_depth_penalty,
)
from hwnas.search.relax import N_CELLS, Block, Relaxed
from hwnas.space import NUM_STAGES, STAGE_OPS, Architecture, SpaceConfig
from hwnas.space.encoding import ArchParameters
from targets.basics import UserError

#: Logit strength that holds a choice: softmax gives an exact one-hot in float32.
HOLD_STRENGTH = 100.0
CELL_GROUPS = ("alpha", "beta")
STAGE_GROUPS = ("depth", "conn_alpha", "conn_beta")


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule."""

    name: str  # "joint" | "cells" | "stages"
    index: int  # its position in the schedule (seeds and the checkpoint name it)
    epochs: int
    first_epoch: int  # epochs of the phases before it (the log's epoch numbers run on)
    train_cells: bool  # else: cells held at a genotype (phase 2)
    train_stages: bool  # else: the fixed chain (phase 1)
    depth_objective: str  # "penalty": in the architecture loss; "hdas": its own Adam step; "none"


def phases(schedule: str, epochs: int) -> list[Phase]:
    """The phases of a schedule for `epochs` epochs in total."""
    check_schedule(schedule, epochs)
    if schedule == "joint":
        return [Phase("joint", 0, epochs, 0, True, True, "penalty")]
    first = (epochs + 1) // 2
    return [
        Phase("cells", 0, first, 0, True, False, "none"),
        Phase("stages", 1, epochs - first, first, False, True, "hdas"),
    ]


def chain_depth(space: SpaceConfig) -> int:
    """Phase 1's cells per stage: the depth choice nearest 2 (DARTS's 8 layers = 3 x 2 + 2)."""
    return min(space.depth_choices, key=lambda d: (abs(d - 2), d))


def held_groups(phase: Phase) -> tuple[str, ...]:
    return (() if phase.train_cells else CELL_GROUPS) + (() if phase.train_stages else STAGE_GROUPS)


@torch.no_grad()
def hold_cells(alpha: ArchParameters, cells: Architecture) -> None:
    """Put the cell logits on `cells`' genotypes (one-hot at HOLD_STRENGTH); stage logits untouched."""
    if cells.space.key != alpha.space.key:
        raise UserError(
            f"phase 'stages': the cells were found in space '{cells.space.name}', the search runs "
            f"'{alpha.space.name}'; delete the run directory and search again"
        )
    ref = ArchParameters(alpha.space, init_scale=0.0).set_from(cells, HOLD_STRENGTH)
    for group in CELL_GROUPS:
        for p, q in zip(getattr(alpha, group), getattr(ref, group), strict=True):
            p.copy_(q)


def _one_hot_block(shape: tuple[int, int], picks: list[tuple[int, int]], like: torch.Tensor) -> Block:
    w = torch.zeros(shape, dtype=like.dtype, device=like.device)
    for j, o in picks:
        w[j, o] = 1.0
    return Block(w, sorted(picks))


def held_relaxation(r: Relaxed, alpha: ArchParameters, phase: Phase) -> Relaxed:
    """`r` with the held parts replaced by their discrete choice (constant weights, only the
    chosen pairs computed): phase 1's chain, phase 2's cells."""
    space = alpha.space
    cells, slots, exits, active, run_depth = r.cells, r.slots, r.exits, r.active_exits, r.run_depth
    if not phase.train_cells:
        cells = []
        for c in range(N_CELLS):
            row = []
            for i, b in enumerate(r.cells[c]):
                n = alpha._node(c, i)
                top = torch.topk(alpha.beta[n].detach(), 2).indices.tolist()
                row.append(_one_hot_block(b.weights.shape, [(j, int(alpha.alpha[n][j].argmax())) for j in top], b.weights))
            cells.append(row)
    if not phase.train_stages:
        depth = chain_depth(space)
        d = space.depth_choices.index(depth)
        skip = STAGE_OPS.index("skip_connect")
        slots, exits, active, run_depth = [], [], [], []
        for s in range(NUM_STAGES):
            row = []
            for k, b in enumerate(r.slots[s]):
                start = space.window_of(k).start
                prev = [(j - start, skip) for j in (k, k + 1)]  # states 2 + k - 2 and 2 + k - 1
                row.append(_one_hot_block(b.weights.shape, prev, b.weights))
            slots.append(row)
            e = torch.zeros_like(r.exits[s].detach())
            e[d] = 1.0
            exits.append(e)
            active.append([d])
            run_depth.append(depth)
    return Relaxed(cells, slots, exits, active, run_depth)


def expected_cells(alpha: ArchParameters) -> torch.Tensor:
    """Sum over stages of E[cells] under the depth softmax (differentiable)."""
    choices = torch.tensor(alpha.space.depth_choices, dtype=torch.float32, device=alpha.depth[0].device)
    return sum((alpha.depth_probs(s) * choices).sum() for s in range(NUM_STAGES))  # type: ignore[return-value]


def hdas_depth(alpha: ArchParameters, stage: int) -> torch.Tensor:
    """H-DAS's `cal_depth` on one stage's connection logits: the soft length of the longest
    paths through the stage's cell DAG. States 0 and 1 have depth 0; cell k's depth is the
    mean over its window of `w_j (d_j + 1)`, w = softmax of its input logits (H-DAS: of each
    input's strongest op logit; here the input choice has its own logits, `conn_beta`),
    times `1 + k P(depth = k + 1)` where k + 1 is a depth choice (H-DAS: `1 + i beta[i-3]`
    for its choices 4..8); the result is the mean over the cell slots (H-DAS divides the
    sum, the two zero inputs included, by the number of cells)."""
    space = alpha.space
    probs = alpha.depth_probs(stage)
    d: list[torch.Tensor] = [probs.new_zeros(()), probs.new_zeros(())]
    for k in range(space.max_depth):
        window = space.window_of(k)
        w = torch.softmax(alpha.conn_beta[alpha._slot(stage, k)], dim=-1)
        dd = sum(w[j] * (d[window.start + j] + 1) for j in range(len(window))) / len(window)
        if k + 1 in space.depth_choices:
            dd = dd * (1 + k * probs[space.depth_choices.index(k + 1)])
        d.append(dd)  # type: ignore[arg-type]
    return sum(d) / space.max_depth  # type: ignore[return-value]


def hdas_depth_loss(alpha: ArchParameters, penalty: float) -> torch.Tensor:
    """H-DAS's second architecture step: `-sum_s cal_depth_s + penalty x sum_s E[cells_s]`."""
    return -sum(hdas_depth(alpha, s) for s in range(NUM_STAGES)) + penalty * expected_cells(alpha)  # type: ignore[return-value]


def describe(schedule: str, epochs: int, space: SpaceConfig) -> dict[str, object]:
    """Plain JSON for config.json's `resolved` section."""
    out: dict[str, object] = {
        "name": schedule,
        "phases": [{"name": p.name, "epochs": p.epochs, "depth_objective": p.depth_objective} for p in phases(schedule, epochs)],
    }
    if schedule == "hdas":
        out["chain_depth"] = chain_depth(space)
    return out

