"""Accuracy metrics for latency predictions, and the table that shows them side by side.

Every figure is on held-out architectures; the re-measurement row applies the very same
metrics to a second measurement of the same architectures, which is the floor no
predictor can beat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

# Below this many architectures an accuracy figure prints its n but no rank correlation
# and no ratio between two errors: at n=3 Spearman is +-1 or +-0.5 by chance alone. One
# rule for fit, eval, run and measure (see `enough`).
MIN_FOR_STATISTICS = 10

METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # key, header, format
    ("n", "n", "{:d}"),
    ("mape", "MAPE %", "{:.2f}"),
    ("rmse_ms", "RMSE ms", "{:.4f}"),
    ("within_5", "<=5 %", "{:.1f}"),
    ("within_10", "<=10 %", "{:.1f}"),
    ("p95_ape", "p95 err %", "{:.2f}"),
    ("spearman", "Spearman", "{:.4f}"),
    ("kendall", "Kendall", "{:.4f}"),
)


def enough(n: int | None) -> bool:
    """Whether `n` architectures are enough for a rank statistic or an error ratio."""
    return n is not None and int(n) >= MIN_FOR_STATISTICS


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """MAPE, RMSE, share within +-5 % / +-10 % (in %), p95 error, Spearman and Kendall.

    Spearman and Kendall stay NaN below MIN_FOR_STATISTICS architectures.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: {t.shape} vs {p.shape}")
    n = int(t.size)
    if n == 0:
        return {"n": 0}
    ape = np.abs(p / t - 1.0)
    out: dict[str, Any] = {
        "n": n,
        "mape": float(100 * ape.mean()),
        "rmse_ms": float(np.sqrt(np.mean((p - t) ** 2))),
        "within_5": float(100 * np.mean(ape <= 0.05 + 1e-12)),
        "within_10": float(100 * np.mean(ape <= 0.10 + 1e-12)),
        "p95_ape": float(100 * np.quantile(ape, 0.95)),
        "spearman": float("nan"),
        "kendall": float("nan"),
    }
    if enough(n) and np.ptp(t) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(stats.spearmanr(t, p).statistic)
        out["kendall"] = float(stats.kendalltau(t, p).statistic)
    return out


def error_ratio(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """MAPE of `a` over MAPE of `b`, or None when either has too few architectures."""
    if not (enough(a.get("n")) and enough(b.get("n"))):
        return None
    if not b.get("mape"):
        return None
    return float(a["mape"]) / float(b["mape"])


def summary_line(m: Mapping[str, Any]) -> str:
    """One line: n, MAPE, shares within +-5/10 %, and Spearman only when n is large enough."""
    n = int(m.get("n") or 0)
    if n == 0:
        return "n=0"
    text = (
        f"n={n}, MAPE {m['mape']:.2f}%, within ±5% {m['within_5']:.0f}%, "
        f"within ±10% {m['within_10']:.0f}%"
    )
    rho = m.get("spearman")
    if enough(n) and rho is not None and not (isinstance(rho, float) and math.isnan(rho)):
        text += f", Spearman {rho:.3f}"
    elif not enough(n):
        text += f" (n < {MIN_FOR_STATISTICS}: no rank statistic)"
    return text


def format_table(rows: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """A fixed-width text table, one row per model (and the re-measurement floor)."""
    name_w = max([len("model")] + [len(k) for k in rows])
    headers = [h for _, h, _ in METRIC_COLUMNS]
    cells: list[list[str]] = []
    for name, m in rows.items():
        line = [name]
        for key, _, fmt in METRIC_COLUMNS:
            v = m.get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                line.append("-")
            else:
                line.append(fmt.format(int(v) if key == "n" else v))
        cells.append(line)
    widths = [name_w] + [
        max(len(h), *(len(c[i + 1]) for c in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]
    out = []
    if title:
        out.append(title)
    out.append(
        "  ".join(
            ["model".ljust(widths[0])]
            + [h.rjust(w) for h, w in zip(headers, widths[1:], strict=True)]
        )
    )
    out.append("  ".join("-" * w for w in widths))
    for c in cells:
        out.append(
            "  ".join(
                [c[0].ljust(widths[0])]
                + [v.rjust(w) for v, w in zip(c[1:], widths[1:], strict=True)]
            )
        )
    return "\n".join(out)


def markdown_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The same table in Markdown, for reports."""
    headers = ["model"] + [h for _, h, _ in METRIC_COLUMNS]
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, m in rows.items():
        vals = []
        for key, _, fmt in METRIC_COLUMNS:
            v = m.get(key)
            vals.append(
                "-"
                if v is None or (isinstance(v, float) and math.isnan(v))
                else fmt.format(int(v) if key == "n" else v)
            )
        out.append("| " + " | ".join([name] + vals) + " |")
    return "\n".join(out)
