"""Discrete (deploy) networks built from an `Architecture`, on H-DAS's macro skeleton.

The wiring (stem, stages, reductions, head) is `hwnas.nets.skeleton`'s, shared with the search
supernet; the op modules are `hwnas.nets.ops`'. This module only plugs the discrete choices in:
a cell node and a stage connection are each a sum of two edges (op, input index), so the
order in which an architecture lists them does not change the network. Every module has an
ONNX twin (`emit`), so the exported file and the torch network stay one definition. Nothing
is hard-coded to a depth: any depth in the space's choices builds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hwnas.nets.onnx_builder import OnnxBuilder
from hwnas.nets.ops import (  # noqa: F401  (re-exported: the op modules lived here before hwnas.nets.ops)
    NONE,
    DilConv,
    FactorizedReduce,
    Identity,
    PoolBN,
    ReLUConvBN,
    SepConv,
    Zero,
    make_cell_op,
    make_stage_op,
)
from hwnas.nets.skeleton import CellSkeleton, MacroSkeleton, StageSkeleton
from hwnas.space import NUM_CELL_INPUTS, Architecture, Genotype, Stage


def drop_path(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero whole samples with probability p and rescale the rest (DARTS/H-DAS training);
    the masks come from `generator` (None: torch's global one)."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
    mask.bernoulli_(keep, generator=generator)
    return x / keep * mask


class EdgeSum(nn.Module):
    """The sum of discrete edges, each an op on one state: a cell node or a cell's connections.

    `drop_prob` (0 by default; `Network.set_drop_path`) drops the non-identity edges per
    sample in training mode, as H-DAS's `to_dag` does; eval mode and ONNX never drop.
    """

    def __init__(self, edges: Sequence[tuple[nn.Module, int]]):
        super().__init__()
        if not edges:
            raise ValueError("EdgeSum needs at least one edge")
        self.ops = nn.ModuleList(op for op, _ in edges)
        self.inputs = [int(idx) for _, idx in edges]
        self.drop_prob = 0.0
        self.generator: torch.Generator | None = None

    def _edge(self, op: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = op(x)
        if self.training and self.drop_prob > 0.0 and not isinstance(op, Identity):
            y = drop_path(y, self.drop_prob, self.generator)
        return y

    def forward(self, states: Sequence[torch.Tensor], *ctx: object) -> torch.Tensor:
        out = self._edge(self.ops[0], states[self.inputs[0]])
        for op, idx in zip(self.ops[1:], self.inputs[1:], strict=True):
            out = out + self._edge(op, states[idx])
        return out

    def emit(self, g: OnnxBuilder, states: Sequence[str]) -> str:
        out = self.ops[0].emit(g, states[self.inputs[0]])
        for op, idx in zip(self.ops[1:], self.inputs[1:], strict=True):
            out = g.add(out, op.emit(g, states[idx]))
        return out


def discrete_cell(
    genotype: Genotype, c_in: int, c: int, reduction: bool, affine: bool = True
) -> CellSkeleton:
    """A cell of a genotype: node i sums its two edges; on a reduction cell the edges from the
    cell inputs have stride 2."""

    def node(i: int) -> EdgeSum:
        return EdgeSum(
            [
                (make_cell_op(op, c, 2 if reduction and idx < NUM_CELL_INPUTS else 1, affine), idx)
                for op, idx in genotype[i]
            ]
        )

    return CellSkeleton(c_in, c, len(genotype), node, affine=affine)


def discrete_stage(stage: Stage, c_in: int, c: int, affine: bool = True) -> StageSkeleton:
    """A stage of `stage.depth` cells of its genotype; cell k's connections are summed."""
    width = c * len(stage.cell)

    def connection(k: int) -> EdgeSum:
        return EdgeSum([(make_stage_op(op, width, affine), idx) for op, idx in stage.connections[k]])

    def cell(k: int) -> CellSkeleton:
        return discrete_cell(stage.cell, width, c, reduction=False, affine=affine)

    return StageSkeleton(c_in, width, stage.depth, connection, cell, affine=affine)


class Network(MacroSkeleton):
    """The deploy network of an architecture: H-DAS's skeleton with the discrete choices."""

    def __init__(self, arch: Architecture, channels: int | None = None):
        super().__init__(
            arch.space,
            make_stage=lambda s, c_in, c: discrete_stage(arch.stages[s], c_in, c),
            make_reduction=lambda r, c_in, c: discrete_cell(arch.reductions[r], c_in, c, reduction=True),
            channels=channels,
        )
        self.arch = arch

    def set_drop_path(self, p: float, generator: torch.Generator | None = None) -> None:
        """Drop-path probability of every non-identity edge (cells and connections) in
        training, its masks drawn from `generator` (None: torch's global one)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, EdgeSum):
                m.drop_prob = float(p)
                m.generator = generator


def build_network(arch: Architecture) -> Network:
    """The deploy network of an architecture (train mode, freshly initialised)."""
    return Network(arch)
