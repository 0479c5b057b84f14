"""A space-free candidate source: small random conv nets written with onnx.helper.

Why it exists: profiling must be testable and benchmarkable without a search space
(profiling never imports hwnas), and a user bringing up a device can smoke-test the
whole profile path (store, resume, Ray fleet) with it. The networks are real (ORT runs
them, their latency grows with depth and width), deterministic per (seed, index), and
export in a few milliseconds.

`fail_every=k` poisons every k-th index of a stream (export raises, or with
`fail_mode="compile"` a corrupt file is written) to exercise the failure path.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiling.candidates import Candidate
from targets.fingerprint import canonical_json

if TYPE_CHECKING:
    import torch

MAX_DEPTH = 6
CHANNELS = (4, 8, 12, 16, 24, 32)
KERNELS = (1, 3, 5)


class SyntheticCandidates:
    """CandidateSource of plain conv/ReLU stacks; picklable (holds only numbers)."""

    def __init__(
        self,
        *,
        resolution: int = 16,
        fail_every: int = 0,
        fail_mode: str = "export",
        name: str = "synthetic",
    ) -> None:
        if fail_mode not in ("export", "compile"):
            raise ValueError("fail_mode must be 'export' or 'compile'")
        self.space_name = name
        self.resolution = int(resolution)
        self.fail_every = int(fail_every)
        self.fail_mode = fail_mode
        self.space_config: dict[str, Any] = {
            "name": name,
            "family": "conv-relu-stack",
            "resolution": self.resolution,
            "max_depth": MAX_DEPTH,
            "channels": list(CHANNELS),
            "kernels": list(KERNELS),
        }
        self.space_key = hashlib.sha256(canonical_json(self.space_config).encode()).hexdigest()
        self.encoding_layout: list[str] = (
            ["depth"]
            + [f"layer{i}.channels" for i in range(MAX_DEPTH)]
            + [f"layer{i}.kernel" for i in range(MAX_DEPTH)]
        )

    def sample(self, seed: int, index: int) -> Candidate:
        rng = random.Random(f"synthetic:{seed}:{index}")
        depth = rng.randint(1, MAX_DEPTH)
        layers = [
            {"channels": rng.choice(CHANNELS), "kernel": rng.choice(KERNELS)} for _ in range(depth)
        ]
        arch: dict[str, Any] = {"schema": 1, "layers": layers}
        if self.fail_every > 0 and index % self.fail_every == self.fail_every - 1:
            arch["poison"] = self.fail_mode
            arch["index"] = index  # keep poisoned candidates distinct
        arch_json = canonical_json(arch)
        arch_hash = hashlib.sha256(arch_json.encode()).hexdigest()
        encoding = [depth / MAX_DEPTH]
        encoding += [
            (layers[i]["channels"] / max(CHANNELS)) if i < depth else 0.0 for i in range(MAX_DEPTH)
        ]
        encoding += [
            (layers[i]["kernel"] / max(KERNELS)) if i < depth else 0.0 for i in range(MAX_DEPTH)
        ]
        return Candidate(arch_hash=arch_hash, arch_json=arch_json, encoding=encoding)

    def export(self, arch_json: str, path: Path, batch_size: int) -> None:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        arch = json.loads(arch_json)
        path = Path(path)
        if arch.get("poison") == "export":
            raise RuntimeError("synthetic export failure (poisoned candidate)")
        if arch.get("poison") == "compile":
            path.write_bytes(b"this is not an ONNX model")
            return
        rng = np.random.default_rng(int(hashlib.sha256(arch_json.encode()).hexdigest()[:8], 16))
        nodes, inits = [], []
        prev, cin = "input", 3
        for i, layer in enumerate(arch["layers"]):
            cout, k = int(layer["channels"]), int(layer["kernel"])
            w = (rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5).astype(
                np.float32
            )
            inits += [
                numpy_helper.from_array(w, f"w{i}"),
                numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
            ]
            nodes.append(
                helper.make_node(
                    "Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[k // 2] * 4, name=f"conv{i}"
                )
            )
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
            prev, cin = f"r{i}", cout
        nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
        nodes.append(helper.make_node("Flatten", ["pooled"], ["output"]))
        r = self.resolution
        graph = helper.make_graph(
            nodes,
            "synthetic",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch_size, 3, r, r])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch_size, cin])],
            initializer=inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))

    def build_torch(self, arch_json: str) -> torch.nn.Module:
        import torch

        arch = json.loads(arch_json)
        if arch.get("poison"):
            raise RuntimeError("synthetic build failure (poisoned candidate)")
        gen_seed = int(hashlib.sha256(arch_json.encode()).hexdigest()[:8], 16)
        with torch.random.fork_rng(devices=[]):  # the same weights per arch; the caller's RNG untouched
            torch.manual_seed(gen_seed)
            return self._build(arch)

    def _build(self, arch: dict) -> torch.nn.Module:
        from torch import nn

        layers: list[nn.Module] = []
        cin = 3
        for layer in arch["layers"]:
            cout, k = int(layer["channels"]), int(layer["kernel"])
            layers += [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU()]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(*layers).eval()
