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
import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.space import NUM_CELL_INPUTS, Architecture, Genotype, Stage, load_architecture
from targets.basics import UserError, atomic_write_bytes

MAIN_KIND = "main"
REPORT = "report.html"
NETWORK_LABELS = {"plain": "plain (no latency loss)", "latency": "latency-aware"}
OP_COLOURS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#0b4f8a",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#17701c",
    "max_pool_3x3": "#ff7f0e",
    "avg_pool_3x3": "#d4a017",
    "skip_connect": "#7f7f7f",
}
OP_SHORT = {
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
    "max_pool_3x3": "max",
    "avg_pool_3x3": "avg",
    "skip_connect": "skip",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


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
        what = "no hwnas run" if cfg is None else f"a '{kind or _guess_kind(cfg)}' run"
        raise UserError(
            f"{run}: holds {what}, not a main-job run; `hwnas report` reads the --out of `hwnas run`"
        )
    if not sum_path.is_file():
        raise UserError(f"{run}: the main job has not finished (no summary.json); run `hwnas run --out {run}` again")
    try:
        summary = json.loads(sum_path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{sum_path}: unreadable; run `hwnas run --out {run}` again") from None
    return cfg, summary


def _guess_kind(cfg: Any) -> str:
    if isinstance(cfg, dict) and str(cfg.get("schema", "")).startswith("hwnas.search"):
        return "search"
    return "unknown"


# -- figures ----------------------------------------------------------------------------------------
def plot_scatter(summary: dict[str, Any], path: Path) -> Path | None:
    """Predicted versus measured latency: held-out split, fresh architectures, the networks."""
    scatter = summary.get("scatter") or {}
    test = np.asarray(scatter.get("test") or [], dtype=float).reshape(-1, 2)
    fresh = (summary.get("fresh") or {}).get("items") or []
    nets = summary.get("networks") or {}
    if not len(test) and not fresh:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    every: list[float] = []
    if len(test):
        ax.scatter(test[:, 0], test[:, 1], s=10, alpha=0.5, label=f"held-out profiles ({len(test)})")
        every += test.ravel().tolist()
    if fresh:
        m = [f["measured_ms"] for f in fresh]
        p = [f["predicted_ms"] for f in fresh]
        ax.scatter(m, p, s=26, marker="x", color="C3", label=f"fresh, measured later, raw ({len(fresh)})")
        every += m + p
        c = [(f["corrected_ms"], f["predicted_ms"]) for f in fresh if f.get("corrected_ms")]
        if c:
            ax.scatter(*zip(*c, strict=True), s=30, marker="+", color="C2", label=f"fresh, drift-corrected ({len(c)})")
            every += [v for pair in c for v in pair]
    for key, marker in (("plain", "s"), ("latency", "D")):
        n = nets.get(key) or {}
        if n.get("predicted_ms") and n.get("measured_ms"):
            ax.scatter([n["measured_ms"]], [n["predicted_ms"]], s=70, marker=marker, facecolor="none",
                       edgecolor="k", linewidths=1.5, label=f"{NETWORK_LABELS[key]} network, raw")
            every += [n["measured_ms"], n["predicted_ms"]]
            if n.get("corrected_ms"):
                ax.scatter([n["corrected_ms"]], [n["predicted_ms"]], s=70, marker=marker, color="C2", alpha=0.7,
                           label=f"{NETWORK_LABELS[key]} network, drift-corrected")
                every.append(n["corrected_ms"])
    lo, hi = min(every) * 0.93, max(every) * 1.07
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.15, label="±10%")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"latency predictor on {summary.get('target', '?')}")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def read_log(path: Path) -> list[dict[str, float]]:
    """A CSV log as rows of floats (non-numbers become NaN)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = math.nan
            rows.append(row)
    return rows


def plot_search_curves(logs: dict[str, list[dict[str, float]]], path: Path) -> Path | None:
    """Per epoch: validation accuracy, predicted latency (relaxed and derived), latency weight."""
    if not any(logs.values()):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    for i, (key, rows) in enumerate(logs.items()):
        if not rows:
            continue
        ep = [r["epoch"] for r in rows]
        label = NETWORK_LABELS.get(key, key)
        colour = f"C{i}"
        axes[0].plot(ep, [r.get("val_acc", math.nan) for r in rows], "-o", ms=3, color=colour, label=f"{label}: val")
        axes[0].plot(ep, [r.get("train_acc", math.nan) for r in rows], "--", color=colour, alpha=0.6, label=f"{label}: train")
        axes[1].plot(ep, [r.get("derived_ms", math.nan) for r in rows], "-o", ms=3, color=colour, label=f"{label}: derived")
        axes[1].plot(ep, [r.get("relaxed_ms", math.nan) for r in rows], "--", color=colour, alpha=0.6, label=f"{label}: relaxed")
        axes[2].plot(ep, [r.get("latency_weight", math.nan) for r in rows], "-o", ms=3, color=colour, label=label)
    axes[0].set_title("search accuracy")
    axes[0].set_ylabel("accuracy")
    axes[1].set_title("predicted latency (ms)")
    axes[2].set_title("latency weight")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _edge(ax: Any, xy0: tuple[float, float], xy1: tuple[float, float], op: str, rad: float) -> None:
    from matplotlib.patches import FancyArrowPatch

    colour = OP_COLOURS.get(op, "k")
    ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle="-|>", mutation_scale=9, color=colour, lw=1.4,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=9, shrinkB=9))
    mx, my = (xy0[0] + xy1[0]) / 2, (xy0[1] + xy1[1]) / 2
    dx, dy = xy1[0] - xy0[0], xy1[1] - xy0[1]
    # the arc's midpoint lies off the chord by rad * chord length, perpendicular to it
    ax.text(mx + rad * dy * 0.5, my - rad * dx * 0.5, OP_SHORT.get(op, op), fontsize=7.5, color=colour,
            ha="center", va="center", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})


def _node(ax: Any, xy: tuple[float, float], text: str, fc: str = "#eef3fb") -> None:
    ax.text(*xy, text, ha="center", va="center", fontsize=8,
            bbox={"boxstyle": "round,pad=0.3", "fc": fc, "ec": "#555555", "lw": 0.8})


def draw_cell(ax: Any, genotype: Genotype, title: str) -> None:
    """A cell: its two inputs, its nodes, each edge labelled with its op; output = concat."""
    n = len(genotype)
    pos = {0: (0.0, 1.2), 1: (0.0, -1.2)}
    for i in range(n):
        pos[NUM_CELL_INPUTS + i] = (1.0 + i, (1.3, -0.4, 0.4, -1.3)[i % 4])
    for i, node in enumerate(genotype):
        for j, (op, idx) in enumerate(node):
            _edge(ax, pos[idx], pos[NUM_CELL_INPUTS + i], op, 0.25 if j == 0 else -0.25)
    _node(ax, pos[0], "in", "#fff4d6")
    _node(ax, pos[1], "in", "#fff4d6")
    for i in range(n):
        _node(ax, pos[NUM_CELL_INPUTS + i], str(i))
    _node(ax, (n + 0.8, 0.0), "concat", "#e3f5e1")
    ax.set_xlim(-0.5, n + 1.4)
    ax.set_ylim(-1.9, 1.9)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def draw_stage(ax: Any, stage: Stage, title: str) -> None:
    """A stage: its inputs, `depth` cells in a row, each cell's two connections (stage ops)
    from the states of its window; output = concat of the last two states."""
    d = stage.depth
    pos = {0: (0.0, 0.9), 1: (0.0, -0.9)}
    for k in range(d):
        pos[NUM_CELL_INPUTS + k] = (1.2 * (k + 1), 0.0)
    for k, conn in enumerate(stage.connections):
        for j, (op, idx) in enumerate(conn):
            _edge(ax, pos[idx], pos[NUM_CELL_INPUTS + k], op, 0.35 if j == 0 else -0.35)
    _node(ax, pos[0], "s0", "#fff4d6")
    _node(ax, pos[1], "s1", "#fff4d6")
    for k in range(d):
        _node(ax, pos[NUM_CELL_INPUTS + k], f"cell {k + 1}")
    out_x = 1.2 * (d + 1)
    _node(ax, (out_x, 0.0), "concat\nlast 2", "#e3f5e1")
    ax.set_xlim(-0.5, max(out_x + 0.7, 4.4))
    ax.set_ylim(-1.8, 1.8)
    ax.set_title(f"{title}: depth {d}", fontsize=8)
    ax.axis("off")


def plot_architecture(arch: Architecture, title: str, path: Path) -> Path:
    """Stage 1 | reduction 1 | stage 2 | reduction 2 | stage 3: top row each stage's cells and
    connections, bottom row the cell each stage (or reduction) repeats, its ops on the edges."""
    plt = _plt()
    fig, axes = plt.subplots(2, 5, figsize=(18, 6.4), dpi=100, gridspec_kw={"height_ratios": [0.8, 1.2]})
    for s, stage in enumerate(arch.stages):
        col = 2 * s
        draw_stage(axes[0, col], stage, f"stage {s + 1}")
        draw_cell(axes[1, col], stage.cell, f"stage {s + 1} normal cell")
        if s < len(arch.reductions):
            axes[0, col + 1].axis("off")
            axes[0, col + 1].text(0.5, 0.5, f"reduction {s + 1}\n(stride 2, channels x2)", ha="center",
                                  va="center", fontsize=8, transform=axes[0, col + 1].transAxes)
            draw_cell(axes[1, col + 1], arch.reductions[s], f"reduction cell {s + 1}")
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=c, lw=2, label=op) for op, c in OP_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=7, frameon=False)
    fig.suptitle(f"{title} ({arch.hash[:12]})", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return _save(fig, path)


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
