"""`hwnas run`: the end-to-end job on one target (what `make demo` runs).

profile sampled architectures -> re-measure some in this new process (repeatability) ->
fit the latency predictor and its baselines -> predict fresh architectures never profiled
and measure them -> a summary and a predicted-vs-measured plot in the run directory.
Every step is resumable: run it again and the profile store continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from targets.errors import UserError

FRESH_SEED_OFFSET = 1_000_003  # fresh architectures come from another stream than the profile


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="end to end: profile, repeat, fit the predictor, check it on fresh architectures",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory")
    p.add_argument("--space", default="tiny")
    p.add_argument("--target", default="ort-cpu", help="target name or .toml (default: ort-cpu)")
    p.add_argument("--samples", type=int, default=300, help="architectures to profile")
    p.add_argument("--repeat", type=int, default=40, help="architectures to re-measure")
    p.add_argument("--fresh", type=int, default=16, help="fresh architectures to predict + measure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.perf_counter()


def _run(args: argparse.Namespace) -> int:
    import torch

    from hwnas.encoding import encode
    from hwnas.export import export_onnx
    from hwnas.profile_source import SpaceCandidates
    from hwnas.space import atomic_write_text, sample_nth, save_architecture
    from predictor import (
        build_header,
        fit_predictor,
        load_dataset,
        render_report,
        save_predictor,
    )
    from predictor.metrics import regression_metrics
    from profiling.repeat import repeat_measurements
    from profiling.runner import run_profile
    from profiling.store import ProfileStore
    from targets.registry import load_target
    from targets.timing import measure_onnx

    if args.samples < 60:
        raise UserError(f"--samples must be at least 60 to fit a predictor, got {args.samples}")
    torch.manual_seed(args.seed)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    spec = load_target(args.target)
    source = SpaceCandidates(args.space)
    db = out / "profile.db"
    summary: dict[str, Any] = {"space": args.space, "target": spec.name, "seed": args.seed}
    atomic_write_text(out / "config.json", json.dumps(vars(args), default=str, indent=2) + "\n")

    t = _step(f"1/4 profile {args.samples} architectures of '{args.space}' on '{spec.name}'")
    with ProfileStore(db) as store:
        prof = run_profile(
            source, spec, store, args.samples, seed=args.seed, progress=not args.no_progress
        )
        print(f"   {prof.written} measured now, {prof.done_after} in the store ({time.perf_counter() - t:.0f} s)")
        summary["profile"] = {"written": prof.written, "in_store": prof.done_after}

        t = _step(f"2/4 re-measure {args.repeat} architectures in this process (repeatability)")
        if args.repeat > 0:
            rep = repeat_measurements(
                source, spec, store, args.repeat, seed=args.seed, progress=not args.no_progress
            )
            print(
                f"   within ±5%: {rep.within_5pct:.0%}, within ±10%: {rep.within_10pct:.0%}, "
                f"median |diff| {rep.median_abs_pct:.2f}% ({time.perf_counter() - t:.0f} s)"
            )
            summary["repeat"] = {
                "within_5pct": rep.within_5pct,
                "within_10pct": rep.within_10pct,
                "median_abs_pct": rep.median_abs_pct,
            }

    t = _step("3/4 fit the latency predictor (MLP) and baselines; score on held-out architectures")
    ds = load_dataset(db, spec.name, space=args.space, seed=args.seed)
    result = fit_predictor(ds, seed=args.seed)
    save_predictor(out / "predictor.pt", result.model, build_header(result.model, ds, result.report))
    print(render_report(result.report))
    summary["predictor_test"] = result.report["test"]

    t = _step(f"4/4 predict {args.fresh} fresh architectures, then measure them")
    fresh_dir = out / "fresh"
    archs = [sample_nth(source.space, args.seed + FRESH_SEED_OFFSET, i) for i in range(args.fresh)]
    paths = []
    for i, arch in enumerate(archs):
        save_architecture(arch, fresh_dir / f"{i:03d}-{arch.hash[:10]}.json")
        paths.append(export_onnx(arch, fresh_dir / f"{i:03d}.onnx", batch_size=spec.batch_size))
    with torch.no_grad():
        predicted = result.model(torch.from_numpy(np.stack([encode(a) for a in archs]))).numpy()
    measured = np.array([m.latency_ms for m in measure_onnx(paths, spec)])
    fresh = regression_metrics(measured, predicted)
    for p in paths:
        p.unlink()
    print(f"   {'arch':12s} {'predicted ms':>12s} {'measured ms':>12s} {'error':>8s}")
    for arch, p, m in zip(archs, predicted, measured, strict=True):
        print(f"   {arch.hash[:12]} {p:12.3f} {m:12.3f} {100 * (p / m - 1):+7.1f}%")
    print(
        f"   MAPE {fresh['mape']:.2f}%, within ±10% {fresh['within_10']:.0f}%, "
        f"Spearman {fresh['spearman']:.3f}"
    )
    summary["fresh"] = {
        "metrics": fresh,
        "items": [
            {"hash": a.hash, "predicted_ms": float(p), "measured_ms": float(m)}
            for a, p, m in zip(archs, predicted, measured, strict=True)
        ],
    }
    test_idx = ds.indices("test")
    plot = _plot(
        out / "predicted_vs_measured.png",
        ds.latency_ms[test_idx],
        result.model.predict_ms(ds.X[test_idx]),
        measured,
        predicted,
    )
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    print(f"\nrun directory {out}: profile.db, predictor.pt, summary.json, {plot.name}, fresh/")
    return 0


def _plot(path: Path, test_true: np.ndarray, test_pred: np.ndarray, fresh_true: np.ndarray, fresh_pred: np.ndarray) -> Path:
    """Predicted versus measured latency: held-out test split and fresh architectures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(test_true, test_pred, s=10, alpha=0.6, label=f"held-out test ({len(test_true)})")
    ax.scatter(fresh_true, fresh_pred, s=24, marker="x", color="C3", label=f"fresh, measured later ({len(fresh_true)})")
    lo = float(min(test_true.min(), test_pred.min(), fresh_true.min(), fresh_pred.min())) * 0.95
    hi = float(max(test_true.max(), test_pred.max(), fresh_true.max(), fresh_pred.max())) * 1.05
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.15, label="±10%")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("latency predictor")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
