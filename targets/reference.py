"""The fixed reference network timed alongside every group of candidates.

Host drift (another tenant, frequency scaling, thermal state) moves every latency of a
round alike; a network that never changes, timed in the same rounds, shows that drift
and lets a consumer correct for it (`latency_ms / reference_ms`). It is a small,
DARTS-flavoured conv net (~1 ms on ONNX Runtime CPU, one thread, batch 1) whose weights
come from a fixed seed, so every process and host builds byte-identical ONNX.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.basics import atomic_write_bytes
from targets.cache import cache_dir

if TYPE_CHECKING:
    import torch

REFERENCE_VERSION = 1
INPUT_SHAPE = (3, 32, 32)  # per sample (C, H, W)
NUM_CLASSES = 10
# (in_channels, out_channels, kernel, stride, group) per conv; group > 1 = depthwise.
_LAYERS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 32, 3, 1, 1),
    (32, 32, 3, 1, 1),
    (32, 32, 3, 1, 32),
    (32, 48, 1, 1, 1),
    (48, 48, 3, 2, 48),
    (48, 48, 3, 1, 1),
    (48, 64, 1, 1, 1),
    (64, 64, 3, 1, 64),
    (64, 64, 1, 1, 1),
    (64, 96, 3, 2, 1),
    (96, 96, 3, 1, 1),
    (96, 96, 3, 1, 96),
    (96, 128, 1, 1, 1),
    (128, 128, 3, 1, 1),
)
_SEED = 20240601


def _weights() -> list[tuple[Any, Any]]:
    """(weight, bias) per conv plus the classifier, from the legacy MT19937 stream,
    whose output numpy guarantees across versions."""
    import numpy as np

    rng = np.random.RandomState(_SEED)
    params = []
    for cin, cout, k, _stride, group in _LAYERS:
        fan_in = (cin // group) * k * k
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        b = rng.standard_normal(cout) * 0.01
        params.append((w.astype(np.float32), b.astype(np.float32)))
    last = _LAYERS[-1][1]
    w = rng.standard_normal((NUM_CLASSES, last)) * np.sqrt(1.0 / last)
    b = np.zeros(NUM_CLASSES)
    params.append((w.astype(np.float32), b.astype(np.float32)))
    return params


@lru_cache(maxsize=8)
def reference_onnx_bytes(batch_size: int = 1) -> bytes:
    """The serialized reference model for a batch size (deterministic bytes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    params = _weights()
    nodes = []
    inits = []
    x = "input"
    for i, ((_cin, _cout, k, stride, group), (w, b)) in enumerate(
        zip(_LAYERS, params[:-1], strict=True)
    ):
        inits += [
            numpy_helper.from_array(w, f"conv{i}.w"),
            numpy_helper.from_array(b, f"conv{i}.b"),
        ]
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"conv{i}.w", f"conv{i}.b"],
                [f"conv{i}"],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=group,
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        x = f"relu{i}"
    w, b = params[-1]
    inits += [numpy_helper.from_array(w, "fc.w"), numpy_helper.from_array(b, "fc.b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hwnas_reference",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch_size, *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch_size, NUM_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="hwnas.targets.reference",
        producer_version=str(REFERENCE_VERSION),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8  # readable by every onnxruntime/TensorRT this project supports
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_onnx_path(batch_size: int = 1, directory: str | Path | None = None) -> Path:
    """The reference model, written once to the cache directory and reused.

    Files are only ever written whole (atomic rename) under a versioned name, so an
    existing file is trusted: generating the model costs ~0.5 s, per process.
    """
    path = cache_dir(directory) / f"reference-v{REFERENCE_VERSION}-b{batch_size}.onnx"
    if not path.is_file() or path.stat().st_size == 0:
        atomic_write_bytes(path, reference_onnx_bytes(batch_size))
    return path


def build_reference_torch() -> torch.nn.Module:
    """The same network in eager torch (same weights), for the torch backend."""
    import torch
    from torch import nn

    params = _weights()
    layers: list[nn.Module] = []
    for (cin, cout, k, stride, group), (w, b) in zip(_LAYERS, params[:-1], strict=True):
        conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=group)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))
        layers += [conv, nn.ReLU()]
    w, b = params[-1]
    fc = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(w))
        fc.bias.copy_(torch.from_numpy(b))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc]
    return nn.Sequential(*layers).eval()
