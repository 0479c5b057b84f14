"""The main job's figures, drawn with matplotlib only: the predictor's scatter, the search
curves, and a found architecture per stage (depth, connections between cells, each cell's ops).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.space import NUM_CELL_INPUTS, Architecture, Genotype, Stage
from targets.basics import atomic_write_bytes

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
