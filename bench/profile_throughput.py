"""Profiling throughput: architectures per minute and where the wall time goes.

    .venv/bin/python bench/profile_throughput.py --space tiny --target ort-cpu --samples 64
    .venv/bin/python bench/profile_throughput.py --overlap-check      # does export disturb timing?

Goal (issue): >= 60 architectures per minute on ort-cpu / tiny at the default protocol.
Run it on a quiet machine; it is not part of the test suite.

`--overlap-check` is the measurement behind the runner's choice not to export the next
group while the current one is timed: it times one group of exported candidates (and the
reference network) with the target's protocol, alternately on an idle host and with a
background exporter (a thread, then a process) busy writing ONNX files, and prints how
much each statistic moves.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_source(kind: str, space: str) -> Any:
    if kind == "synthetic":
        from profiling.synthetic import SyntheticCandidates

        return SyntheticCandidates(resolution=32)
    from hwnas.nets.profile_source import SpaceCandidates

    return SpaceCandidates(space)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from targets.registry import load_target

    spec = load_target(args.target)
    source = make_source(args.source, args.space)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "bench.db"
        with ProfileStore(db) as store:
            summary = run_profile(
                source,
                spec,
                store,
                args.samples,
                settings=ProfileSettings(
                    seed=args.seed,
                    group_size=args.group_size,
                    progress=not args.json,
                    overlap=args.overlap,
                ),
            )
    data = summary.to_dict()
    data.update(space=source.space_name, target=spec.name, goal_per_minute=60)
    return data


def _export_loop(source: Any, directory: str, stop: Any) -> None:
    i = 0
    while not stop.is_set():
        cand = source.sample(12345, i)
        source.export(cand.arch_json, Path(directory) / f"bg{i % 4}.onnx", 1)
        i += 1


def overlap_check(args: argparse.Namespace) -> dict[str, Any]:
    from profiling.groups import export_group, open_backend, reference_runner
    from targets.backends.base import ModelArtifact
    from targets.registry import load_target
    from targets.timing import Protocol, measure_runners

    spec = load_target(args.target)
    source = make_source(args.source, args.space)
    protocol = Protocol.for_target(spec)
    backend = open_backend(spec)
    results: dict[str, list[dict[str, float]]] = {"idle": [], "thread": [], "process": []}
    with tempfile.TemporaryDirectory() as tmp:
        group = [source.sample(args.seed, i) for i in range(args.group_size)]
        prepared = export_group(source, group, tmp, spec.batch_size)
        runners = {
            p.candidate.arch_hash: backend.compile(ModelArtifact(Path(p.onnx_path)))
            for p in prepared
            if p.onnx_path
        }
        reference = reference_runner(backend, spec, protocol)
        ctx = multiprocessing.get_context("spawn")
        for _ in range(args.repeats):
            for mode in ("idle", "thread", "process", "idle"):
                worker: Any = None
                if mode == "thread":
                    stop: Any = threading.Event()
                    worker = threading.Thread(target=_export_loop, args=(source, tmp, stop))
                    worker.start()
                elif mode == "process":
                    stop = ctx.Event()
                    worker = ctx.Process(target=_export_loop, args=(source, tmp, stop))
                    worker.start()
                    time.sleep(3.0)  # let it import and start exporting
                t0 = time.perf_counter()
                measured = measure_runners(runners, protocol, reference)
                wall = time.perf_counter() - t0
                if worker is not None:
                    stop.set()
                    worker.join()
                results[mode].append(
                    {
                        "wall_s": wall,
                        "latency": statistics.fmean(m.latency_ms for m in measured.values()),
                        "median": statistics.fmean(m.median_ms for m in measured.values()),
                        "spread": statistics.fmean(m.spread for m in measured.values()),
                    }
                )
        for r in runners.values():
            r.close()
        if reference is not None:
            reference.close()
    summary: dict[str, Any] = {"target": spec.name, "protocol": protocol.to_dict()}
    idle = {k: statistics.median(r[k] for r in results["idle"]) for k in results["idle"][0]}
    for mode, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        summary[mode] = {
            k: {"value": round(v, 4), "vs_idle": round(v / idle[k] - 1.0, 4) if idle[k] else None}
            for k, v in med.items()
        }
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="tiny")
    p.add_argument("--target", default="ort-cpu")
    p.add_argument("--source", choices=("space", "synthetic"), default="space")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", help="store to use (default: a temporary one)")
    p.add_argument("--overlap", action="store_true", help="export in a background process")
    p.add_argument("--overlap-check", action="store_true", help="measure export/timing overlap")
    p.add_argument("--repeats", type=int, default=3, help="overlap check: repetitions")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.overlap_check:
        data = overlap_check(args)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print(f"target {data['target']}, group of {args.group_size}, {args.repeats} repeats")
            for mode in ("idle", "thread", "process"):
                row = data[mode]
                print(
                    f"{mode:8s} "
                    + "  ".join(
                        f"{k} {v['value']:.4g} ({v['vs_idle']:+.1%})" for k, v in row.items()
                    )
                )
        return 0
    data = throughput(args)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"{data['space']} on {data['target']}: {data['written']} architectures in "
        f"{data['wall_s']:.1f} s = {data['archs_per_minute']:.1f} per minute "
        f"(goal >= {data['goal_per_minute']})"
    )
    shares = data["phase_share"]
    other = max(0.0, 1.0 - sum(shares.values()))
    print(
        "wall time: "
        + ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if v > 0)
        + f", other {other:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
