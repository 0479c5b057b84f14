"""Discrete (deploy) networks built from an `Architecture`, each module with its ONNX twin.

Every module here has `forward` for torch and `emit(builder, x)` that writes the same
computation as ONNX nodes (BatchNorm folded), so the exported file and the torch network
stay one definition. Nothing is hard-coded to a depth: any depth in the space's choices
builds.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.onnx_builder import OnnxBuilder, bn_affine, fold_conv_bn
from hwnas.space import NUM_CELL_INPUTS, NUM_STAGES, Architecture, Genotype, Stage


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(torch.relu(x)))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.conv(g.relu(x), self.conv, self.bn)


class SepConv(nn.Module):
    """DARTS separable conv: (ReLU, depthwise k x k, pointwise, BN) twice; stride on the first."""

    def __init__(self, c: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.dw1 = nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False)
        self.pw1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.dw2 = nn.Conv2d(c, c, kernel, 1, pad, groups=c, bias=False)
        self.pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pw1(self.dw1(torch.relu(x))))
        return self.bn2(self.pw2(self.dw2(torch.relu(x))))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        x = g.conv(g.conv(g.relu(x), self.dw1), self.pw1, self.bn1)
        return g.conv(g.conv(g.relu(x), self.dw2), self.pw2, self.bn2)


class DilConv(nn.Module):
    """ReLU, dilated depthwise k x k (dilation 2), pointwise, BN."""

    def __init__(self, c: int, kernel: int, stride: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, kernel, stride, (kernel // 2) * 2, dilation=2, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pw(self.dw(torch.relu(x))))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.conv(g.conv(g.relu(x), self.dw), self.pw, self.bn)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two offset 1x1 stride-2 convs."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 2:
            raise ValueError("FactorizedReduce needs an even number of output channels")
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        x = g.relu(x)
        half = self.conv1.out_channels
        scale, shift = bn_affine(self.bn)
        outs = []
        for i, (conv, src) in enumerate(((self.conv1, x), (self.conv2, g.crop_top_left(x)))):
            w, _ = fold_conv_bn(conv, None)
            sl = slice(i * half, (i + 1) * half)
            w = (w * scale[sl].reshape(-1, 1, 1, 1)).astype("float32")
            outs.append(g.conv_with(src, conv, w, shift[sl].astype("float32")))
        return g.concat(outs)


class Identity(nn.Identity):
    def emit(self, g: OnnxBuilder, x: str) -> str:
        return x


class MaxPool(nn.MaxPool2d):
    def __init__(self, stride: int):
        super().__init__(3, stride, 1)

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.max_pool(x, self)


class AvgPool(nn.AvgPool2d):
    def __init__(self, stride: int):
        super().__init__(3, stride, 1, count_include_pad=False)

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.avg_pool(x, self)


def make_cell_op(name: str, c: int, stride: int) -> nn.Module:
    """A cell-level op of the DARTS set (stride 2 on a reduction cell's input edges)."""
    if name == "max_pool_3x3":
        return MaxPool(stride)
    if name == "avg_pool_3x3":
        return AvgPool(stride)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv_"):
        return SepConv(c, int(name[-1]), stride)
    if name.startswith("dil_conv_"):
        return DilConv(c, int(name[-1]), stride)
    raise ValueError(f"unknown cell op {name!r}")


def make_stage_op(name: str) -> nn.Module:
    """A stage-level op on a connection between cells (resolution kept)."""
    return {"skip_connect": Identity, "max_pool_3x3": lambda: MaxPool(1), "avg_pool_3x3": lambda: AvgPool(1)}[name]()


class Cell(nn.Module):
    """A DARTS cell: two preprocessed inputs, `nodes` nodes of two edges, concat of the nodes."""

    def __init__(self, genotype: Genotype, c_in0: int, c_in1: int, c: int, reduction: bool):
        super().__init__()
        self.pre0 = ReLUConvBN(c_in0, c)
        self.pre1 = ReLUConvBN(c_in1, c)
        self.inputs = [[idx for _, idx in node] for node in genotype]
        self.ops = nn.ModuleList(
            nn.ModuleList(
                make_cell_op(op, c, 2 if reduction and idx < NUM_CELL_INPUTS else 1)
                for op, idx in node
            )
            for node in genotype
        )
        self.out_channels = c * len(genotype)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for inputs, ops in zip(self.inputs, self.ops, strict=True):
            states.append(ops[0](states[inputs[0]]) + ops[1](states[inputs[1]]))
        return torch.cat(states[NUM_CELL_INPUTS:], dim=1)

    def emit(self, g: OnnxBuilder, s0: str, s1: str) -> str:
        states = [self.pre0.emit(g, s0), self.pre1.emit(g, s1)]
        for inputs, ops in zip(self.inputs, self.ops, strict=True):
            states.append(g.add(ops[0].emit(g, states[inputs[0]]), ops[1].emit(g, states[inputs[1]])))
        return g.concat(states[NUM_CELL_INPUTS:])


class StageNet(nn.Module):
    """One stage: a DAG of `depth` cells; cell k reads two earlier states through stage ops;
    the output concatenates the last two states and projects them with a 1x1 conv."""

    def __init__(self, stage: Stage, c_in0: int, c_in1: int, c: int):
        super().__init__()
        channels = [c_in0, c_in1]
        self.connections = [[idx for _, idx in conn] for conn in stage.connections]
        self.conn_ops = nn.ModuleList()
        self.cells = nn.ModuleList()
        for conn in stage.connections:
            (op_a, a), (op_b, b) = conn
            self.conn_ops.append(nn.ModuleList([make_stage_op(op_a), make_stage_op(op_b)]))
            cell = Cell(stage.cell, channels[a], channels[b], c, reduction=False)
            self.cells.append(cell)
            channels.append(cell.out_channels)
        self.out_channels = c * len(stage.cell)
        self.project = ReLUConvBN(channels[-2] + channels[-1], self.out_channels)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [s0, s1]
        for (a, b), ops, cell in zip(self.connections, self.conn_ops, self.cells, strict=True):
            states.append(cell(ops[0](states[a]), ops[1](states[b])))
        return self.project(torch.cat(states[-2:], dim=1))

    def emit(self, g: OnnxBuilder, s0: str, s1: str) -> str:
        states = [s0, s1]
        for (a, b), ops, cell in zip(self.connections, self.conn_ops, self.cells, strict=True):
            states.append(cell.emit(g, ops[0].emit(g, states[a]), ops[1].emit(g, states[b])))
        return self.project.emit(g, g.concat(states[-2:]))


class Network(nn.Module):
    """stem -> (stage -> reduction) x 2 -> stage -> global pool -> classifier."""

    def __init__(self, arch: Architecture):
        super().__init__()
        space = arch.space
        self.space = space
        self.upsample = space.upsample
        c = space.channels
        c_stem = space.stem_multiplier * c
        self.stem_conv = nn.Conv2d(space.in_channels, c_stem, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c_stem)
        self.stages = nn.ModuleList()
        self.reductions = nn.ModuleList()
        self.shortcuts = nn.ModuleList()  # stage input 0 of stages 2, 3: the pre-reduction output
        c_in0 = c_in1 = c_stem
        for s, stage in enumerate(arch.stages):
            net = StageNet(stage, c_in0, c_in1, c)
            self.stages.append(net)
            if s < NUM_STAGES - 1:
                c *= 2
                red = Cell(arch.reductions[s], net.out_channels, net.out_channels, c, reduction=True)
                self.reductions.append(red)
                self.shortcuts.append(FactorizedReduce(net.out_channels, red.out_channels))
                c_in0 = c_in1 = red.out_channels
        self.classifier = nn.Linear(self.stages[-1].out_channels, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = nn.functional.interpolate(x, scale_factor=self.upsample, mode="nearest")
        s0 = s1 = self.stem_bn(self.stem_conv(x))
        for s, stage in enumerate(self.stages):
            out = stage(s0, s1)
            if s < len(self.reductions):
                s0, s1 = self.shortcuts[s](out), self.reductions[s](out, out)
        pooled = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.classifier(pooled)

    def emit(self, g: OnnxBuilder, x: str) -> str:
        if self.upsample > 1:
            x = g.upsample_nearest(x, self.upsample)
        s0 = s1 = g.conv(x, self.stem_conv, self.stem_bn)
        for s, stage in enumerate(self.stages):
            out = stage.emit(g, s0, s1)
            if s < len(self.reductions):
                s0, s1 = self.shortcuts[s].emit(g, out), self.reductions[s].emit(g, out, out)
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", [out])], axis=1)
        return g.linear(pooled, self.classifier)


def build_network(arch: Architecture) -> Network:
    """The deploy network of an architecture (train mode, freshly initialised)."""
    return Network(arch)
