"""`hwnas run`: the end-to-end job on one target (what `make demo` runs).

profile sampled architectures -> re-measure some in a new process (`hwnas db repeat` as a
subprocess: the repeatability floor must not share the profiler's process) -> fit the
latency predictor and its baselines -> predict fresh architectures never profiled and
measure them -> a summary and a predicted-vs-measured plot in the run directory.
Every step is resumable: run it again and the profile store continues where it stopped.

The fresh architectures are compared raw and drift-corrected (measured x the predictor's
reference baseline / the reference figure of their own rounds, predictor/drift.py): the
host runs faster or slower between the profile and the check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from targets.basics import UserError

FRESH_SEED_OFFSET = 1_000_003  # fresh architectures come from another stream than the profile


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="end to end: profile, repeat, fit the predictor, check it on fresh architectures",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    p.add_argument("--space", default="digits", help="search space (default digits: its data ships with scikit-learn)")
    p.add_argument("--target", default="ort-cpu", help="target name or .toml (default: ort-cpu)")
    p.add_argument("--samples", type=int, default=300, help="architectures to profile")
    p.add_argument("--repeat", type=int, default=40, help="architectures to re-measure")
    p.add_argument("--fresh", type=int, default=16, help="fresh architectures to predict + measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init",
        type=Path,
        metavar="KNOWN.pt",
        help="adapt this predictor of another target of the same space instead of fitting "
        "from scratch (needs far fewer --samples; see hwnas predictor fit --init)",
    )
    p.add_argument("--no-progress", action="store_true")
    from hwnas.pipeline import add_arguments

    add_arguments(p)  # search, train, export, measure: the deployment half
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from hwnas import pipeline
    from hwnas.encoding import encode
    from hwnas.export import export_onnx
    from hwnas.profile_source import SpaceCandidates
    from hwnas.space import atomic_write_text, sample_nth, save_architecture
    from predictor import (
        ProfileQuery,
        build_header,
        fit_predictor,
        load_profiles,
        render_report,
        save_predictor,
    )
    from predictor.dataset import min_samples, samples_rule
    from predictor.drift import compare, corrected_ms, describe, predictor_baseline
    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from targets.registry import load_target
    from targets.timing import measure_onnx

    if args.samples < min_samples(args.init is not None):
        raise UserError(f"--samples is {args.samples}: {samples_rule()}")
    init = None
    if args.init is not None:
        from predictor import load_predictor

        init = load_predictor(args.init)
    torch.manual_seed(args.seed)
    out: Path = args.out
    if args.dataset is None:
        args.dataset = "digits" if args.space == "digits" else None
    if args.dataset is None and not args.no_deploy:
        raise UserError(
            f"space '{args.space}' has no default dataset: pass --dataset (cifar10:PATH, imagefolder:PATH, "
            "npz:PATH) for the search and training, or --no-deploy"
        )
    config = {"kind": pipeline.MAIN_KIND, **{k: v for k, v in vars(args).items() if k != "func"}}
    pipeline.check_run_dir(out, config, args.force)
    steps_total = 4 if args.no_deploy else 7
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    spec = load_target(args.target)
    source = SpaceCandidates(args.space)
    db = out / "profile.db"
    summary: dict[str, Any] = {
        "space": args.space, "target": spec.name, "seed": args.seed, "dataset": args.dataset, "steps": {}
    }  # fmt: skip
    atomic_write_text(out / "config.json", json.dumps(config, default=str, indent=2) + "\n")
    (out / "summary.json").unlink(missing_ok=True)  # written again when this run finishes
    t_total = time.perf_counter()

    t = pipeline.step(f"1/{steps_total} profile {args.samples} architectures of '{args.space}' on '{spec.name}'")
    with ProfileStore(db) as store:
        settings = ProfileSettings(seed=args.seed, progress=not args.no_progress)
        prof = run_profile(source, spec, store, args.samples, settings=settings)
    print(f"   {prof.written} measured now, {prof.done_after} in the store ({time.perf_counter() - t:.0f} s)")
    summary["profile"] = {"written": prof.written, "in_store": prof.done_after}
    summary["steps"]["profile"] = time.perf_counter() - t

    t = pipeline.step(
        f"2/{steps_total} re-measure {args.repeat} architectures in a new process (`hwnas db repeat`), "
        "for the measurement's own repeatability"
    )
    if args.repeat > 0:
        rep = repeat_in_new_process(db, args.target, args.repeat, args.seed)
        for line in describe_repeat(rep):
            print("   " + line)
        print(f"   ({time.perf_counter() - t:.0f} s)")
        summary["repeat"] = {
            k: rep.get(k)
            for k in (
                "process", "measured", "failed", "within_5pct", "within_10pct",
                "median_abs_pct", "normalised", "error",
            )
        }  # fmt: skip
        summary["repeat"]["items"] = [
            {"old_ms": i.get("old_ms"), "new_ms": i.get("new_ms")} for i in rep.get("items") or []
        ]
        summary["steps"]["re-measure"] = time.perf_counter() - t

    t = pipeline.step(f"3/{steps_total} fit the latency predictor (MLP) and baselines; score on held-out architectures")
    query = ProfileQuery(space=args.space, seed=args.seed, min_samples=min_samples(init is not None))
    ds = load_profiles(db, spec.cli_ref, query)
    if init is not None:
        from predictor.baselines import BASELINES
        from predictor.transfer import transfer_predictor

        result = transfer_predictor(
            init, ds, baselines=BASELINES, seed=args.seed, init_path=str(args.init)
        )
    else:
        result = fit_predictor(ds, seed=args.seed, progress=not args.no_progress)
    # The search asks the predictor about relaxed encodings: calibrate it there, as `predictor fit` does.
    from hwnas.latency import calibrate_predictor

    calibration = calibrate_predictor(result.model, source.space, seed=args.seed)
    header = build_header(result.model, ds, result.report)
    header["relaxed_correction"] = calibration
    save_predictor(out / "predictor.pt", result.model, header)
    print(render_report(result.report))
    print(
        f"   relaxed encodings calibrated on {calibration['n_points']} relaxations: mean gap "
        f"{100 * calibration['val_mean_gap_before']:+.1f} % -> {100 * calibration['val_mean_gap_after']:+.1f} % "
        "(one-hot predictions unchanged)"
    )
    summary["predictor_test"] = result.report["test"]
    summary["steps"]["fit predictor"] = time.perf_counter() - t

    t = pipeline.step(f"4/{steps_total} predict {args.fresh} fresh architectures, then measure them")
    fresh_dir = out / "fresh"
    archs = [sample_nth(source.space, args.seed + FRESH_SEED_OFFSET, i) for i in range(args.fresh)]
    paths = []
    for i, arch in enumerate(archs):
        save_architecture(arch, fresh_dir / f"{i:03d}-{arch.hash[:10]}.json")
        paths.append(export_onnx(arch, fresh_dir / f"{i:03d}.onnx", batch_size=spec.batch_size))
    with torch.no_grad():
        predicted = result.model(torch.from_numpy(np.stack([encode(a) for a in archs]))).numpy()
    measurements = measure_onnx(paths, spec)
    measured = np.array([m.latency_ms for m in measurements])
    refs = [m.reference_ms for m in measurements]
    baseline = predictor_baseline(result.model.header or {})
    fresh = compare(predicted, measured, refs, baseline)
    for p in paths:
        p.unlink()
    print(
        f"   {'arch':12s} {'predicted ms':>12s} {'measured ms':>12s} {'raw error':>9s} "
        f"{'corrected ms':>12s} {'corr. error':>11s}"
    )
    items = []
    for arch, p, m, r in zip(archs, predicted, measured, refs, strict=True):
        c = corrected_ms(float(m), r, baseline) if fresh["note"] is None else None
        corr_text = "-".rjust(12) + " " + "-".rjust(11)
        if c is not None:
            corr_text = f"{c:12.3f} {100 * (p / c - 1):+10.1f}%"
        print(f"   {arch.hash[:12]} {p:12.3f} {m:12.3f} {100 * (p / m - 1):+8.1f}% {corr_text}")
        items.append(
            {
                "hash": arch.hash,
                "predicted_ms": float(p),
                "measured_ms": float(m),
                "reference_ms": r,
                "corrected_ms": c,
            }
        )
    for line in describe(fresh):
        print("   " + line)
    summary["fresh"] = {
        "raw": fresh["raw"],
        "drift-corrected": fresh["drift-corrected"],
        "predictor_reference_ms": baseline,
        "note": fresh["note"],
        "items": items,
    }
    test_idx = ds.indices("test")
    summary["scatter"] = {
        "test": [
            [float(m), float(p)]
            for m, p in zip(ds.latency_ms[test_idx], result.model.predict_ms(ds.X[test_idx]), strict=True)
        ]
    }
    from hwnas.report import plot_scatter

    plot = plot_scatter(summary, out / "predicted_vs_measured.png")
    summary["steps"]["fresh architectures"] = time.perf_counter() - t
    if not args.no_deploy:
        pipeline.deploy_steps(args, out, spec, out / "predictor.pt", summary, 5, steps_total)
    summary["steps"]["total"] = time.perf_counter() - t_total
    summary = _finite(summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    from hwnas.report import summary_markdown, write_report

    atomic_write_text(out / "summary.md", summary_markdown(summary))
    report = write_report(out)
    plot_name = f", {plot.name}" if plot is not None else ""
    print(f"\nrun directory {out}: {report.name}, summary.md, summary.json, profile.db, predictor.pt{plot_name}")
    print(f"open {report.resolve()} in a browser ({summary['steps']['total']:.0f} s in all)")
    return 0


def _finite(obj: Any) -> Any:
    """JSON without NaN: an undefined statistic (e.g. Spearman on n < 10) becomes null."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def repeat_in_new_process(db: Path, target: str, n: int, seed: int) -> dict[str, Any]:
    """`hwnas db repeat` in a child process; its JSON report, or {"error": ...} if it failed.

    A new process is the point: a figure re-measured in the profiler's own process shares
    its warm caches, allocator and CPU placement, and looks more repeatable than it is.
    """
    cmd = [
        sys.executable, "-m", "hwnas.cli", "db", "repeat", "--db", str(db), "-n", str(n),
        "--seed", str(seed), "--target", str(target), "--json", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    print(f"   re-measuring in process {proc.pid} (not this one, {os.getpid()})", flush=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        return {"process": proc.pid, "measured": 0, "failed": None, "error": last}
    try:
        data = json.loads(out)
    except ValueError:
        return {"process": proc.pid, "measured": 0, "failed": None, "error": "unreadable output"}
    data["process"] = proc.pid
    return data


def describe_repeat(rep: dict[str, Any]) -> list[str]:
    """What the re-measurement showed, without crashing when nothing was measured."""
    if rep.get("error"):
        return [
            f"re-measurement failed: {rep['error']}",
            "continuing without the repeatability floor",
        ]
    measured = int(rep.get("measured") or 0)
    failed = int(rep.get("failed") or 0)
    if measured == 0:
        first = next((i.get("error") for i in rep.get("items", []) if i.get("error")), None)
        return [
            f"all {failed} re-measurements failed"
            + (f" (first error: {first})" if first else "")
            + "; continuing without the repeatability floor"
        ]
    lines = [
        f"n={measured} re-measured in process {rep.get('process')}"
        + (f" ({failed} failed)" if failed else "")
        + f": raw within ±5% {rep['within_5pct']:.0%}, within ±10% {rep['within_10pct']:.0%}, "
        f"median |diff| {rep['median_abs_pct']:.2f}%"
    ]
    norm = rep.get("normalised") or {}
    if norm.get("within_5pct") is not None:
        lines.append(
            f"drift-corrected (each by its own reference): within ±5% {norm['within_5pct']:.0%}, "
            f"within ±10% {norm['within_10pct']:.0%}, median |diff| {norm['median_abs_pct']:.2f}%"
        )
    return lines
