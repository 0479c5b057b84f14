"""The predictor against a later `hwnas measure` in another process, raw and drift-corrected,
on held-out architectures of two seeds the profile never used; and the floor: two
`hwnas measure` runs of the same models in two processes against each other.

    hwnas profile --space tiny --target ort-cpu --samples 700 --db runs/bench/tiny.db --seed 0
    python bench/honest_numbers.py --db runs/bench/tiny.db --out runs/bench/honest

Every step is a separate `hwnas` process, as a user would run them: `predictor fit` (seed 0,
on train + val = 95 % of the store, unless --predictor names a file), `arch sample` for each held-out seed, then for each seed
and each group of --group architectures, `measure --json --predictor` twice (pass A, then
pass B, each a new process). The predictor is scored against pass A and pass B; pass B
against pass A is the floor (what a second measurement of the same models agrees to).
"Drift-corrected" puts each measurement on the predictor's reference baseline
(latency x baseline / the reference figure timed in the same rounds, predictor/drift.py).
Results go to OUT/results.json and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from predictor.drift import CORRECTED, RAW, compare, corrected_ms
from predictor.metrics import regression_metrics

HELD_OUT_SEEDS = (424242, 8675309)  # never used by the profile (--seed 0) nor by `hwnas run`
FIT_SEED = 0
GOAL_WITHIN_10 = 95.0
GOAL_MAPE = 4.0


def hwnas(*args: str) -> str:
    """Run `hwnas ARGS` in a new process; its stdout (stderr passed through)."""
    cmd = [sys.executable, "-m", "hwnas.cli", *map(str, args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout


def measure(files: list[Path], predictor: Path, target: str, group: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), group):
        chunk = files[start : start + group]
        rows += json.loads(
            hwnas("measure", *chunk, "--target", target, "--json", "--predictor", predictor)
        )
        print(f"  measured {len(rows)}/{len(files)}", file=sys.stderr, flush=True)
    return rows


def scores(pred: np.ndarray, rows: list[dict[str, Any]], baseline: float | None) -> dict[str, Any]:
    return compare(
        pred, [r["latency_ms"] for r in rows], [r["reference_ms"] for r in rows], baseline
    )


def floor(a: list[dict[str, Any]], b: list[dict[str, Any]], baseline: float | None) -> dict[str, Any]:
    """Pass B against pass A (A as the truth), raw and each corrected by its own reference."""
    ta = np.array([r["latency_ms"] for r in a])
    tb = np.array([r["latency_ms"] for r in b])
    out: dict[str, Any] = {RAW: regression_metrics(ta, tb), CORRECTED: None}
    ca = [corrected_ms(r["latency_ms"], r["reference_ms"], baseline or 1.0) for r in a]
    cb = [corrected_ms(r["latency_ms"], r["reference_ms"], baseline or 1.0) for r in b]
    if all(c is not None for c in ca + cb):
        out[CORRECTED] = regression_metrics(np.array(ca), np.array(cb))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("runs/bench/tiny.db"))
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--predictor", type=Path, help="predictor file (default: fit OUT/predictor.pt)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/honest"))
    ap.add_argument("-n", type=int, default=44, help="held-out architectures per seed")
    ap.add_argument("--group", type=int, default=8, help="architectures per `hwnas measure` call")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    predictor = args.predictor or args.out / "predictor.pt"
    if not predictor.is_file():
        print(f"fitting {predictor} on {args.db} (seed {FIT_SEED})", file=sys.stderr)
        hwnas("predictor", "fit", "--db", args.db, "--target", args.target, "--out", predictor,
              "--seed", FIT_SEED, "--no-baselines", "--val-frac", "0.1", "--test-frac", "0.05")  # fmt: skip
    from predictor import load_predictor
    from predictor.drift import predictor_baseline

    header = load_predictor(predictor).header
    baseline = predictor_baseline(header)
    import sqlite3

    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    profiled = {h for (h,) in con.execute("SELECT DISTINCT arch_hash FROM measurements")}
    con.close()

    results: dict[str, Any] = {
        "db": str(args.db),
        "predictor": str(predictor),
        "predictor_rows": {k: header.get(k) for k in ("n_train", "n_val", "n_test")},
        "baseline_ms": baseline,
        "seeds": {},
    }
    pooled: dict[str, list[Any]] = {"pred": [], "a": [], "b": []}
    for seed in HELD_OUT_SEEDS:
        folder = args.out / f"seed{seed}"
        hwnas("arch", "sample", "--space", args.space, "--seed", seed, "-n", args.n, "--out", folder)
        files = sorted(folder.glob("*.json"))[: args.n]
        print(f"seed {seed}: pass A", file=sys.stderr)
        a = measure(files, predictor, args.target, args.group)
        print(f"seed {seed}: pass B", file=sys.stderr)
        b = measure(files, predictor, args.target, args.group)
        seen = sum(1 for r in a if r["arch_hash"] in profiled)
        keep = [i for i, r in enumerate(a) if r["arch_hash"] not in profiled]
        a, b = [a[i] for i in keep], [b[i] for i in keep]
        pred = np.array([r["predicted_ms"] for r in a])
        results["seeds"][str(seed)] = {
            "n": len(a),
            "dropped_in_profile": seen,
            "predictor_vs_A": scores(pred, a, baseline),
            "predictor_vs_B": scores(pred, b, baseline),
            "B_vs_A": floor(a, b, baseline),
            "unstable": {"A": sum(not r["stable"] for r in a), "B": sum(not r["stable"] for r in b)},
            "rows": {"A": a, "B": b},
        }
        pooled["pred"] += list(pred)
        pooled["a"] += a
        pooled["b"] += b
    pred = np.array(pooled["pred"])
    results["pooled"] = {
        "n": len(pred),
        "predictor_vs_A": scores(pred, pooled["a"], baseline),
        "predictor_vs_B": scores(pred, pooled["b"], baseline),
        "B_vs_A": floor(pooled["a"], pooled["b"], baseline),
    }
    results["minutes"] = round((time.time() - t0) / 60, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| held-out set | comparison | n | MAPE % raw | MAPE % drift-corr. | ±10 % raw | ±10 % drift-corr. | ±5 % raw | ±5 % drift-corr. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    blocks = [(f"seed {s}", v) for s, v in results["seeds"].items()] + [("both seeds", results["pooled"])]
    for name, block in blocks:
        for key, label in (
            ("predictor_vs_A", "predictor vs measure pass A"),
            ("predictor_vs_B", "predictor vs measure pass B"),
            ("B_vs_A", "floor: pass B vs pass A"),
        ):
            r, c = block[key][RAW], block[key][CORRECTED] or {}
            lines.append(
                f"| {name} | {label} | {r['n']} | {r['mape']:.2f} | {c.get('mape', float('nan')):.2f} | "
                f"{r['within_10']:.0f} | {c.get('within_10', float('nan')):.0f} | "
                f"{r['within_5']:.0f} | {c.get('within_5', float('nan')):.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
