"""The main job's summary: what its steps found, as lines to print and JSON to keep."""

from __future__ import annotations

from typing import Any

import numpy as np

from predictor.drift import corrected_ms, describe


def finite(obj: Any) -> Any:
    """JSON without NaN: an undefined statistic (e.g. Spearman on n < 10) becomes null."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


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


def fresh_table_lines(
    archs: list[Any], predicted: Any, measured: Any, refs: list[Any], baseline: Any, fresh: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Step 4's table (predicted, measured, raw and corrected error per architecture) and
    its rows for summary.json."""
    lines = [
        f"{'arch':12s} {'predicted ms':>12s} {'measured ms':>12s} {'raw error':>9s} "
        f"{'corrected ms':>12s} {'corr. error':>11s}"
    ]
    items = []
    for arch, p, m, r in zip(archs, predicted, measured, refs, strict=True):
        c = corrected_ms(float(m), r, baseline) if fresh["note"] is None else None
        corr_text = "-".rjust(12) + " " + "-".rjust(11)
        if c is not None:
            corr_text = f"{c:12.3f} {100 * (p / c - 1):+10.1f}%"
        lines.append(f"{arch.hash[:12]} {p:12.3f} {m:12.3f} {100 * (p / m - 1):+8.1f}% {corr_text}")
        items.append(
            {"hash": arch.hash, "predicted_ms": float(p), "measured_ms": float(m), "reference_ms": r, "corrected_ms": c}
        )
    lines += describe(fresh)
    return lines, items


def compare_networks(networks: dict[str, Any], repeat: dict[str, Any]) -> dict[str, Any]:
    """The measured difference between the two networks against the re-measurement floor
    (the 90th percentile of |old - new| / old over the re-measured architectures)."""
    p, lat = networks.get("plain") or {}, networks.get("latency") or {}
    out: dict[str, Any] = {}
    if p.get("measured_ms") and lat.get("measured_ms"):
        out["speedup_pct"] = 100.0 * (1.0 - lat["measured_ms"] / p["measured_ms"])
        if p.get("corrected_ms") and lat.get("corrected_ms"):
            out["speedup_pct_corrected"] = 100.0 * (1.0 - lat["corrected_ms"] / p["corrected_ms"])
        if p.get("test_accuracy") is not None and lat.get("test_accuracy") is not None:
            out["accuracy_cost_points"] = 100.0 * (p["test_accuracy"] - lat["test_accuracy"])
    diffs = [
        abs(i["new_ms"] / i["old_ms"] - 1.0) * 100.0
        for i in repeat.get("items") or []
        if i.get("new_ms") and i.get("old_ms")
    ]
    if diffs:
        out["floor_pct"] = float(np.percentile(diffs, 90))
        out["floor_definition"] = "90th percentile of |re-measured / first - 1| over the re-measured architectures"
    elif repeat.get("median_abs_pct") is not None:
        out["floor_pct"] = float(repeat["median_abs_pct"])
        out["floor_definition"] = "median |re-measured / first - 1|"
    if "speedup_pct" in out and "floor_pct" in out:
        out["above_floor"] = abs(out["speedup_pct"]) > out["floor_pct"]
    return out


def describe_comparison(c: dict[str, Any]) -> str:
    if "speedup_pct" not in c:
        return "the two networks were not both measured"
    text = f"latency-aware vs plain: {c['speedup_pct']:+.1f}% faster measured (raw)"
    if "speedup_pct_corrected" in c:
        text += f", {c['speedup_pct_corrected']:+.1f}% drift-corrected"
    if "accuracy_cost_points" in c:
        text += f"; accuracy cost {c['accuracy_cost_points']:+.2f} points"
    if "floor_pct" in c:
        text += f"; re-measurement floor {c['floor_pct']:.1f}% ({'above' if c.get('above_floor') else 'NOT above'} it)"
    return text
