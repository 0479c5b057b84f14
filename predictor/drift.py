"""Where a prediction meets a measurement: the raw and the drift-corrected comparison.

A shared host runs faster or slower from one hour to the next. A predictor fitted with
the "reference" label learned latency relative to the reference network timed in the
same rounds, expressed in the reference figure of its training store (the header's
`reference_baseline_ms`). A later measurement times the reference in its own rounds, so
it can be put on the predictor's footing:

    corrected_ms = latency_ms x baseline_ms / this measurement's reference_ms

Every command that sets a prediction beside a measurement (measure --predictor, predictor
eval, run, the bench scripts) goes through this module, so the correction and the labels
are the same everywhere. Where there is no baseline (a predictor of raw latencies) or the
measurement timed no reference network, the comparison is raw only and says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from predictor.metrics import regression_metrics, summary_line

RAW = "raw"
CORRECTED = "drift-corrected"


def predictor_baseline(header: Mapping[str, Any]) -> float | None:
    """The reference figure (ms) a predictor's outputs are relative to, or None (raw label)."""
    if header.get("label") != "reference":
        return None
    value = header.get("reference_baseline_ms")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    return float(value)


def corrected_ms(
    latency_ms: float, reference_ms: float | None, baseline_ms: float | None
) -> float | None:
    """`latency_ms` put on the predictor's reference baseline; None when it cannot be."""
    if baseline_ms is None or reference_ms is None or not reference_ms > 0:
        return None
    return float(latency_ms) * float(baseline_ms) / float(reference_ms)


def why_raw_only(baseline_ms: float | None, references: Sequence[float | None]) -> str | None:
    """None when every measurement can be drift-corrected, else the reason it cannot."""
    if baseline_ms is None:
        return (
            "the predictor learned raw latency (no reference baseline in its file): "
            "compared raw only"
        )
    missing = sum(1 for r in references if r is None or not r > 0)
    if missing:
        return (
            f"{missing} of {len(references)} measurements timed no reference network "
            "(the target sets reference = false or its reference failed): compared raw only"
        )
    return None


def compare(
    predicted_ms: Sequence[float] | np.ndarray,
    measured_ms: Sequence[float] | np.ndarray,
    reference_ms: Sequence[float | None] | None,
    baseline_ms: float | None,
) -> dict[str, Any]:
    """Metrics of the predictions against the raw and the drift-corrected measurements.

    Returns {"raw": metrics, "drift-corrected": metrics or None, "baseline_ms",
    "corrected_ms": per-item list or None, "note": why only raw, or None}.
    """
    pred = np.asarray(predicted_ms, dtype=np.float64).ravel()
    meas = np.asarray(measured_ms, dtype=np.float64).ravel()
    refs: list[float | None] = (
        list(reference_ms) if reference_ms is not None else [None] * len(meas)
    )
    if len(refs) != len(meas):
        raise ValueError(f"{len(refs)} reference figures for {len(meas)} measurements")
    out: dict[str, Any] = {
        RAW: regression_metrics(meas, pred),
        CORRECTED: None,
        "baseline_ms": baseline_ms,
        "corrected_ms": None,
        "note": why_raw_only(baseline_ms, refs),
    }
    if out["note"] is None:
        corr = [corrected_ms(m, r, baseline_ms) for m, r in zip(meas, refs, strict=True)]
        out["corrected_ms"] = [float(c) for c in corr if c is not None]
        out[CORRECTED] = regression_metrics(np.asarray(out["corrected_ms"]), pred)
    return out


def describe(result: Mapping[str, Any]) -> list[str]:
    """Two labelled lines (raw, drift-corrected) or one raw line and the reason."""
    lines = [f"raw:             {summary_line(result[RAW])}"]
    if result.get(CORRECTED) is not None:
        lines.append(
            f"drift-corrected: {summary_line(result[CORRECTED])} "
            f"(measured x {result['baseline_ms']:.4f} ms predictor baseline / its own reference)"
        )
    elif result.get("note"):
        lines.append(f"no drift correction: {result['note']}")
    return lines
