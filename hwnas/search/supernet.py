"""The hierarchical supernet: H-DAS's macro skeleton with every choice mixed.

The wiring is `hwnas.skeleton`'s (the deploy network's, written once) and the op modules are
`hwnas.ops`' (BatchNorm without affine parameters during search, as DARTS and H-DAS do); this
module only plugs in the mixed parts, each reading its weights from the per-step `Relaxed`
that `hwnas.search.relax` computes from one `ArchParameters`:

* a cell node: the weighted sum over its candidate (input, op) pairs (`MixedEdges`); every
  stage's normal cell and every reduction cell has its own parameters;
* a cell's input (H-DAS `SearchBigDAG`): the weighted sum over the states of its window, each
  through each stage-level op, fed as both inputs of the cell;
* a stage's depth (H-DAS `SearchBigDAG_CS`, distribution search): the stage runs its deepest
  configuration and its output mixes, over the possible exits, the concatenation of the last
  two states at that exit by the depth weights (`MixedExit`).

In sampled mode only the drawn pairs and exit are computed, and the cells past the deepest
drawn exit are skipped. `none` is not a candidate: the edge weights (`beta`) alone select the
inputs (docs/search.md says why).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.encoding import ArchParameters
from hwnas.ops import make_cell_op, make_stage_op
from hwnas.search.relax import Block, Relaxed
from hwnas.skeleton import CellSkeleton, MacroSkeleton, StageSkeleton
from hwnas.space import CELL_OPS, NUM_CELL_INPUTS, NUM_STAGES, STAGE_OPS, SpaceConfig


def mix(block: Block, ops: nn.ModuleList, states: Sequence[torch.Tensor], n_ops: int) -> torch.Tensor:
    """sum over the block's active (input j, op o) of weight[j, o] * op_{j,o}(states[j])."""
    out: torch.Tensor | None = None
    for j, o in block.active:
        y = block.weights[j, o] * ops[j * n_ops + o](states[j])
        out = y if out is None else out + y
    assert out is not None, "a mixed block with no active pair"
    return out


class MixedNode(nn.Module):
    """Node i of cell `cell`: a mixed op on each of its 2 + i candidate inputs."""

    def __init__(self, cell: int, i: int, c: int, reduction: bool):
        super().__init__()
        self.cell, self.i = cell, i
        self.ops = nn.ModuleList(
            make_cell_op(op, c, 2 if reduction and j < NUM_CELL_INPUTS else 1, affine=False)
            for j in range(NUM_CELL_INPUTS + i)
            for op in CELL_OPS
        )

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        return mix(r.cells[self.cell][self.i], self.ops, states, len(CELL_OPS))


class MixedConnection(nn.Module):
    """Cell k's input in stage s: the window's states through the mixed stage ops, summed."""

    def __init__(self, space: SpaceConfig, stage: int, k: int, width: int):
        super().__init__()
        self.stage, self.k = stage, k
        self.start = space.window_of(k).start
        self.ops = nn.ModuleList(
            make_stage_op(op, width, affine=False) for _ in space.window_of(k) for op in STAGE_OPS
        )

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        if self.k >= r.run_depth[self.stage]:
            return states[-1]  # past every active exit: not computed, never read
        return mix(r.slots[self.stage][self.k], self.ops, states[self.start :], len(STAGE_OPS))


class SkippableCell(nn.Module):
    """A stage's cell k, skipped (its input passed through) when no active exit reaches it."""

    def __init__(self, cell: CellSkeleton, stage: int, k: int):
        super().__init__()
        self.cell, self.stage, self.k = cell, stage, k
        self.out_channels = cell.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, r: Relaxed) -> torch.Tensor:
        if self.k >= r.run_depth[self.stage]:
            return s0
        return self.cell(s0, s1, r)


class MixedExit(nn.Module):
    """A stage's output: sum over active exits d of p_d * concat(last two states at depth d)."""

    def __init__(self, space: SpaceConfig, stage: int):
        super().__init__()
        self.depths = list(space.depth_choices)
        self.stage = stage

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        out: torch.Tensor | None = None
        for d in r.active_exits[self.stage]:
            depth = self.depths[d]
            y = r.exits[self.stage][d] * torch.cat(list(states[depth : depth + 2]), dim=1)
            out = y if out is None else out + y
        assert out is not None
        return out


def _cell(space: SpaceConfig, cell: int, c_in: int, c: int, reduction: bool) -> CellSkeleton:
    return CellSkeleton(
        c_in, c, space.nodes, lambda i: MixedNode(cell, i, c, reduction), affine=False
    )


def _stage(space: SpaceConfig, s: int, c_in: int, c: int) -> StageSkeleton:
    width = c * space.nodes
    return StageSkeleton(
        c_in,
        width,
        space.max_depth,
        lambda k: MixedConnection(space, s, k, width),
        lambda k: SkippableCell(_cell(space, s, width, c, reduction=False), s, k),
        output=MixedExit(space, s),
        affine=False,
    )


class Supernet(MacroSkeleton):
    """The deploy network's skeleton with every choice mixed; `channels` = proxy width C,
    `resolution` = proxy input size (neither changes what is searched)."""

    def __init__(self, space: SpaceConfig, channels: int | None = None, resolution: int | None = None):
        super().__init__(
            space,
            make_stage=lambda s, c_in, c: _stage(space, s, c_in, c),
            make_reduction=lambda r, c_in, c: _cell(space, NUM_STAGES + r, c_in, c, reduction=True),
            channels=channels,
            resolution=resolution,
        )


class SearchModel(nn.Module):
    """The supernet's weights and the architecture logits, kept apart (bilevel optimisation).

    `alpha` is the one source of truth for every architecture choice."""

    def __init__(self, alpha: ArchParameters, channels: int | None = None, resolution: int | None = None):
        super().__init__()
        self.alpha = alpha
        self.net = Supernet(alpha.space, channels, resolution)

    def weights(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.parameters())
