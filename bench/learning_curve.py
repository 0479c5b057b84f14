"""Learning curve: held-out accuracy of the MLP and the baselines vs training samples.

    python bench/learning_curve.py --db profiles.db --target ort-cpu --out bench/results/lc

One fixed test split (by architecture hash) for every size; a size of N means N measured
architectures consumed by the fit (training plus validation for early stopping), taken
as nested subsets. Writes `learning_curve.md` (table), `learning_curve.json` and
`learning_curve.png`, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from predictor import MLPConfig, ProfileQuery, fit_predictor, load_profiles
from predictor.baselines import BASELINES
from predictor.evaluate import MLP_NAME, REMEASURE, REMEASURE_ALL
from targets.basics import UserError

DEFAULT_SIZES = (100, 250, 500, 1000, 2000)
COLUMNS = (
    ("mape", "MAPE %", "{:.2f}"),
    ("within_10", "<=10 %", "{:.1f}"),
    ("within_5", "<=5 %", "{:.1f}"),
    ("spearman", "Spearman", "{:.4f}"),
    ("kendall", "Kendall", "{:.4f}"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--target", required=True)
    p.add_argument("--space")
    p.add_argument("--fingerprint")
    p.add_argument("--allow-mixed", action="store_true")
    p.add_argument(
        "--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="comma-separated budgets"
    )
    p.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated, or 'none'")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    return p.parse_args(argv)


def _fmt(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def markdown(results: list[dict[str, Any]], models: list[str], floor: dict[str, Any] | None) -> str:
    lines = []
    for key, label, fmt in COLUMNS:
        lines.append(f"### {label} on the held-out test split")
        lines.append("")
        lines.append("| samples | " + " | ".join(models) + " |")
        lines.append("|---:|" + "---:|" * len(models))
        for r in results:
            cells = [_fmt(r["test"].get(m, {}).get(key), fmt) for m in models]
            lines.append(f"| {r['size']} | " + " | ".join(cells) + " |")
        if floor is not None:
            lines.append(
                f"| re-measure (n={floor['n']}) | "
                + " | ".join([_fmt(floor.get(key), fmt)] + [""] * (len(models) - 1))
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(
    results: list[dict[str, Any]],
    models: list[str],
    floor: dict[str, Any] | None,
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sizes = [r["size"] for r in results]
    for ax, (key, label) in zip(
        axes,
        (
            ("mape", "MAPE % (lower is better)"),
            ("within_10", "% within ±10 %"),
            ("spearman", "Spearman"),
        ),
        strict=True,
    ):
        for m in models:
            ys = [r["test"].get(m, {}).get(key, float("nan")) for r in results]
            ax.plot(sizes, ys, marker="o", lw=2.5 if m == MLP_NAME else 1.2, label=m)
        if floor is not None and key in floor:
            ax.axhline(floor[key], color="k", ls="--", lw=1, label=f"re-measure (n={floor['n']})")
        ax.set_xscale("log")
        ax.set_xlabel("training samples (train + validation)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        print("learning_curve: --sizes must be comma-separated integers", file=sys.stderr)
        return 2
    baselines = (
        []
        if args.baselines.strip() in ("", "none")
        else [b.strip() for b in args.baselines.split(",")]
    )
    try:
        query = ProfileQuery(
            space=args.space,
            fingerprint=args.fingerprint,
            allow_mixed=args.allow_mixed,
            seed=args.seed,
        )
        ds = load_profiles(args.db, args.target, query)
    except UserError as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    counts = ds.counts()
    available = counts["train"] + counts["val"]
    cfg = MLPConfig(members=args.members, max_epochs=args.max_epochs)
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    floor = None
    for size in sizes:
        t0 = time.perf_counter()
        try:
            res = fit_predictor(ds, cfg=cfg, baselines=baselines, seed=args.seed, max_train=size)
        except UserError as exc:
            skipped.append(size)
            print(f"size {size}: skipped ({exc})", file=sys.stderr)
            continue
        rep = res.report.get("repeatability") or {}
        floor = rep.get(REMEASURE_ALL, rep.get(REMEASURE, floor))
        results.append(
            {
                "size": size,
                "test": res.report["test"],
                "seconds": round(time.perf_counter() - t0, 1),
                "mlp_training": res.report["mlp"]["training"],
            }
        )
        m = res.report["test"][MLP_NAME]
        print(
            f"size {size}: MLP MAPE {m['mape']:.2f} %, within ±10 % {m['within_10']:.1f} %, "
            f"Spearman {m['spearman']:.4f} ({results[-1]['seconds']} s)",
            flush=True,
        )
    if not results:
        print(
            f"learning_curve: error: no size fits in the store ({available} train+val architectures)",
            file=sys.stderr,
        )
        return 2
    models = [MLP_NAME, *baselines]
    args.out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{ds.target_name} / {ds.space_name}: {counts['test']} held-out test architectures "
        f"(fingerprint {ds.fingerprint_key[:12]})"
    )
    md = [
        f"# Learning curve: {title}",
        "",
        f"Store `{ds.db}`, {len(ds)} architectures; seed {args.seed}. A size counts training plus "
        "validation architectures; the test split is the same for every size.",
        "",
    ]
    if skipped:
        md += [
            f"Skipped sizes (store too small: {available} train+val architectures): {skipped}",
            "",
        ]
    md.append(markdown(results, models, floor))
    (args.out / "learning_curve.md").write_text("\n".join(md))
    (args.out / "learning_curve.json").write_text(
        json.dumps(
            {
                "target": ds.target_name,
                "space": ds.space_name,
                "fingerprint_key": ds.fingerprint_key,
                "db": ds.db,
                "seed": args.seed,
                "test_architectures": counts["test"],
                "remeasure": floor,
                "skipped": skipped,
                "results": results,
            },
            indent=2,
            default=lambda o: None,
        )
    )
    plot(results, models, floor, args.out / "learning_curve.png", title)
    print("\n".join(md))
    print(f"wrote {args.out}/learning_curve.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
