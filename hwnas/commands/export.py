"""`hwnas export ARCH.json|RUN --target T --out DIR [--measure]`: the network for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained network (train run) or an architecture to ONNX for a target",
        description=(
            "Write DIR/model.onnx (trained weights from a train run; fresh weights for a bare "
            "architecture or a search run, said so), parity-checked against torch on a real batch, "
            "with the architecture hash, target and predicted latency in the ONNX metadata; for a "
            "TensorRT target also DIR/model.engine. --measure times it on the target with the "
            "profiling protocol and prints predicted versus measured latency, raw and drift-corrected."
        ),
    )
    p.add_argument("source", metavar="ARCH.json|RUN", help="architecture file, train run or search run")
    p.add_argument("--target", "-t", default="ort-cpu", help="target name or .toml (default ort-cpu)")
    p.add_argument("--out", type=Path, required=True, help="export directory")
    p.add_argument("--predictor", type=Path, default=None, help="predictor file: predicted latency for the metadata")
    p.add_argument("--dataset", default=None, help="dataset of the parity batch (default: the train run's)")
    p.add_argument("--measure", action="store_true", help="time the exported model on the target")
    p.add_argument("--force", action="store_true", help="replace an export of another configuration in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity batch")
    p.add_argument("--json", action="store_true", help="print export.json (with the measurement)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from hwnas.deploy.export import (
        EXPORT_INFO,
        export_for_target,
        format_comparison,
        measure_exports,
    )
    from targets.basics import atomic_write_text, check_range, strict_json
    from targets.registry import load_target

    check_range("--seed", args.seed, 0)
    spec = load_target(args.target)
    result = export_for_target(
        args.source, spec, args.out, predictor=args.predictor, dataset=args.dataset,
        force=args.force, seed=args.seed,
    )
    info = result.info
    if args.measure:
        [cmp] = measure_exports(
            [result.onnx_path], spec, [info["predicted_latency_ms"]], info["reference_baseline_ms"]
        )
        info["measurement"] = cmp.to_dict()
        atomic_write_text(args.out / EXPORT_INFO, strict_json(info, indent=2) + "\n")
    if args.json:
        print(strict_json(info, indent=2))
        return 0
    print(
        f"{result.onnx_path}: {info['weights']} weights, architecture {info['arch_hash'][:12]}, target "
        f"{spec.name}, batch {spec.batch_size}; parity with torch: max |diff| {info['parity']['max_abs_diff']:.1e} "
        f"on {info['parity']['inputs']}"
    )
    if result.engine_path is not None:
        print(f"{result.engine_path}: TensorRT engine")
    for note in result.notes:
        print(f"note: {note}")
    if info["predicted_latency_ms"] is None:
        print("no predicted latency (pass --predictor FILE to record one)")
    if args.measure:
        print(format_comparison("latency", cmp))
        if info["reference_baseline_ms"] is None:
            print("drift correction needs the predictor's reference baseline: pass --predictor FILE")
    return 0
