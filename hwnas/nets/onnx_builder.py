"""A small ONNX graph writer, so export does not depend on torch's exporters.

torch's TorchScript exporter is deprecated (to be removed) and the dynamo exporter takes
7-11 s per network here and needs onnxscript; export bounds profiling throughput. Our
networks use a dozen op types, so each module writes its own ONNX nodes (see
`hwnas.nets.network`): BatchNorm is folded into the preceding convolution, as ONNX Runtime would
do anyway, and the result is checked against torch in the tests (max abs diff <= 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

OPSET = 17


class OnnxBuilder:
    """Collects nodes and initializers; every value gets a fresh unique name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], **attrs: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    # -- layers ---------------------------------------------------------------------------------
    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def conv(self, x: str, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> str:
        """Conv2d, with an eval-mode BatchNorm folded into its weights when given."""
        weight, bias = fold_conv_bn(conv, bn)
        return self._conv(x, conv, weight, bias)

    def _conv(self, x: str, conv: nn.Conv2d, weight: np.ndarray, bias: np.ndarray) -> str:
        pad = _pair(conv.padding)
        return self.op(
            "Conv",
            [x, self.const(weight), self.const(bias, "b")],
            kernel_shape=list(_pair(conv.kernel_size)),
            strides=list(_pair(conv.stride)),
            pads=[pad[0], pad[1], pad[0], pad[1]],
            dilations=list(_pair(conv.dilation)),
            group=int(conv.groups),
        )

    def conv_with(self, x: str, conv: nn.Conv2d, weight: np.ndarray, bias: np.ndarray) -> str:
        """A convolution with weights already folded by the caller."""
        return self._conv(x, conv, weight, bias)

    def batchnorm(self, x: str, bn: nn.BatchNorm2d) -> str:
        """Eval-mode BatchNorm on its own (after pooling, where there is no conv to fold into)."""
        scale, shift = bn_affine(bn)
        shape = (1, -1, 1, 1)
        y = self.op("Mul", [x, self.const(scale.reshape(shape).astype(np.float32), "s")])
        return self.op("Add", [y, self.const(shift.reshape(shape).astype(np.float32), "t")])

    def max_pool(self, x: str, pool: nn.MaxPool2d) -> str:
        k, s, p = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
        return self.op(
            "MaxPool", [x], kernel_shape=list(k), strides=list(s), pads=[p[0], p[1], p[0], p[1]]
        )

    def avg_pool(self, x: str, pool: nn.AvgPool2d) -> str:
        k, s, p = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
        return self.op(
            "AveragePool",
            [x],
            kernel_shape=list(k),
            strides=list(s),
            pads=[p[0], p[1], p[0], p[1]],
            count_include_pad=int(pool.count_include_pad),
        )

    def concat(self, xs: Sequence[str]) -> str:
        return self.op("Concat", list(xs), axis=1)

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def crop_top_left(self, x: str) -> str:
        """x[:, :, 1:, 1:] (FactorizedReduce's shifted path)."""
        starts = self.const(np.array([1, 1], dtype=np.int64), "i")
        ends = self.const(np.array([2**62, 2**62], dtype=np.int64), "i")
        axes = self.const(np.array([2, 3], dtype=np.int64), "i")
        return self.op("Slice", [x, starts, ends, axes])

    def upsample_nearest(self, x: str, factor: int) -> str:
        scales = self.const(np.array([1, 1, factor, factor], dtype=np.float32), "scales")
        return self.op(
            "Resize",
            [x, "", scales],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    def linear(self, x: str, fc: nn.Linear) -> str:
        w = fc.weight.detach().cpu().numpy().astype(np.float32)
        b = (
            fc.bias.detach().cpu().numpy().astype(np.float32)
            if fc.bias is not None
            else np.zeros(w.shape[0], np.float32)
        )
        return self.op("Gemm", [x, self.const(w), self.const(b, "b")], transB=1)

    def model(
        self,
        input_name: str,
        input_shape: Sequence[int],
        output_name: str,
        output_shape: Sequence[int],
        graph_name: str = "hwnas",
    ) -> onnx.ModelProto:
        out = self.nodes[-1].output[0]
        self.nodes.append(helper.make_node("Identity", [out], [output_name]))
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(output_shape))],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas"
        )
        model.ir_version = 8  # readable by every onnxruntime >= 1.14
        return model


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def bn_affine(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as y = scale * x + shift (float64 for the fold, then float32)."""
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    shift = beta - mean * scale
    return scale.cpu().numpy(), shift.cpu().numpy()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    weight = conv.weight.detach().double().cpu().numpy()
    bias = (
        conv.bias.detach().double().cpu().numpy()
        if conv.bias is not None
        else np.zeros(weight.shape[0])
    )
    if bn is not None:
        scale, shift = bn_affine(bn)
        weight = weight * scale.reshape(-1, 1, 1, 1)
        bias = bias * scale + shift
    return weight.astype(np.float32), bias.astype(np.float32)
