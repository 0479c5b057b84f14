"""The op modules of cells and stage connections, each with its ONNX twin.

One definition for the deploy network and the search supernet: every module has `forward`
for torch and `emit(builder, x)` that writes the same computation as ONNX nodes (eval mode,
BatchNorm folded into the preceding convolution where there is one). The set and the shapes
follow H-DAS's `models/ops.py` (itself DARTS's): pooling is followed by BatchNorm (`PoolBN`),
`skip_connect` on a stride-2 edge is a `FactorizedReduce`, and `none` (`Zero`) exists for the
supernet. `affine=False` gives BatchNorm without learned scale and shift, as the search uses.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hwnas.nets.onnx_builder import OnnxBuilder, bn_affine, fold_conv_bn

#: The op that outputs zeros: only in the relaxed supernet (never in a discrete architecture).
NONE = "none"


class ReLUConvBN(nn.Module):
    """ReLU, conv (no bias), BN: H-DAS's `StdConv` (the 1x1 preprocessing of cells and stages)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        affine: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(torch.relu(x))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on relu(x) (see `forward_shared`)."""
        return self.bn(self.conv(r))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.conv(g.relu(x), self.conv, self.bn)


class DilConv(nn.Module):
    """ReLU, dilated depthwise k x k (dilation 2: 3x3 sees 5x5, 5x5 sees 9x9), pointwise, BN."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool = True, dilation: int = 2):
        super().__init__()
        pad = (kernel // 2) * dilation
        self.dw = nn.Conv2d(c, c, kernel, stride, pad, dilation=dilation, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(torch.relu(x))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on relu(x) (see `forward_shared`)."""
        return self.bn(self.pw(self.dw(r)))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        return g.conv(g.conv(g.relu(x), self.dw), self.pw, self.bn)


class SepConv(nn.Module):
    """DARTS separable conv: (ReLU, depthwise k x k, pointwise, BN) twice; stride on the first."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool = True):
        super().__init__()
        pad = kernel // 2
        self.dw1 = nn.Conv2d(c, c, kernel, stride, pad, groups=c, bias=False)
        self.pw1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c, affine=affine)
        self.dw2 = nn.Conv2d(c, c, kernel, 1, pad, groups=c, bias=False)
        self.pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(torch.relu(x))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on relu(x) (see `forward_shared`)."""
        x = self.bn1(self.pw1(self.dw1(r)))
        return self.bn2(self.pw2(self.dw2(torch.relu(x))))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        x = g.conv(g.conv(g.relu(x), self.dw1), self.pw1, self.bn1)
        return g.conv(g.conv(g.relu(x), self.dw2), self.pw2, self.bn2)


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two offset 1x1 stride-2 convs."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError("FactorizedReduce needs an even number of output channels")
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_relu(torch.relu(x))

    def after_relu(self, r: torch.Tensor) -> torch.Tensor:
        """The op on relu(x) (see `forward_shared`)."""
        return self.bn(torch.cat([self.conv1(r), self.conv2(r[:, :, 1:, 1:])], dim=1))

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


def _pool_in_nhwc(x: torch.Tensor) -> bool:
    """An NCHW-laid CPU tensor (channels not innermost; a channel slice of an NHWC tensor is
    already NHWC-laid and stays so)."""
    return x.dim() == 4 and x.device.type == "cpu" and x.stride(1) != 1 and x.shape[2] * x.shape[3] > 1


class PoolBN(nn.Module):
    """3x3 max or average pooling (padding 1, average excludes the padding), then BatchNorm."""

    def __init__(self, kind: str, c: int, stride: int, affine: bool = True):
        super().__init__()
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride, 1)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        else:
            raise ValueError(f"PoolBN kind must be 'max' or 'avg', got {kind!r}")
        self.kind = kind
        self.bn = nn.BatchNorm2d(c, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _pool_in_nhwc(x):
            # torch's NCHW pooling kernels on CPU are 2-10x slower than its channels_last ones
            # (the same values, bit for bit): pool and normalise in NHWC, hand back NCHW
            x = x.contiguous(memory_format=torch.channels_last)
            return self.bn(self.pool(x)).contiguous()
        return self.bn(self.pool(x))

    def emit(self, g: OnnxBuilder, x: str) -> str:
        y = g.max_pool(x, self.pool) if self.kind == "max" else g.avg_pool(x, self.pool)  # type: ignore[arg-type]
        return g.batchnorm(y, self.bn)


class Zero(nn.Module):
    """The `none` op of the supernet: zeros at the edge's output resolution."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def emit(self, g: OnnxBuilder, x: str) -> str:
        if self.stride != 1:
            x = g.op(
                "Slice",
                [
                    x,
                    g.const(np.array([0, 0], dtype=np.int64), "i"),
                    g.const(np.array([2**62, 2**62], dtype=np.int64), "i"),
                    g.const(np.array([2, 3], dtype=np.int64), "i"),
                    g.const(np.array([self.stride, self.stride], dtype=np.int64), "i"),
                ],
            )
        return g.op("Mul", [x, g.const(np.zeros((), dtype=np.float32), "zero")])


def forward_shared(op: nn.Module, x: torch.Tensor, memo: dict, key: object) -> torch.Tensor:
    """`op(x)` where several ops of a mixed edge (or several edges) read the same input `x`
    (`key` names it in `memo`, a dict kept for one forward pass): the ReLU that the
    convolution ops begin with, and each pooling, run once per input instead of once per op.
    The same values as `op(x)`; only the order in which gradients are summed differs."""
    if isinstance(op, PoolBN):
        nhwc = _pool_in_nhwc(x)
        pk = (key, op.kind, op.pool.stride)
        pooled = memo.get(pk)
        if pooled is None:
            src = x
            if nhwc:
                src = memo.get((key, "nhwc"))
                if src is None:
                    src = memo[(key, "nhwc")] = x.contiguous(memory_format=torch.channels_last)
            pooled = memo[pk] = op.pool(src)
        y = op.bn(pooled)
        return y.contiguous() if nhwc else y
    after_relu = getattr(op, "after_relu", None)
    if after_relu is not None:
        r = memo.get((key, "relu"))
        if r is None:
            r = memo[(key, "relu")] = torch.relu(x)
        return after_relu(r)
    return op(x)


def make_cell_op(name: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    """A cell-level op of the DARTS set, or `none` (stride 2 on a reduction cell's input edges)."""
    if name == "max_pool_3x3":
        return PoolBN("max", c, stride, affine)
    if name == "avg_pool_3x3":
        return PoolBN("avg", c, stride, affine)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv_"):
        return SepConv(c, int(name[-1]), stride, affine)
    if name.startswith("dil_conv_"):
        return DilConv(c, int(name[-1]), stride, affine)
    if name == NONE:
        return Zero(stride)
    raise ValueError(f"unknown cell op {name!r}")


def make_stage_op(name: str, c: int, affine: bool = True) -> nn.Module:
    """A stage-level op on a connection between cells (resolution kept), or `none`."""
    if name == "skip_connect":
        return Identity()
    if name == "max_pool_3x3":
        return PoolBN("max", c, 1, affine)
    if name == "avg_pool_3x3":
        return PoolBN("avg", c, 1, affine)
    if name == NONE:
        return Zero(1)
    raise ValueError(f"unknown stage op {name!r}")
