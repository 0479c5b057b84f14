"""How repeatable are a target's figures on this host? Measure the same ONNX files in N
separate processes, one after another, and report how often two processes agree.

    python -m targets.repeatability MODEL.onnx... [--target ort-cpu] [--processes 5]
                                    [--protocol '{"statistic": "p10"}']

A predictor cannot be more accurate than re-measuring, so this is the number to publish
next to any accuracy figure (and to check before trusting a new target or host). Light
by design: it runs the target's own protocol, nothing more.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from targets.basics import UserError
from targets.registry import load_target
from targets.timing import Protocol, measure_onnx

FIELDS = {
    "latency": lambda m: m["latency_ms"],
    "min": lambda m: m["min_ms"],
    "p10": lambda m: m["p10_ms"],
    "median": lambda m: m["median_ms"],
    "latency/ref": lambda m: m["latency_ms"] / m["reference_ms"] if m["reference_ms"] else None,
}


def _child(paths: list[str], target: str, overrides: dict[str, Any]) -> None:
    spec = load_target(target)
    protocol = replace(Protocol.for_target(spec), **overrides)
    start = time.perf_counter()
    results = measure_onnx([Path(p) for p in paths], spec, protocol)
    elapsed = time.perf_counter() - start
    print(json.dumps({"elapsed": elapsed, "m": [m.to_dict() for m in results]}))


def agreement(runs: Sequence[dict[str, Any]], field: str, tol: float) -> float | None:
    """Share of (model, process pair) figures within ±tol of each other."""
    get = FIELDS[field]
    ok = total = 0
    for i in range(len(runs[0]["m"])):
        for a, b in itertools.combinations([r["m"][i] for r in runs], 2):
            va, vb = get(a), get(b)
            if va is None or vb is None or vb == 0:
                continue
            total += 1
            ok += abs(va / vb - 1.0) <= tol
    return ok / total if total else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m targets.repeatability", description=__doc__)
    parser.add_argument("models", nargs="+", help="ONNX files (time them together, as a group)")
    parser.add_argument("--target", default="ort-cpu")
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--protocol", default="{}", help="JSON protocol overrides")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = json.loads(args.protocol)
    if args.child:
        _child(args.models, args.target, overrides)
        return 0
    if args.processes < 2:
        raise UserError("--processes must be at least 2 to compare processes")
    runs = []
    for _ in range(args.processes):
        cmd = [sys.executable, "-m", "targets.repeatability", "--child", "--target", args.target]
        cmd += ["--protocol", args.protocol, *args.models]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            return out.returncode
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {
        "target": args.target,
        "processes": len(runs),
        "models": len(args.models),
        "seconds_per_process": sum(r["elapsed"] for r in runs) / len(runs),
        "rounds": [r["m"][0]["rounds"] for r in runs],
        "stable_share": sum(m["stable"] for r in runs for m in r["m"])
        / sum(len(r["m"]) for r in runs),
        "within_5pct": {f: agreement(runs, f, 0.05) for f in FIELDS},
        "within_10pct": {f: agreement(runs, f, 0.10) for f in FIELDS},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['processes']} processes x {report['models']} models on {args.target}: "
        f"{report['seconds_per_process']:.2f} s per process (measure_onnx), rounds "
        f"{report['rounds']}, stable {report['stable_share']:.0%}"
    )
    print("figure        within ±5%  within ±10%")
    for f in FIELDS:
        a, b = report["within_5pct"][f], report["within_10pct"][f]
        if a is not None and b is not None:
            print(f"{f:12s}  {a:10.0%}  {b:11.0%}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
