"""Export cost per network: hwnas's native ONNX writer versus torch's exporters.

    python bench/export_time.py --space tiny -n 10 --seed 0

Prints medians and spread per exporter. The TorchScript exporter is deprecated
(dynamo=False) and is only timed for comparison; dynamo needs onnxscript and is skipped
without it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from hwnas.nets.network import build_network
from hwnas.nets.onnx_export import export_onnx
from hwnas.space import get_space, sample_architectures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="tiny")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = get_space(args.space)
    times: dict[str, list[float]] = {"build": [], "native": [], "torchscript": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(sample_architectures(space, args.seed, args.n)):
            t0 = time.perf_counter()
            net = build_network(arch).eval()
            times["build"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            export_onnx(net, Path(tmp) / f"n{i}.onnx")
            times["native"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net,
                    (torch.randn(1, *space.input_shape),),
                    str(Path(tmp) / f"t{i}.onnx"),
                    dynamo=False,
                )
            times["torchscript"].append(time.perf_counter() - t0)
    print(
        f"space {space.name}, {args.n} architectures, seed {args.seed}, torch threads {args.threads}"
    )
    print("| step | median s | min s | max s |")
    print("|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.3f} | {min(v):.3f} | {max(v):.3f} |")
    ratio = statistics.median(times["torchscript"]) / statistics.median(times["native"])
    print(f"torchscript / native export time: {ratio:.1f}x")


if __name__ == "__main__":
    main()
