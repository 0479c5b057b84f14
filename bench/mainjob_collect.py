"""Collect the figures of several `hwnas run` directories (issue 18, session 4): per run the
depth per stage of both found networks, trained test accuracy, measured latency (raw and
drift-corrected), search wall time; then per group (e.g. schedule) the median and min-max.

    python bench/mainjob_collect.py /tmp/m18/joint-s0 /tmp/m18/joint-s1 ... [--json OUT]

A run's group is its directory name up to the last '-' (joint-s0 -> joint).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

KEYS = ("plain", "latency")


def depths(arch: Path) -> str:
    a = json.loads(arch.read_text())
    return "-".join(str(s["depth"]) for s in a["stages"])


def one(run: Path) -> dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    rec: dict[str, Any] = {
        "run": run.name,
        "group": run.name.rsplit("-", 1)[0],
        "seed": s.get("seed"),
        "profile_written": (s.get("profile") or {}).get("written"),
        "search_both_s": s["steps"].get("search (both)"),
        "total_s": s["steps"].get("total"),
        "comparison": s.get("comparison"),
    }
    for k in KEYS:
        n = s["networks"][k]
        ss = json.loads((run / f"search-{k}" / "summary.json").read_text())
        rec[k] = {
            "depths": depths(run / f"search-{k}" / "architecture.json"),
            "arch_hash": n["arch_hash"][:12],
            "search_val_accuracy": n.get("search_val_accuracy"),
            "search_s": ss.get("seconds_total"),
            "test_accuracy": n["test_accuracy"],
            "predicted_ms": n["predicted_ms"],
            "measured_ms": n["measured_ms"],
            "corrected_ms": n.get("corrected_ms"),
        }
    return rec


def spread(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json")
    args = ap.parse_args()
    recs = [one(Path(r)) for r in args.runs if (Path(r) / "summary.json").is_file()]

    print("| run | net | depths | test acc | predicted ms | measured raw ms | corrected ms | search s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in recs:
        for k in KEYS:
            n = r[k]
            corr = "-" if n["corrected_ms"] is None else f"{n['corrected_ms']:.3f}"
            print(
                f"| {r['run']} | {k} | {n['depths']} | {n['test_accuracy']:.4f} | {n['predicted_ms']:.3f} | "
                f"{n['measured_ms']:.3f} | {corr} | {n['search_s']:.0f} |"
            )
    print()
    print("| run | speed-up raw % | corrected % | accuracy cost (points) | floor % | search (both) s | total s | profiled now |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in recs:
        c = r["comparison"] or {}
        print(
            f"| {r['run']} | {c.get('speedup_pct', float('nan')):+.1f} | {c.get('speedup_pct_corrected', float('nan')):+.1f} | "
            f"{c.get('accuracy_cost_points', float('nan')):+.1f} | {c.get('floor_pct', float('nan')):.1f} | "
            f"{r['search_both_s']:.0f} | {r['total_s']:.0f} | {r['profile_written']} |"
        )
    print()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault(r["group"], []).append(r)
    print("| schedule | net | runs | deeper than 1 | test acc median (min-max) | measured raw ms | corrected ms | search s (each) |")
    print("|---|---|---:|---:|---|---|---|---|")
    for g, rs in groups.items():
        for k in KEYS:
            deeper = sum(any(int(d) > 1 for d in r[k]["depths"].split("-")) for r in rs)
            print(
                f"| {g} | {k} | {len(rs)} | {deeper}/{len(rs)} | {spread([r[k]['test_accuracy'] for r in rs])} | "
                f"{spread([r[k]['measured_ms'] for r in rs])} | {spread([r[k]['corrected_ms'] for r in rs])} | "
                f"{spread([r[k]['search_s'] for r in rs])} |"
            )
        any_deeper = sum(
            any(int(d) > 1 for k in KEYS for d in r[k]["depths"].split("-")) for r in rs
        )
        print(f"| {g} | either | {len(rs)} | {any_deeper}/{len(rs)} runs | | | | search (both) {spread([r['search_both_s'] for r in rs])} |")
    if args.json:
        Path(args.json).write_text(json.dumps(recs, indent=2) + "\n")


if __name__ == "__main__":
    main()
