"""Latency weight sweep and a latency budget on `digits`: predicted and measured latency.

    python bench/search_latency_sweep.py --predictor runs/bench/digits-cheap.pt \
        --out runs/bench/sweep-full --weights 0,0.5,2 --budget-frac 0.5 --fallback-frac 0.75 \
        --epochs 6 --subset 800 --seed 0 --repeats 3 --parallel --floor \
        -- --threads 1 --mode full --search-resolution 8 --arch-lr 3e-3

Runs `hwnas search` (same seed, data and schedule) with each latency weight, then with a
budget at `--budget-frac` x the weight-0 architecture's predicted latency (`--fallback-frac`
when that is refused as out of reach). `--parallel` runs at most `--jobs` (2) searches at once,
the budget search starting as soon as weight 0 has finished; finished runs are reused and
interrupted ones resumed. `--floor` adds the predictor's fastest architecture in the space
(the bottom of `reachable_range`) to the measurement. Then it times the
derived architectures together with `hwnas measure` (interleaved rounds with the reference
network), `--repeats` times in separate processes, and reports per architecture:

* predicted: the predictor's latency of the derived (for the budget run: repaired) architecture;
* measured raw: the median over repeats of the protocol's statistic (`latency_ms`);
* measured corrected: each repeat's figure x (the predictor's baseline reference / the
  reference network's figure in the same rounds), median over repeats: the host's drift
  between profiling and now cancelled, as the predictor's label (`reference`) is;
* from the run's log.csv: the supernet's val accuracy, the parameter-free share of the derived
  cell edges (with the collapse guard / without), the expected depth per stage.

Goals (issue 11): predicted and measured latency fall as the weight rises; the budget run lands
within +-5 % of its budget predicted and +-10 % measured (corrected; raw beside it).
"""

from __future__ import annotations

import argparse
import csv
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


def run_all(cmds: list[list[str] | None], parallel: int) -> None:
    """Run the commands, at most `parallel` at a time (1: one after the other)."""
    pool = Pool(parallel)
    for c in cmds:
        if c is not None:
            pool.submit(c)
    pool.wait_all()


