"""`hwnas measure MODEL.onnx|ARCH.json... --target T`: time networks with the target's protocol.

All models given are timed together, in the same interleaved rounds and with the
reference network, exactly as the profiler times a group, so figures from `measure`
and from a profile store are comparable.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from targets.errors import UserError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="time ONNX models or architectures on a target (the profiler's protocol)",
        description="Time ONNX models and/or architecture JSON files together on one target.",
    )
    parser.add_argument(
        "models", nargs="+", metavar="MODEL.onnx|ARCH.json", help="ONNX files or architectures"
    )
    parser.add_argument(
        "--target", "-t", default="ort-cpu", help="target name or .toml path (default ort-cpu)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fixed input tensors")
    parser.set_defaults(func=cmd_measure)


def _classify(paths: list[str]) -> list[tuple[Path, str]]:
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise UserError(
                f"{path}: no such file; give ONNX models (.onnx) or architectures (.json)"
            )
        suffix = path.suffix.lower()
        if suffix not in (".onnx", ".json"):
            raise UserError(
                f"{path}: not an ONNX model or architecture JSON (expected .onnx or .json)"
            )
        out.append((path, suffix[1:]))
    return out


def _export_architecture(
    path: Path, out_dir: Path, index: int, batch_size: int
) -> tuple[Path, Any]:
    """Write the architecture's ONNX file; return it and a torch builder for eager targets."""
    from hwnas.export import export_onnx
    from hwnas.space import load_architecture

    arch = load_architecture(path)
    onnx_path = out_dir / f"{index:03d}-{path.stem}.onnx"
    export_onnx(arch, onnx_path, batch_size=batch_size)

    def build() -> Any:
        from hwnas.network import build_network

        return build_network(arch).eval()

    return onnx_path, build


def cmd_measure(args: argparse.Namespace) -> int:
    from targets.backends.base import ModelArtifact, Runner, compile_instances
    from targets.registry import create_backend, load_target
    from targets.timing import (
        REFERENCE_NAME,
        Protocol,
        RunnerFailed,
        check_reference_drift,
        compile_reference,
        fingerprint_key,
        measure_runners,
    )

    spec = load_target(args.target)
    if args.seed is not None:
        spec = replace(spec, options={**spec.options, "input_seed": args.seed})
    models = _classify(args.models)
    backend = create_backend(spec)
    fp = backend.fingerprint()
    key = fingerprint_key(fp)
    protocol = Protocol.for_target(spec)

    runners: dict[str, Runner] = {}
    reference: Runner | None = None
    with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
        try:
            for i, (path, kind) in enumerate(models):
                if kind == "json":
                    onnx_path, build = _export_architecture(path, Path(tmp), i, spec.batch_size)
                    artifact = ModelArtifact(onnx_path, build_torch=build)
                else:
                    artifact = ModelArtifact(path)
                runners[str(i)] = compile_instances(backend, artifact, protocol.sessions)
            if protocol.reference:
                reference = compile_reference(backend, spec)
            try:
                results = measure_runners(runners, protocol, reference)
            except RunnerFailed as exc:
                which = (
                    "the reference network"
                    if exc.name == REFERENCE_NAME
                    else str(models[int(exc.name)][0])
                )
                raise UserError(
                    f"{which}: failed while running on target {spec.name}: {exc.error}"
                ) from None
            if reference is not None:
                results = check_reference_drift(
                    results, key, protocol, spec.options.get("cache_dir")
                )
        finally:
            for runner in runners.values():
                runner.close()
            if reference is not None:
                reference.close()

    rows = []
    for i, (path, _kind) in enumerate(models):
        m = results[str(i)]
        rows.append({"path": str(path), **m.to_dict(), "target": spec.name, "fingerprint_key": key})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["path"]) for r in rows)
    print(
        f"target {spec.name}, fingerprint {key[:12]}, statistic {protocol.statistic}, "
        f"{rows[0]['rounds']} rounds x {protocol.runs_per_round} runs"
    )
    print(f"{'MODEL'.ljust(width)}  LATENCY_MS  MEDIAN_MS  P10_MS  SPREAD  STABLE")
    for r in rows:
        print(
            f"{r['path'].ljust(width)}  {r['latency_ms']:10.3f}  {r['median_ms']:9.3f}  "
            f"{r['p10_ms']:6.3f}  {r['spread']:6.2f}  {'yes' if r['stable'] else 'NO'}"
        )
    if rows[0]["reference_ms"] is not None:
        print(f"reference network: {rows[0]['reference_ms']:.3f} ms (same rounds)")
    if not all(r["stable"] for r in rows):
        print("unstable figures: the host was busy or drifting; measure them again")
    return 0
