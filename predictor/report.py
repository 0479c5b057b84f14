"""The fit report as text: the metrics table and the lines that say what it was computed on."""

from __future__ import annotations

import math
from typing import Any

from predictor.dataset import MIN_SAMPLES, describe_unstable
from predictor.evaluate import MLP_NAME, MLP_ON_REPEATS, REMEASURE, REMEASURE_ALL, table_rows
from predictor.metrics import MIN_FOR_STATISTICS, enough, error_ratio, format_table, summary_line


def render_report(report: dict[str, Any]) -> str:
    """The metrics table with a few lines saying what it was computed on."""
    d = report.get("dataset", {})
    split = report.get("split", "test")
    lines = [
        f"target {d.get('target_name')} (fingerprint {str(d.get('fingerprint_key', ''))[:12]}), "
        f"space {d.get('space_name')} ({str(d.get('space_key', ''))[:12]}), store {d.get('db')}",
    ]
    if "n_train" in d:
        lines.append(
            f"{d.get('architectures')} architectures: fitted on {d['n_train']} train + {d['n_val']} validation, "
            f"scored on {d.get('n_test')} held-out {split} architectures"
        )
    else:
        lines.append(f"scored on {d.get('n_test')} architectures of the {split} split")
    if d.get("label") == "reference":
        where = (
            "the predictor's baseline"
            if report.get("comparison")
            else "the median reference figure"
        )
        lines.append(
            f"label: latency corrected by the reference network of the same rounds "
            f"(x {d.get('reference_baseline_ms'):.4f} ms, {where})"
        )
    unstable = describe_unstable(d)
    if unstable:
        lines.append(unstable)
    tr = report.get("training_rows") or {}
    if tr.get("known") is False:
        lines.append(
            "the predictor file does not list its training architectures (older file): "
            "cannot tell which of these it was fitted on"
        )
    elif tr.get("all"):
        lines.append(
            f"all {tr['n']} scored architectures are in the predictor's training data "
            "(train/val splits): this is training accuracy, not a test"
        )
    elif tr.get("n"):
        lines.append(
            f"{tr['n']} of the {tr['of']} scored architectures are in the predictor's training data "
            "(train/val splits): reported apart below, not in the table"
        )
    lines.append("")
    if report.get("comparison") == "drift-corrected":
        lines.append("drift-corrected (measured latency x predictor baseline / its own reference):")
    lines.append(format_table(table_rows(report)))
    raw = (report.get("raw") or {}).get(MLP_NAME)
    if raw is not None and report.get("comparison") == "drift-corrected":
        lines.append(f"raw (stored latency, no correction): mlp {summary_line(raw)}")
    if tr.get("metrics"):
        lines.append(
            f"training-set architectures (apart): drift-corrected {summary_line(tr['metrics'])}; "
            f"raw {summary_line(tr['raw'])}"
        )
    rep = report.get("repeatability") or {}
    lines.append("")
    if REMEASURE in rep:
        r, m = rep[REMEASURE], rep[MLP_ON_REPEATS]
        lines.append(
            f"repeatability: {rep['n']} of these architectures measured again in another process: "
            f"re-measurement {summary_line(r)}; the MLP on the same architectures: {summary_line(m)}"
        )
        ratio = error_ratio(m, r)
        if ratio is not None:
            lines.append(f"the MLP's error is {ratio:.2f}x the measurement's own")
        elif not enough(rep["n"]):
            lines.append(
                f"(n={rep['n']} < {MIN_FOR_STATISTICS}: no ratio to the measurement's own error; "
                f"re-measure more with `hwnas db repeat --db {d.get('db')} -n 200`)"
            )
    elif "note" in rep:
        lines.append("repeatability: " + rep["note"])
    if REMEASURE_ALL in rep:
        r = rep[REMEASURE_ALL]
        lines.append(
            f"all {r['n']} re-measured architectures of the store (any split): re-measurement MAPE "
            f"{r['mape']:.2f} %, {r['within_10']:.1f} % within ±10 %, {r['within_5']:.1f} % within ±5 %"
        )
    spread = rep.get("median_within_run_spread")
    if spread is not None and not (isinstance(spread, float) and math.isnan(spread)):
        lines.append(
            f"median within-run spread (p90-p10)/median of the timed runs: {100 * spread:.1f} %"
        )
    if "mlp" in report:
        t = report["mlp"]["training"]
        total = (
            f"; with the baselines {report.get('seconds', 0):.1f} s"
            if report.get("baselines")
            else " (no baselines fitted)"
        )
        lines.append(
            f"MLP: {report['mlp']['n_features']} {report['mlp']['features']} features, "
            f"{report['mlp']['config']['members']} members, best epochs {t['best_epochs']}, {t['seconds']:.1f} s"
            + total
        )
    if "transfer" in report:
        tr = report["transfer"]
        how = _describe_transfer(tr)
        lines.append(
            f"adapted from {tr.get('from') or 'a known predictor'} (target {tr.get('from_target')}) "
            f"on {tr['n_adapt']} profiles of this target: scale x{tr['scale']:.4f}, {how}; "
            f"{report.get('seconds', 0):.1f} s"
        )
    if "note" in report:
        lines.append(report["note"])
    return "\n".join(lines)


def _describe_transfer(info: dict[str, Any]) -> str:
    """What `predictor fit --init` did, in words (predictor.transfer fills `info`; it imports
    this module, so this one does not import it)."""
    if info["method"] not in ("ridge", "blend"):
        return str(info["method"])
    lam_h, lam_o = info.get("ridge_lambda"), info.get("ridge_lambda_ops")
    if lam_o is None and lam_h is None:
        how = "the known predictor times the scale (cross-validation kept it)"
    else:
        hidden = "kept" if lam_h is None else f"pulled with lambda {lam_h:g}"
        ops = "" if lam_o is None else f", bias and per-op term pulled with lambda {lam_o:g}"
        how = f"output layer refitted towards the scaled known weights (hidden-feature weights {hidden}{ops})"
    weight = info.get("blend_weight")
    if weight == 0.0:
        return "replaced by a predictor fitted from scratch on the same rows (cross-validation)"
    if weight == 1.0:
        how += "; a predictor from scratch got no share in cross-validation"
    elif weight is not None:
        how += (
            f", blended {weight:g} : {1 - weight:g} with one fitted from scratch (cross-validation)"
        )
    elif info["method"] == "blend":
        how += f" (too few rows to blend with a predictor from scratch: it needs {MIN_SAMPLES})"
    return how
