"""Learning curves on a new target: a predictor from scratch versus one adapted from a known target.

    python bench/transfer_curve.py --known runs/bench/tl2/known-ortcpu.pt \
        --db runs/bench/tl2/noopt.db --target runs/bench/tl2/ort-cpu-noopt.toml \
        --heldout runs/bench/tl2/ho1001:runs/bench/tl2/ho1001-noopt-a.json:runs/bench/tl2/ho1001-noopt-b.json \
        --heldout runs/bench/tl2/ho1002:runs/bench/tl2/ho1002-noopt-a.json:runs/bench/tl2/ho1002-noopt-b.json \
        --sizes 30,60,120,240 --methods blend,ridge,scale --include-unstable --out runs/bench/tl2/curve-noopt

A size N is N profiled architectures of the new target consumed by the fit (training plus
validation rows; rows flagged unstable count only with --include-unstable), drawn as
nested subsets of the store; `--draws K` repeats every size with K different draws
(another split seed) and reports the median. Scored on held-out
sets: architectures sampled from seeds the profile did not use, measured twice with
`hwnas measure --json` in two processes; every figure is drift-corrected (latency x the
store's median reference figure / the reference network's figure in the same rounds), and
the floor is the two measurements against each other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.space import load_architecture
from hwnas.space.encoding import encode
from predictor import MLPConfig, ProfileQuery, fit_predictor, load_predictor, load_profiles
from predictor.metrics import regression_metrics
from predictor.transfer import METHODS, adapt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--known", required=True, type=Path, help="predictor of the known target")
    p.add_argument("--db", required=True, type=Path, help="profile store of the new target")
    p.add_argument("--target", required=True, help="the new target (name or .toml)")
    p.add_argument(
        "--heldout",
        action="append",
        required=True,
        metavar="DIR:A.json:B.json",
        help="architecture folder and its two `hwnas measure --json` outputs (repeatable)",
    )
    p.add_argument("--sizes", default="30,60,120,240")
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--include-unstable",
        action="store_true",
        help="count rows the timing protocol flagged unstable too (default: left out, as "
        "`predictor fit` does)",
    )
    p.add_argument("--out", required=True, type=Path)
    return p.parse_args(argv)


def heldout_set(spec: str, baseline: float) -> dict[str, Any]:
    """Encodings and the two drift-corrected measurements of one held-out set."""
    folder, a_path, b_path = spec.split(":")
    runs = [json.loads(Path(x).read_text()) for x in (a_path, b_path)]
    by_path = [{Path(r["path"]).name: r for r in run} for run in runs]
    names = sorted(set(by_path[0]) & set(by_path[1]))
    X, ya, yb = [], [], []
    for name in names:
        arch = load_architecture(Path(folder) / name)
        X.append(encode(arch))
        ya.append(by_path[0][name]["latency_ms"] * baseline / by_path[0][name]["reference_ms"])
        yb.append(by_path[1][name]["latency_ms"] * baseline / by_path[1][name]["reference_ms"])
    return {"name": Path(folder).name, "X": np.stack(X), "a": np.array(ya), "b": np.array(yb)}


def score(pred: np.ndarray, sets: list[dict[str, Any]]) -> dict[str, float]:
    """Per held-out set: MAPE and within ±10 % against each measurement (mean of the two)."""
    out: dict[str, float] = {}
    start = 0
    for s in sets:
        p = pred[start : start + len(s["a"])]
        start += len(s["a"])
        ma, mb = regression_metrics(s["a"], p), regression_metrics(s["b"], p)
        out[f"{s['name']}.mape"] = (ma["mape"] + mb["mape"]) / 2
        out[f"{s['name']}.within_10"] = (ma["within_10"] + mb["within_10"]) / 2
        out[f"{s['name']}.spearman"] = (ma["spearman"] + mb["spearman"]) / 2
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    known = load_predictor(args.known)
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    floors: dict[str, float] = {}
    for draw in range(args.draws):
        # The test split is not used (the held-out sets judge): keep it just big enough.
        query = ProfileQuery(
            seed=args.seed + draw, val_frac=0.15, test_frac=0.05,
            include_unstable=args.include_unstable,
        )  # fmt: skip
        ds = load_profiles(args.db, args.target, query)
        if not sets:
            baseline = float(ds.stats["reference_baseline_ms"])
            sets = [heldout_set(h, baseline) for h in args.heldout]
            for s in sets:
                m = regression_metrics(s["a"], s["b"])
                floors[f"{s['name']}.mape"] = m["mape"]
                floors[f"{s['name']}.within_10"] = m["within_10"]
                floors[f"{s['name']}.spearman"] = m["spearman"]
            X_all = np.concatenate([s["X"] for s in sets])
            results.append(
                {
                    "size": 0,
                    "draw": 0,
                    "model": "known as is",
                    **score(known.predict_ms(X_all), sets),
                }
            )
        tr_all, va_all = ds.indices("train"), ds.indices("val")
        for size in sizes:
            share = len(va_all) / (len(tr_all) + len(va_all))
            n_va = max(5, round(size * share))
            n_tr = size - n_va
            if n_tr > len(tr_all) or n_va > len(va_all):
                print(
                    f"size {size}: the store is too small for this draw, skipped", file=sys.stderr
                )
                continue
            tr, va = tr_all[:n_tr], va_all[:n_va]
            t0 = time.perf_counter()
            fit = fit_predictor(
                ds, cfg=MLPConfig(members=args.members), baselines=(), seed=args.seed + draw,
                max_train=size,
            )  # fmt: skip
            results.append({
                "size": size, "draw": draw, "model": "scratch", "seconds": time.perf_counter() - t0,
                **score(fit.model.predict_ms(X_all), sets),
            })  # fmt: skip
            for method in methods:
                t0 = time.perf_counter()
                model, info = adapt(
                    known, ds.X[tr], ds.latency_ms[tr], method=method, X_val=ds.X[va],
                    y_val_ms=ds.latency_ms[va], seed=args.seed + draw,
                )  # fmt: skip
                results.append({
                    "size": size, "draw": draw, "model": f"transfer-{method}",
                    "seconds": time.perf_counter() - t0, "lambda": info.ridge_lambda,
                    "lambda_ops": info.ridge_lambda_ops, "scale": info.scale,
                    "blend_weight": info.blend_weight,
                    **score(model.predict_ms(X_all), sets),
                })  # fmt: skip
            print(f"draw {draw} size {size} done", file=sys.stderr, flush=True)
    (args.out / "transfer_curve.json").write_text(
        json.dumps({"results": results, "floor": floors}, indent=1, default=float)
    )
    table = markdown(results, floors, sets) + "\n" + compact(results, floors, sets)
    (args.out / "transfer_curve.md").write_text(table)
    print(table)
    return 0


def markdown(
    results: list[dict[str, Any]], floors: dict[str, float], sets: list[dict[str, Any]]
) -> str:
    names = [s["name"] for s in sets]
    models = list(dict.fromkeys(r["model"] for r in results))
    sizes = sorted({r["size"] for r in results})
    head = (
        "| model | profiles | "
        + " | ".join(f"{n}: within ±10 % | {n}: MAPE %" for n in names)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(names))]
    for model in models:
        for size in sizes:
            rows = [r for r in results if r["model"] == model and r["size"] == size]
            if not rows:
                continue
            cells = []
            for n in names:
                w = statistics.median(r[f"{n}.within_10"] for r in rows)
                m = statistics.median(r[f"{n}.mape"] for r in rows)
                cells += [f"{w:.1f}", f"{m:.2f}"]
            lines.append(f"| {model} | {size or '-'} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        cells += [f"{floors[f'{n}.within_10']:.1f}", f"{floors[f'{n}.mape']:.2f}"]
    lines.append("| re-measurement (run a vs run b) | - | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compact(
    results: list[dict[str, Any]], floors: dict[str, float], sets: list[dict[str, Any]]
) -> str:
    """One row per size, per held-out set a column per model: "within ±10 % (MAPE %)"."""
    models = list(dict.fromkeys(r["model"] for r in results))
    sizes = sorted({r["size"] for r in results})
    names = [s["name"] for s in sets]
    head = "| profiles | " + " | ".join(f"{m} ({n})" for n in names for m in models) + " |"
    lines = [head, "|---:|" + "---|" * (len(models) * len(names))]
    for size in sizes:
        cells = []
        for n in names:
            for model in models:
                rows = [r for r in results if r["model"] == model and r["size"] == size]
                if not rows:
                    cells.append("")
                    continue
                w = statistics.median(r[f"{n}.within_10"] for r in rows)
                m = statistics.median(r[f"{n}.mape"] for r in rows)
                cells.append(f"{w:.1f} ({m:.1f})")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        for i in range(len(models)):
            f = f"{floors[f'{n}.within_10']:.1f} ({floors[f'{n}.mape']:.1f})"
            cells.append(f if i == 0 else "")
    lines.append("| floor (run a vs run b) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
