"""The report of a main-job run directory (`hwnas run`): one HTML page with its figures.

`write_report(run)` reads only what the run directory holds (config.json, summary.json, the
searches' log.csv, the architectures) and writes `report.html` (figures embedded, readable
with no terminal and no network) with the figures also beside it as PNGs (`report-*.png`):

* the predictor's predicted-versus-measured scatter (held-out split, fresh architectures,
  the two found networks; raw and drift-corrected),
* the predictor's accuracy against its baselines and against re-measurement,
* the search curves (accuracy, predicted latency, latency weight per epoch),
* both found architectures drawn (per stage: depth, connections between cells, each cell's
  ops) with matplotlib only,
* one table per network: accuracy, predicted and measured latency, parameters, FLOPs.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas.mainjob.config import rerun_command
from hwnas.mainjob.figures import (
    NETWORK_LABELS,
    plot_architecture,
    plot_scatter,
    plot_search_curves,
    read_log,
)
from hwnas.rundir import describe_kind, run_kind
from hwnas.space import load_architecture
from targets.basics import UserError, atomic_write_bytes

MAIN_KIND = "main"
REPORT = "report.html"


def read_main_run(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, summary) of a main-job run directory; UserError for anything else."""
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory; give the --out of `hwnas run`")
    cfg_path, sum_path = run / "config.json", run / "summary.json"
    try:
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else None
    except (OSError, ValueError):
        raise UserError(f"{cfg_path}: unreadable; the run directory is damaged (run `hwnas run` again)") from None
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind != MAIN_KIND:
        what = describe_kind(None if cfg is None else run_kind(run))
        raise UserError(
            f"{run}: holds {what}, not a main-job run; `hwnas report` reads the --out of `hwnas run`"
        )
    if not sum_path.is_file():
        raise UserError(f"{run}: the main job has not finished (no summary.json); run `{rerun_command(run, cfg)}` again")
    try:
        summary = json.loads(sum_path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{sum_path}: unreadable; run `{rerun_command(run, cfg)}` again") from None
    return cfg, summary


# -- tables ----------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.3f}", none: str = "–") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return fmt.format(v)


def network_rows(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(label, cells) per network for the table: accuracy, latency (predicted, measured raw and
    drift-corrected), params, FLOPs."""
    out = []
    for key in ("plain", "latency"):
        n = (summary.get("networks") or {}).get(key)
        if not n:
            continue
        out.append((
            NETWORK_LABELS[key],
            [
                n.get("search_setting", "–"),
                _f(n.get("test_accuracy"), "{:.2%}"),
                _f(n.get("predicted_ms")),
                _f(n.get("measured_ms")),
                _f(n.get("corrected_ms")),
                _f(n.get("params"), "{:,}"),
                _f(n.get("flops"), "{:,}"),
                (n.get("arch_hash") or "")[:12],
            ],
        ))
    return out


NETWORK_HEADER = ["network", "search", "test accuracy", "predicted ms", "measured ms (raw)",
                  "measured ms (drift-corrected)", "parameters", "FLOPs (multiply-adds, batch 1)", "architecture"]


def predictor_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The predictor against its baselines (held-out split), fresh architectures and
    re-measurement (the floor no predictor can beat)."""
    rows = []
    test = summary.get("predictor_test") or {}
    for name, m in test.items():
        if isinstance(m, dict) and "mape" in m:
            rows.append([f"{name} (held-out profiles)", _f(m.get("mape"), "{:.2f}%"),
                         _f(m.get("within_10"), "{:.0f}%"), _f(m.get("spearman")), _f(m.get("n"), "{:d}")])
    fresh = summary.get("fresh") or {}
    for label, key in (("MLP on fresh architectures, raw", "raw"), ("MLP on fresh architectures, drift-corrected", "drift-corrected")):
        m = fresh.get(key)
        if m:
            rows.append([label, _f(m.get("mape"), "{:.2f}%"), _f(m.get("within_10"), "{:.0f}%"),
                         _f(m.get("spearman")), _f(m.get("n"), "{:d}")])
    rep = summary.get("repeat") or {}
    if rep.get("median_abs_pct") is not None:
        rows.append(["re-measurement (same architectures, new process), raw", _f(rep.get("median_abs_pct"), "{:.2f}% (median abs. difference)"),
                     _f(100 * rep["within_10pct"] if rep.get("within_10pct") is not None else None, "{:.0f}%"), "–",
                     _f(rep.get("measured"), "{:d}")])
        norm = rep.get("normalised") or {}
        if norm.get("median_abs_pct") is not None:
            rows.append(["re-measurement, drift-corrected", _f(norm.get("median_abs_pct"), "{:.2f}% (median abs. difference)"),
                         _f(100 * norm["within_10pct"] if norm.get("within_10pct") is not None else None, "{:.0f}%"),
                         "–", _f(rep.get("measured"), "{:d}")])
    return rows


PREDICTOR_HEADER = ["predictor / check", "MAPE", "within ±10%", "Spearman", "n"]


def headline(summary: dict[str, Any]) -> str:
    """One sentence: how much faster the latency-aware network measured, at what accuracy."""
    nets = summary.get("networks") or {}
    p, lat = nets.get("plain") or {}, nets.get("latency") or {}
    if not (p.get("measured_ms") and lat.get("measured_ms")):
        return "The two networks were not both measured; see the steps below."
    speed = 100.0 * (1.0 - lat["measured_ms"] / p["measured_ms"])
    acc = None
    if p.get("test_accuracy") is not None and lat.get("test_accuracy") is not None:
        acc = 100.0 * (lat["test_accuracy"] - p["test_accuracy"])
    faster = "faster" if speed > 0 else "slower"
    text = (
        f"The latency-aware network measured {lat['measured_ms']:.3f} ms against {p['measured_ms']:.3f} ms "
        f"for the plain one on {summary.get('target', '?')}: {abs(speed):.1f}% {faster}"
    )
    if acc is not None:
        text += (
            f", at {lat['test_accuracy']:.2%} test accuracy against {p['test_accuracy']:.2%} "
            f"({acc:+.1f} points)"
        )
    floor = (summary.get("comparison") or {}).get("floor_pct")
    if floor is not None:
        text += f". Re-measurement floor: {floor:.1f}% (the difference is {abs(speed) / floor:.1f}x it)" if floor > 0 else ""
    return text + "."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return f"<p class='missing'>({html.escape(alt)}: no data in this run)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'><figcaption>{html.escape(alt)} ({path.name})</figcaption></figure>"


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; } th { background: #f2f4f7; }
td:first-child, th:first-child { text-align: left; }
.headline { background: #eef6ee; border-left: 4px solid #2ca02c; padding: 0.7em 1em; font-size: 1.05em; }
figure { margin: 0.8em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #666; } .missing { color: #a00; } code { background: #f5f5f5; padding: 1px 3px; }
.small { font-size: 0.85em; color: #555; }
"""


def write_report(run: str | Path) -> Path:
    """Write run/report.html (and the report-*.png figures beside it); return its path."""
    run = Path(run)
    cfg, summary = read_main_run(run)
    figs: dict[str, Path | None] = {"scatter": plot_scatter(summary, run / "report-scatter.png")}
    nets = summary.get("networks") or {}
    logs = {k: read_log(run / (n.get("search_dir") or f"search-{k}") / "log.csv") for k, n in nets.items()}
    figs["curves"] = plot_search_curves(logs, run / "report-search.png")
    archs: dict[str, Path | None] = {}
    for key, n in nets.items():
        arch_file = run / (n.get("search_dir") or f"search-{key}") / "architecture.json"
        archs[key] = (
            plot_architecture(load_architecture(arch_file), f"{NETWORK_LABELS.get(key, key)} network", run / f"report-arch-{key}.png")
            if arch_file.is_file()
            else None
        )
    steps = summary.get("steps") or {}
    step_rows = [[name, _f(sec, "{:.0f} s")] for name, sec in steps.items()]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>hwnas report: {html.escape(str(run))}</title><style>{CSS}</style></head><body>",
        "<h1>hwnas: a network for your device</h1>",
        f"<p class='small'>space <code>{html.escape(str(summary.get('space')))}</code>, target "
        f"<code>{html.escape(str(summary.get('target')))}</code>, dataset <code>{html.escape(str(summary.get('dataset', '–')))}</code>, "
        f"seed {summary.get('seed')}; run directory <code>{html.escape(str(run))}</code>; "
        f"regenerate with <code>hwnas report {html.escape(str(run))}</code></p>",
        f"<p class='headline'>{html.escape(headline(summary))}</p>",
        "<h2>The two networks</h2>",
        _table(NETWORK_HEADER, [[label, *cells] for label, cells in network_rows(summary)]),
        "<p class='small'>Measured: both exported ONNX files timed together in the same interleaved rounds "
        "with the target's protocol (the reference network beside them). Drift-corrected: measured x the "
        "predictor's reference baseline / the reference figure of these rounds.</p>",
        "<h2>Latency predictor</h2>",
        _table(PREDICTOR_HEADER, predictor_rows(summary)),
        _img(figs["scatter"], "predicted versus measured latency"),
        "<h2>Search curves</h2>",
        _img(figs["curves"], "search: accuracy, predicted latency and latency weight per epoch"),
        "<h2>Architectures</h2>",
    ]
    for key in nets:
        parts.append(_img(archs.get(key), f"{NETWORK_LABELS.get(key, key)} network"))
    if step_rows:
        parts += ["<h2>Steps</h2>", _table(["step", "wall time"], step_rows)]
    notes = summary.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>\n")
    out = run / REPORT
    atomic_write_bytes(out, "\n".join(parts).encode())
    return out


def summary_markdown(summary: dict[str, Any]) -> str:
    """summary.md: the headline and the two tables, for a terminal or a repository page."""
    lines = [f"# hwnas run: {summary.get('space')} on {summary.get('target')}", "", headline(summary), ""]
    lines += ["| " + " | ".join(NETWORK_HEADER) + " |", "|" + "---|" * len(NETWORK_HEADER)]
    for label, cells in network_rows(summary):
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines += ["", "| " + " | ".join(PREDICTOR_HEADER) + " |", "|" + "---|" * len(PREDICTOR_HEADER)]
    for r in predictor_rows(summary):
        lines.append("| " + " | ".join(r) + " |")
    steps = summary.get("steps") or {}
    if steps:
        lines += ["", "| step | wall time |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} s |" for k, v in steps.items()]
    lines += ["", "Report with figures: `report.html` (regenerate: `hwnas report RUN`).", ""]
    return "\n".join(lines)
