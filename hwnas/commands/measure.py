"""`hwnas measure MODEL.onnx|ARCH.json... --target T`: time networks with the target's protocol.

All models given are timed together, in the same interleaved rounds and with the
reference network, exactly as the profiler times a group, so figures from `measure`
and from a profile store are comparable. With `--predictor FILE` every architecture is
also predicted, and the measurement is set beside the prediction both raw and corrected
to the predictor's reference baseline (predictor/drift.py): the host drifts between the
profile and this measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from targets.basics import UserError, check_range


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
    parser.add_argument(
        "--predictor",
        type=Path,
        metavar="FILE",
        help="also predict each architecture with this predictor file and compare, raw and "
        "drift-corrected (measured x the predictor's reference baseline / this reference)",
    )
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


def onnx_architecture(path: Path) -> tuple[str | None, Any]:
    """(arch hash, Architecture) recorded in an ONNX file's metadata by hwnas export."""
    import onnx

    from hwnas.nets.onnx_export import ARCH_HASH_KEY, ARCH_JSON_KEY
    from hwnas.space import Architecture

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not readable here; the backend reports it properly
        return None, None
    meta = {p.key: p.value for p in model.metadata_props}
    arch = None
    if ARCH_JSON_KEY in meta:
        try:
            arch = Architecture.from_json(meta[ARCH_JSON_KEY], where=f"{path} metadata")
        except UserError:
            arch = None
    arch_hash = meta.get(ARCH_HASH_KEY) or (arch.hash if arch is not None else None)
    if arch is not None and arch.hash != arch_hash:
        arch = None  # metadata disagree with themselves: keep the recorded hash, predict nothing
    return arch_hash, arch


def _export_architecture(
    arch: Any, path: Path, out_dir: Path, index: int, batch_size: int
) -> tuple[Path, Any]:
    """Write the architecture's ONNX file; return it and a torch builder for eager targets."""
    from hwnas.nets.onnx_export import export_onnx

    onnx_path = out_dir / f"{index:03d}-{path.stem}.onnx"
    export_onnx(arch, onnx_path, batch_size=batch_size)

    def build() -> Any:
        from hwnas.nets.network import build_network

        return build_network(arch).eval()

    return onnx_path, build


def cmd_measure(args: argparse.Namespace) -> int:
    from targets.backends.base import ModelArtifact
    from targets.registry import create_backend, load_target
    from targets.timing import Protocol, fingerprint_key, measure_onnx, measurement_fingerprint

    check_range("--seed", args.seed, 0)
    spec = load_target(args.target)
    if args.seed is not None:
        spec = replace(spec, options={**spec.options, "input_seed": args.seed})
    models = _classify(args.models)
    predictor = None
    if args.predictor is not None:
        from predictor import load_predictor

        predictor = load_predictor(args.predictor)
    archs = _architectures(models)
    backend = create_backend(spec)
    fp = backend.fingerprint()
    protocol = Protocol.for_target(spec)
    key = fingerprint_key(measurement_fingerprint(fp, protocol))  # as a profile row's key

    with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
        artifacts = []
        for i, (path, kind) in enumerate(models):
            if kind == "json":
                onnx_path, build = _export_architecture(
                    archs[i][1], path, Path(tmp), i, spec.batch_size
                )
                artifacts.append(ModelArtifact(onnx_path, build_torch=build))
            else:
                artifacts.append(ModelArtifact(path))
        names = [str(path) for path, _kind in models]
        measured = measure_onnx(artifacts, spec, protocol, backend=backend, names=names)
    results = {str(i): m for i, m in enumerate(measured)}

    rows = []
    for i, (path, _kind) in enumerate(models):
        m = results[str(i)]
        rows.append(
            {
                "path": str(path),
                "arch_hash": archs[i][0],
                **m.to_dict(),
                "target": spec.name,
                "fingerprint_key": key,
            }
        )
    comparison = None
    if predictor is not None:
        comparison = _predict_rows(predictor, rows, archs, key)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["path"]) for r in rows)
    print(
        f"target {spec.name}, fingerprint {key[:12]}, statistic {protocol.statistic}, "
        f"{rows[0]['rounds']} rounds x {protocol.runs_per_round} runs"
    )
    head = f"{'MODEL'.ljust(width)}  LATENCY_MS  MEDIAN_MS  P10_MS  SPREAD  STABLE"
    if predictor is not None:
        head += "  PREDICTED_MS  CORRECTED_MS  ERR_RAW  ERR_CORR"
    print(head)
    for r in rows:
        line = (
            f"{r['path'].ljust(width)}  {r['latency_ms']:10.3f}  {r['median_ms']:9.3f}  "
            f"{r['p10_ms']:6.3f}  {r['spread']:6.2f}  {'yes' if r['stable'] else 'NO':>6}"
        )
        if predictor is not None:
            line += (
                f"  {_fmt(r.get('predicted_ms'), '12.3f')}  {_fmt(r.get('corrected_ms'), '12.3f')}"
                f"  {_fmt(r.get('error_pct'), '+6.1f')}%  {_fmt(r.get('corrected_error_pct'), '+7.1f')}%"
            )
        print(line)
    if rows[0]["reference_ms"] is not None:
        print(f"reference network: {rows[0]['reference_ms']:.3f} ms (same rounds)")
    else:
        print("no reference network timed (the target sets reference = false)")
    if comparison is not None:
        from predictor.drift import describe

        print(f"predictor {args.predictor} against this measurement:")
        for line in describe(comparison):
            print("  " + line)
    if not all(r["stable"] for r in rows):
        print("unstable figures: the host was busy or drifting; measure them again")
    return 0


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.lstrip("+").split(".")[0])
    return "-".rjust(width) if value is None else format(value, spec)