class Pool:
    """At most `size` child processes at once (the host has 2 cores shared with others)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.queue: list[list[str]] = []
        self.running: list[tuple[list[str], subprocess.Popen[str], float]] = []
        self.done: dict[str, tuple[int, str, str]] = {}

    def submit(self, cmd: list[str]) -> None:
        self.queue.append(cmd)
        self._start()

    def _start(self) -> None:
        while self.queue and len(self.running) < self.size:
            c = self.queue.pop(0)
            print("$", " ".join(c), "&", flush=True)
            p = subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.running.append((c, p, time.perf_counter()))

    def wait_one(self) -> tuple[list[str], int, str, str]:
        """Block until one running command ends; return it with its exit code and output."""
        while True:
            for i, (c, p, t) in enumerate(self.running):
                if p.poll() is not None:
                    out, err = p.communicate()
                    del self.running[i]
                    print(f"  ({time.perf_counter() - t:.0f} s) {' '.join(c[-12:])}", flush=True)
                    self._start()
                    return c, p.returncode, out, err
            time.sleep(1.0)

    def wait_all(self, check: bool = True) -> None:
        while self.running or self.queue:
            c, rc, out, err = self.wait_one()
            if check and rc != 0:
                sys.stderr.write(out[-4000:] + err[-4000:])
                raise SystemExit(f"command failed ({rc}): {' '.join(c)}")


def summary(args: argparse.Namespace, name: str) -> dict[str, Any]:
    out = Path(args.out) / name
    s = json.loads((out / "summary.json").read_text())
    s["run"] = name
    s["dir"] = str(out)
    with (out / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    s["expected_depths"] = [float(last[k]) for k in sorted(last) if k.startswith("depth_stage")]
    s["param_free_share_unguarded"] = float(last["param_free_share_unguarded"])
    s["val_acc_by_epoch"] = [float(r["val_acc"]) for r in rows]
    s["derived_ms_by_epoch"] = [float(r["derived_ms"]) for r in rows]
    s["latency_weight_by_epoch"] = [float(r["latency_weight"]) for r in rows]
    arch = json.loads((out / "architecture.json").read_text())
    s["depths"] = [st["depth"] for st in arch["stages"]]
    return s


def fastest_architecture(predictor: str, space: str, out: Path, seed: int) -> Path:
    """Write the fastest architecture the predictor finds in the space (as `reachable_range`:
    block coordinate descent from one start per depth plus 2 random ones) to `out`."""
    import random

    from hwnas.search.discrete import _Blocks, _coordinate_descent
    from hwnas.search.latency import LatencyTerm
    from hwnas.space import NUM_STAGES, get_space, sample_architecture
    from predictor import load_predictor

    sp = get_space(space)
    term = LatencyTerm(load_predictor(predictor), sp)
    blocks = _Blocks(sp)
    rng = random.Random(f"hwnas-reachable:{seed}")
    starts = []
    for d_i in range(len(sp.depth_choices)):
        st = blocks.from_arch(sample_architecture(sp, rng))
        st.depth = [d_i] * NUM_STAGES
        starts.append(st)
    starts += [blocks.from_arch(sample_architecture(sp, rng)) for _ in range(2)]
    best = min(
        (_coordinate_descent(term, blocks, st.copy(), +1.0, 10) for st in starts),
        key=lambda r: r[1],
    )
    arch = blocks.to_arch(best[0], sp)
    out.mkdir(parents=True, exist_ok=True)
    (out / "architecture.json").write_text(arch.to_json() + "\n")
    (out / "summary.json").write_text(
        json.dumps({"predicted_latency_ms": term.derived_ms(arch), "architecture_hash": arch.hash})
    )
    return out


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
        "--parallel", action="store_true", help="run searches at the same time (see --jobs)"
    )
    ap.add_argument(
        "--jobs", type=int, default=2, help="with --parallel: at most this many searches at once"
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure the predictor's fastest architecture in the space (the budget floor)",
    )
    ap.add_argument("search_args", nargs="*", help="more `hwnas search` options (after --)")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)

    from predictor import load_predictor

    baseline = load_predictor(args.predictor).header.get("reference_baseline_ms")

    weights = [float(w) for w in args.weights.split(",")]
    names = [f"weight-{w:g}" for w in weights]
    jobs = max(1, args.jobs) if args.parallel else 1
    pool = Pool(jobs)
    cmds = {
        n: search_cmd(args, n, ["--latency-weight", str(w)])
        for n, w in zip(names, weights, strict=True)
    }
    for n in names:
        if cmds[n] is not None:
            pool.submit(cmds[n])  # type: ignore[arg-type]
    refused = None
    budget_name: str | None = None
    budget = 0.0

    def budget_job(frac: float) -> None:
        """Queue the budget search at `frac` x the weight-0 prediction (once weight 0 is done)."""
        nonlocal budget, budget_name
        w0 = summary(args, names[0])
        budget = round(frac * float(w0["predicted_latency_ms"]), 4)
        budget_name = f"budget-{budget:g}"
        cmd = search_cmd(args, budget_name, ["--latency-budget", f"{budget:g}"])
        if cmd is not None:
            pool.submit(cmd)

    if cmds[names[0]] is None:
        budget_job(args.budget_frac)
    while pool.running or pool.queue:
        c, rc, out, err = pool.wait_one()
        if (
            refused is None
            and rc == 2
            and "out of reach" in err
            and budget_name
            and budget_name in " ".join(c)
        ):
            refused = {"budget_ms": budget, "message": err.strip()}
            print("  refused before training:", err.strip(), flush=True)
            budget_job(args.fallback_frac)
            continue
        if rc != 0:
            sys.stderr.write(out[-4000:] + err[-4000:])
            raise SystemExit(f"command failed ({rc}): {' '.join(c)}")
        if budget_name is None and str(Path(args.out) / names[0]) in c:
            budget_job(args.budget_frac)
    assert budget_name is not None
    runs = [summary(args, n) for n in names] + [summary(args, budget_name)]

    archs = [str(Path(r["dir"]) / "architecture.json") for r in runs]
    if args.floor:
        floor = fastest_architecture(
            args.predictor, args.space, Path(args.out) / "floor", args.seed
        )
        archs.append(str(floor / "architecture.json"))
    raw: list[list[float]] = [[] for _ in archs]
    corrected: list[list[float]] = [[] for _ in archs]
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
            "param_free_share": r.get("param_free_share"),
            "param_free_share_unguarded": r.get("param_free_share_unguarded"),
            "expected_depths": r.get("expected_depths"),
            "depths": r.get("depths"),
            "final_latency_weight": r.get("final_latency_weight"),
            "repair": r.get("repair"),
            "val_acc_by_epoch": r.get("val_acc_by_epoch"),
            "derived_ms_by_epoch": r.get("derived_ms_by_epoch"),
            "seconds": r.get("seconds_total"),
        }
        table.append(rec)
    b = table[-1]
    floor_rec = None
    if args.floor:
        i = len(runs)
        fs = json.loads((Path(args.out) / "floor" / "summary.json").read_text())
        floor_rec = {
            "predicted_ms": fs["predicted_latency_ms"],
            "measured_raw_ms": statistics.median(raw[i]),
            "measured_raw_all": raw[i],
            "measured_corrected_ms": statistics.median(corrected[i]) if corrected[i] else None,
            "measured_corrected_all": corrected[i],
        }
        print(f"floor (fastest architecture the predictor finds): {floor_rec}")
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "predictor_reference_baseline_ms": baseline,
        "budget_ms": budget,
        "refused_budget": refused,
        "floor": floor_rec,
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

    print(
        "\n| run | predicted ms | measured raw ms (median, range) | corrected ms | supernet val acc "
        "| param-free guarded / unguarded | expected depths | depths |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for rec in table:
        corr = rec["measured_corrected_ms"]
        acc = rec["val_accuracy"]
        eds = ", ".join(f"{d:.2f}" for d in rec["expected_depths"] or [])
        print(
            f"| {rec['run']} | {rec['predicted_ms']:.3f} | "
            f"{rec['measured_raw_ms']:.3f} ({min(rec['measured_raw_all']):.3f}-{max(rec['measured_raw_all']):.3f}) | "
            f"{'-' if corr is None else f'{corr:.3f}'} | {'-' if acc is None else f'{acc:.3f}'} | "
            f"{rec['param_free_share']:.1%} / {rec['param_free_share_unguarded']:.1%} | {eds} | "
            f"{rec['depths']} |"
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
