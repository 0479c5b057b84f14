"""The macro skeleton of H-DAS's network, written once for the deploy network and the supernet.

H-DAS's evaluation network (msight-tech/research-hdas: `models/augment_stage.py`,
`models/get_dag.py`, `models/get_cell.py`) wires, with C the stage-1 cell width and N nodes:

    stem: 3x3 conv + BN, stem_multiplier * C channels
    stage s (cell width C_s = C * 2^s, state width N * C_s):
        a 1x1 ReLU-conv-BN on each of its two inputs (both the same tensor) -> states 0, 1;
        cell k: its connections (stage ops on states of its window) are SUMMED, and the sum
        is fed as both of the cell's inputs -> state 2 + k;
        output: concat of the last two states (2 * N * C_s channels, no projection)
    reduction after stages 1 and 2: a cell (cell width 2 * C_s) fed the stage output as
        both inputs; the next stage takes its output as both inputs
    head: global average pool, linear

The parts that differ between a discrete network and a supernet are plugged in as factories:
what computes a cell node, a cell's input from the stage's states (its connections), and a
stage's output from its states (the depth). Every plugged module receives the extra
positional arguments given to `MacroSkeleton.forward` (`*ctx`: nothing for the deploy network,
the architecture weights for a supernet), so a supernet needs no second copy of the wiring.
`emit` (ONNX) works when every plugged module has an `emit(g, ...)` twin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hwnas.nets.onnx_builder import OnnxBuilder
from hwnas.nets.ops import ReLUConvBN
from hwnas.space import NUM_CELL_INPUTS, NUM_STAGES, SpaceConfig

#: make_node(i) -> module computing node i: forward(states, *ctx) with states[:2 + i] known.
NodeFactory = Callable[[int], nn.Module]
#: make_connection(k) -> module computing cell k's input: forward(states, *ctx) -> the sum.
ConnectionFactory = Callable[[int], nn.Module]
#: make_cell(k) -> cell k of a stage: forward(s0, s1, *ctx), attribute out_channels.
CellFactory = Callable[[int], nn.Module]
#: make_stage(s, c_in, c) -> stage s: forward(s0, s1, *ctx), out_channels; c = cell width C_s.
StageFactory = Callable[[int, int, int], nn.Module]
#: make_reduction(r, c_in, c) -> reduction cell r (after stage r); c = its cell width.
ReductionFactory = Callable[[int, int, int], nn.Module]


class CellSkeleton(nn.Module):
    """A cell (H-DAS's GetCell): a 1x1 ReLU-conv-BN on each input (c_in -> c), `nodes` nodes,
    output the concat of the nodes (nodes * c channels)."""

    def __init__(self, c_in: int, c: int, nodes: int, make_node: NodeFactory, affine: bool = True):
        super().__init__()
        self.pre0 = ReLUConvBN(c_in, c, affine=affine)
        self.pre1 = ReLUConvBN(c_in, c, affine=affine)
        self.nodes = nn.ModuleList(make_node(i) for i in range(nodes))
        self.out_channels = c * nodes

    def preprocess(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        """States 0 and 1 (a supernet may compute both at once: H-DAS feeds s0 is s1)."""
        return [self.pre0(s0), self.pre1(s1)]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, *ctx: Any) -> torch.Tensor:
        states = self.preprocess(s0, s1)
        for node in self.nodes:
            states.append(node(states, *ctx))
        return torch.cat(states[NUM_CELL_INPUTS:], dim=1)

    def emit(self, g: OnnxBuilder, s0: str, s1: str) -> str:
        states = [self.pre0.emit(g, s0), self.pre1.emit(g, s1)]
        for node in self.nodes:
            states.append(node.emit(g, states))
        return g.concat(states[NUM_CELL_INPUTS:])


class ConcatLastTwo(nn.Module):
    """A discrete stage's output: the concat of its last two states."""

    def forward(self, states: Sequence[torch.Tensor], *ctx: Any) -> torch.Tensor:
        return torch.cat(list(states[-2:]), dim=1)

    def emit(self, g: OnnxBuilder, states: Sequence[str]) -> str:
        return g.concat(states[-2:])


class StageSkeleton(nn.Module):
    """A stage (H-DAS's GetStage): a 1x1 ReLU-conv-BN on each input (c_in -> width), then
    `depth` cells, cell k fed `connection_k(states)` as both inputs; the output is
    `output(states)` (default: concat of the last two states, 2 * width channels)."""

    def __init__(
        self,
        c_in: int,
        width: int,
        depth: int,
        make_connection: ConnectionFactory,
        make_cell: CellFactory,
        output: nn.Module | None = None,
        affine: bool = True,
    ):
        super().__init__()
        self.pre0 = ReLUConvBN(c_in, width, affine=affine)
        self.pre1 = ReLUConvBN(c_in, width, affine=affine)
        self.connections = nn.ModuleList(make_connection(k) for k in range(depth))
        self.cells = nn.ModuleList(make_cell(k) for k in range(depth))
        for k, cell in enumerate(self.cells):
            if getattr(cell, "out_channels", width) != width:
                raise ValueError(f"cell {k} outputs {cell.out_channels} channels, the stage width is {width}")
        self.output = output if output is not None else ConcatLastTwo()
        self.width = width
        self.out_channels = 2 * width

    def preprocess(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        """States 0 and 1 (a supernet may compute both at once: H-DAS feeds s0 is s1)."""
        return [self.pre0(s0), self.pre1(s1)]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, *ctx: Any) -> torch.Tensor:
        states = self.preprocess(s0, s1)
        for conn, cell in zip(self.connections, self.cells, strict=True):
            x = conn(states, *ctx)
            states.append(cell(x, x, *ctx))
        return self.output(states, *ctx)

    def emit(self, g: OnnxBuilder, s0: str, s1: str) -> str:
        states = [self.pre0.emit(g, s0), self.pre1.emit(g, s1)]
        for conn, cell in zip(self.connections, self.cells, strict=True):
            x = conn.emit(g, states)
            states.append(cell.emit(g, x, x))
        return self.output.emit(g, states)


class MacroSkeleton(nn.Module):
    """stem -> (stage -> reduction) x 2 -> stage -> global pool -> classifier, H-DAS's wiring.

    `channels` overrides the space's C (a narrower proxy supernet); `make_stage(s, c_in, c)`
    and `make_reduction(r, c_in, c)` build the plugged parts (c: their cell width).
    """

    def __init__(
        self,
        space: SpaceConfig,
        make_stage: StageFactory,
        make_reduction: ReductionFactory,
        channels: int | None = None,
        resolution: int | None = None,
    ):
        super().__init__()
        self.space = space
        self.upsample = space.upsample
        # A proxy input size (search only): inputs are resized to resolution x resolution
        # instead of the space's upsampling; the deploy network never sets it.
        self.resolution = resolution
        c = channels if channels is not None else space.channels
        self.channels = c
        c_stem = space.stem_multiplier * c
        self.stem_conv = nn.Conv2d(space.in_channels, c_stem, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c_stem)
        self.stages = nn.ModuleList()
        self.reductions = nn.ModuleList()
        c_in = c_stem
        for s in range(NUM_STAGES):
            stage = make_stage(s, c_in, c)
            self.stages.append(stage)
            c_in = stage.out_channels
            if s < NUM_STAGES - 1:
                c *= 2
                red = make_reduction(s, c_in, c)
                self.reductions.append(red)
                c_in = red.out_channels
        self.classifier = nn.Linear(c_in, space.num_classes)

    def features(self, x: torch.Tensor, *ctx: Any) -> torch.Tensor:
        """The last stage's output (before pooling)."""
        if self.resolution is not None:
            if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
                down = x.shape[-1] > self.resolution
                x = nn.functional.interpolate(
                    x, size=(self.resolution, self.resolution), mode="area" if down else "nearest"
                )
        elif self.upsample > 1:
            x = nn.functional.interpolate(x, scale_factor=self.upsample, mode="nearest")
        s = self.stem_bn(self.stem_conv(x))
        for i, stage in enumerate(self.stages):
            s = stage(s, s, *ctx)
            if i < len(self.reductions):
                s = self.reductions[i](s, s, *ctx)
        return s

    def forward(self, x: torch.Tensor, *ctx: Any) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(self.features(x, *ctx), 1).flatten(1)
        return self.classifier(pooled)

    def emit(self, g: OnnxBuilder, x: str) -> str:
        assert self.resolution is None, "a proxy-resolution network is a search supernet, not exported"
        if self.upsample > 1:
            x = g.upsample_nearest(x, self.upsample)
        s = g.conv(x, self.stem_conv, self.stem_bn)
        for i, stage in enumerate(self.stages):
            s = stage.emit(g, s, s)
            if i < len(self.reductions):
                s = self.reductions[i].emit(g, s, s)
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", [s])], axis=1)
        return g.linear(pooled, self.classifier)