def _architectures(models: list[tuple[Path, str]]) -> list[tuple[str | None, Any]]:
    """(arch hash, Architecture or None) per model: from the JSON, or the ONNX metadata."""
    from hwnas.space import load_architecture

    out: list[tuple[str | None, Any]] = []
    for path, kind in models:
        if kind == "json":
            arch = load_architecture(path)
            out.append((arch.hash, arch))
        else:
            out.append(onnx_architecture(path))
    return out


def _predict_rows(
    predictor: Any, rows: list[dict[str, Any]], archs: list[tuple[str | None, Any]], key: str
) -> dict[str, Any] | None:
    """Add predicted_ms, the predictor's baseline and the corrected latency to each row."""
    import sys

    import numpy as np

    from hwnas.deploy.export import check_predictor_space
    from hwnas.space.encoding import encode
    from predictor.drift import compare, corrected_ms, predictor_baseline

    header = predictor.header
    baseline = predictor_baseline(header)
    if header.get("fingerprint_key") not in (None, key):
        print(
            f"warning: the predictor was fitted on fingerprint {str(header.get('fingerprint_key'))[:12]}, "
            f"this measurement has {key[:12]} (another device, runtime or protocol): "
            "the comparison mixes platforms",
            file=sys.stderr,
        )
    todo = []
    for i, (row, (_h, arch)) in enumerate(zip(rows, archs, strict=True)):
        row.update(
            {
                "predicted_ms": None,
                "predictor_reference_ms": baseline,
                "corrected_ms": None,
                "error_pct": None,
                "corrected_error_pct": None,
            }
        )
        if arch is None:
            continue  # an ONNX file without hwnas metadata: nothing to encode
        note = check_predictor_space(predictor, arch, what=f"{row['path']} (space '{arch.space.name}')")
        if note is not None:
            print(f"note: {row['path']}: {note}", file=sys.stderr)
        todo.append((i, encode(arch)))
    if not todo:
        print(
            "warning: no architecture to predict (ONNX files without hwnas metadata); "
            "give architecture JSON files",
            file=sys.stderr,
        )
        return None
    pred = predictor.predict_ms(np.stack([np.asarray(e, dtype=np.float32) for _, e in todo]))
    for (i, _), p in zip(todo, pred, strict=True):
        row = rows[i]
        row["predicted_ms"] = float(p)
        row["error_pct"] = 100.0 * (float(p) / row["latency_ms"] - 1.0)
        corr = corrected_ms(row["latency_ms"], row["reference_ms"], baseline)
        if corr is not None:
            row["corrected_ms"] = corr
            row["corrected_error_pct"] = 100.0 * (float(p) / corr - 1.0)
    done = [rows[i] for i, _ in todo]
    return compare(
        [r["predicted_ms"] for r in done],
        [r["latency_ms"] for r in done],
        [r["reference_ms"] for r in done],
        baseline,
    )
