"""Export an architecture (or its network) to a static-shape ONNX file.

Our networks write their own ONNX graph (`hwnas.nets.onnx_builder`): ~tens of ms per network, no
dependency on torch's deprecated TorchScript exporter or the slow dynamo one. Any other
`nn.Module` goes through `torch.onnx.export` (dynamo, which needs onnxscript).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
from torch import nn

from hwnas.nets.network import Network, build_network
from hwnas.nets.onnx_builder import OnnxBuilder
from hwnas.space import Architecture
from targets.basics import RuntimeMissing, UserError, atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# ONNX metadata_props that tie an exported file to its architecture, so a later
# `hwnas measure MODEL.onnx --json` row can be joined with `predictor predict --json`.
ARCH_HASH_KEY = "hwnas.arch_hash"
ARCH_JSON_KEY = "hwnas.architecture"


def _stamp_architecture(model: onnx.ModelProto, arch: Architecture) -> None:
    """Record the architecture's hash and JSON in the model's metadata."""
    for key, value in ((ARCH_HASH_KEY, arch.hash), (ARCH_JSON_KEY, arch.to_json(indent=None))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def network_to_onnx(net: Network, batch_size: int = 1) -> onnx.ModelProto:
    """The ONNX model of a network in eval mode (BatchNorm folded with its running stats)."""
    space = net.space
    g = OnnxBuilder()
    with torch.no_grad():
        net.emit(g, INPUT_NAME)
    return g.model(
        INPUT_NAME,
        (batch_size, *space.input_shape),
        OUTPUT_NAME,
        (batch_size, space.num_classes),
        graph_name=f"hwnas_{space.name}",
    )


def export_onnx(
    arch_or_module: Architecture | nn.Module,
    path: str | os.PathLike[str],
    batch_size: int = 1,
    *,
    input_shape: tuple[int, ...] | None = None,
    check: bool = True,
) -> Path:
    """Write a static-shape ONNX file atomically (temp file + rename) and return its path.

    An `Architecture` is built with fresh weights (latency does not depend on their values);
    pass a trained `Network` to export trained weights.
    """
    out = Path(path)
    if isinstance(arch_or_module, Architecture):
        model = network_to_onnx(build_network(arch_or_module).eval(), batch_size)
        _stamp_architecture(model, arch_or_module)
    elif isinstance(arch_or_module, Network):
        model = network_to_onnx(arch_or_module.eval(), batch_size)
        arch = getattr(arch_or_module, "arch", None)
        if isinstance(arch, Architecture):
            _stamp_architecture(model, arch)
    else:
        model = _torch_export(arch_or_module, batch_size, input_shape)
    if check:
        onnx.checker.check_model(model)
    atomic_write_bytes(out, model.SerializeToString())
    return out


def _torch_export(module: nn.Module, batch_size: int, input_shape: tuple[int, ...] | None) -> onnx.ModelProto:
    if input_shape is None:
        raise UserError("export of a plain nn.Module needs input_shape=(C, H, W)")
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise RuntimeMissing(
            "exporting an arbitrary torch module needs torch's dynamo exporter: pip install onnxscript"
        ) from None
    example = torch.randn(batch_size, *input_shape)
    program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=[INPUT_NAME])
    return program.model_proto
