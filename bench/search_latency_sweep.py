"""Latency weight sweep and a latency budget on `digits`: predicted and measured latency.

    python bench/search_latency_sweep.py --predictor runs/bench/digits.pt \
        --out runs/bench/sweep --weights 0,0.5,2 --budget-frac 0.5 --epochs 8 --subset 600 --seed 0

Runs `hwnas search` (same seed, data and schedule) with each latency weight, then with a
budget at `--budget-frac` x the weight-0 architecture's predicted latency; then times the
derived architectures together with `hwnas measure` (interleaved rounds with the reference
network), `--repeats` times in separate processes, and reports per architecture:

* predicted: the predictor's latency of the derived (for the budget run: repaired) architecture;
* measured raw: the median over repeats of the protocol's statistic (`latency_ms`);
* measured corrected: each repeat's figure x (the predictor's baseline reference / the
  reference network's figure in the same rounds), median over repeats: the host's drift
  between profiling and now cancelled, as the predictor's label (`reference`) is.

Goals (issue 11): predicted and measured latency fall as the weight rises; the budget run lands
within +-5 % of its budget predicted and +-10 % measured (corrected; raw beside it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HWNAS = [sys.executable, "-m", "hwnas.cli"]


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}")
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    return out.stdout


def search_cmd(args: argparse.Namespace, name: str, mode: list[str]) -> list[str] | None:
    """The `hwnas search` command of one run, None when it has finished already (reused)."""
    out = Path(args.out) / name
    if (out / "summary.json").is_file():
        return None
    cmd = [
        *HWNAS,
        "search",
        "--space",
        args.space,
        "--dataset",
        args.dataset,
        "--predictor",
        args.predictor,
        *mode,
        "--epochs",
        str(args.epochs),
        "--out",
        str(out),
        "--seed",
        str(args.seed),
        "--no-progress",
        *args.search_args,
    ]
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    if (out / "config.json").is_file():
        cmd.append("--resume")
    return cmd


def run_all(cmds: list[list[str] | None], parallel: bool) -> None:
    todo = [c for c in cmds if c is not None]
    if not parallel:
        for c in todo:
            run(c)
        return
    t = time.perf_counter()
    procs = []
    for c in todo:
        print("$", " ".join(c), "&", flush=True)
        procs.append(subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for c, p in zip(todo, procs, strict=True):
        out, err = p.communicate()
        if p.returncode != 0:
            sys.stderr.write(out[-4000:] + err[-4000:])
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(c)}")
    print(f"  ({time.perf_counter() - t:.0f} s, {len(todo)} in parallel)", flush=True)


def summary(args: argparse.Namespace, name: str) -> dict[str, Any]:
    out = Path(args.out) / name
    s = json.loads((out / "summary.json").read_text())
    s["run"] = name
    s["dir"] = str(out)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--space", default="digits")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--out", default="runs/bench/sweep")
    ap.add_argument("--weights", default="0,0.5,2", help="comma-separated latency weights, 0 first")
    ap.add_argument(
        "--budget-frac", type=float, default=0.5, help="budget = this x weight-0 predicted"
    )
    ap.add_argument(
        "--fallback-frac",
        type=float,
        default=0.75,
        help="budget fraction when the first is refused as out of reach",
    )
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--subset", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="measure processes")
    ap.add_argument(
        "--parallel", action="store_true", help="run the weight searches at the same time"
    )
    ap.add_argument("search_args", nargs="*", help="more `hwnas search` options (after --)")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)

    from predictor import load_predictor

    baseline = load_predictor(args.predictor).header.get("reference_baseline_ms")

    weights = [float(w) for w in args.weights.split(",")]
    names = [f"weight-{w:g}" for w in weights]
    run_all(
        [
            search_cmd(args, n, ["--latency-weight", str(w)])
            for n, w in zip(names, weights, strict=True)
        ],
        args.parallel,
    )
    runs = [summary(args, n) for n in names]
    budget = round(args.budget_frac * float(runs[0]["predicted_latency_ms"]), 4)
    refused = None
    name = f"budget-{budget:g}"
    cmd = search_cmd(args, name, ["--latency-budget", f"{budget:g}"])
    if cmd is not None:
        print("$", " ".join(cmd), flush=True)
        out = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if out.returncode == 2 and "out of reach" in out.stderr:
            refused = {"budget_ms": budget, "message": out.stderr.strip()}
            print("  refused before training:", out.stderr.strip(), flush=True)
            budget = round(args.fallback_frac * float(runs[0]["predicted_latency_ms"]), 4)
            name = f"budget-{budget:g}"
            run_all([search_cmd(args, name, ["--latency-budget", f"{budget:g}"])], False)
        elif out.returncode != 0:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
            raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}")
    runs.append(summary(args, name))

    archs = [str(Path(r["dir"]) / "architecture.json") for r in runs]
    raw: list[list[float]] = [[] for _ in runs]
    corrected: list[list[float]] = [[] for _ in runs]
    for rep in range(args.repeats):
        rows = json.loads(
            run([*HWNAS, "measure", *archs, "--target", args.target, "--json", "--seed", str(rep)])
        )
        for i, row in enumerate(rows):
            raw[i].append(float(row["latency_ms"]))
            if baseline and row.get("reference_ms"):
                corrected[i].append(
                    float(row["latency_ms"]) * float(baseline) / float(row["reference_ms"])
                )

    table = []
    for i, r in enumerate(runs):
        rec = {
            "run": r["run"],
            "latency_weight": r.get("latency_weight"),
            "latency_budget_ms": r.get("latency_budget_ms"),
            "val_accuracy": r.get("val_accuracy"),
            "predicted_ms": float(r["predicted_latency_ms"]),
            "measured_raw_ms": statistics.median(raw[i]),
            "measured_raw_all": raw[i],
            "measured_corrected_ms": statistics.median(corrected[i]) if corrected[i] else None,
            "measured_corrected_all": corrected[i],
        }
        table.append(rec)
    b = table[-1]
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "predictor_reference_baseline_ms": baseline,
        "budget_ms": budget,
        "refused_budget": refused,
        "runs": table,
        "budget_predicted_rel": b["predicted_ms"] / budget - 1,
        "budget_measured_raw_rel": b["measured_raw_ms"] / budget - 1,
        "budget_measured_corrected_rel": (b["measured_corrected_ms"] / budget - 1)
        if b["measured_corrected_ms"]
        else None,
    }
    w = table[: len(weights)]
    result["predicted_falls_with_weight"] = all(
        x["predicted_ms"] > y["predicted_ms"] for x, y in zip(w, w[1:], strict=False)
    )
    key = (
        "measured_corrected_ms" if all(x["measured_corrected_ms"] for x in w) else "measured_raw_ms"
    )
    result["measured_falls_with_weight"] = all(
        x[key] > y[key] for x, y in zip(w, w[1:], strict=False)
    )
    (Path(args.out) / "sweep.json").write_text(json.dumps(result, indent=2))

    print("\n| run | val acc | predicted ms | measured raw ms | measured corrected ms |")
    print("|---|---:|---:|---:|---:|")
    for rec in table:
        corr = rec["measured_corrected_ms"]
        acc = rec["val_accuracy"]
        print(
            f"| {rec['run']} | {acc if acc is None else f'{acc:.3f}'} | {rec['predicted_ms']:.3f} | "
            f"{rec['measured_raw_ms']:.3f} (spread {min(rec['measured_raw_all']):.3f}-{max(rec['measured_raw_all']):.3f}) | "
            f"{'-' if corr is None else f'{corr:.3f}'} |"
        )
    print(
        f"\nbudget {budget:.3f} ms: predicted {result['budget_predicted_rel']:+.1%}, measured raw "
        f"{result['budget_measured_raw_rel']:+.1%}, corrected "
        f"{'-' if result['budget_measured_corrected_rel'] is None else format(result['budget_measured_corrected_rel'], '+.1%')}"
    )
    print(
        f"predicted falls with weight: {result['predicted_falls_with_weight']}; "
        f"measured ({key}) falls with weight: {result['measured_falls_with_weight']}"
    )


if __name__ == "__main__":
    main()
