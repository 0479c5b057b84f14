"""The trade-off study's results: the Pareto front, the goals checked, the table and the plot.

Pure functions of the per-network rows (`hwnas.mainjob.tradeoff.collect_rows`), so a partial
study (some networks not yet trained or measured) reports what it has and says what is missing.
Accuracy is the test accuracy after training with the one recipe; latency is the target's
measurement of all networks in one interleaved run (raw: the same rounds and reference for all).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from targets.basics import atomic_write_bytes

#: How each kind of network is drawn and named.
KINDS = {
    "plain": ("weight 0 (plain search)", "#1f77b4", "s"),
    "latency": ("latency-aware (weight)", "#d62728", "o"),
    "budget": ("latency-aware (hard budget)", "#9467bd", "D"),
    "flops": ("FLOPs-aware (matched)", "#2ca02c", "^"),
    "random": ("random (same space)", "#7f7f7f", "x"),
    "darts-v2": ("DARTS-V2 cells", "#ff7f0e", "*"),
}
LATENCY_AWARE = ("plain", "latency", "budget")
#: The study's goals (docs/study/README.md).
ACC_LOSS_MAX = 0.01  # <= 1 point accuracy loss vs weight 0 ...
LATENCY_CUT_MIN = 0.30  # ... with >= 30 % lower measured latency
BUDGET_TOL_PRED = 0.05
BUDGET_TOL_MEAS = 0.10
DARTS_GAP_MAX = 0.015


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def complete(row: dict[str, Any]) -> bool:
    """A network with both a test accuracy and a measured latency on the target."""
    return _ok(row.get("test_accuracy")) and _ok(row.get("measured_ms"))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point dominates (as fast or faster
    and at least as accurate, strictly better in one), fastest first."""
    front = []
    for i, (li, ai) in enumerate(points):
        dominated = any(
            (lj <= li and aj >= ai and (lj < li or aj > ai)) for j, (lj, aj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set row["pareto"] (True/False; None where accuracy or latency is missing)."""
    done = [r for r in rows if complete(r)]
    front = {id(done[i]) for i in pareto_front([(r["measured_ms"], r["test_accuracy"]) for r in done])}
    for r in rows:
        r["pareto"] = (id(r) in front) if complete(r) else None


def _pct(a: float, b: float) -> float:
    return 100.0 * (a / b - 1.0)


def budget_errors(row: dict[str, Any]) -> None:
    """A budget network's error vs its budget: predicted, measured raw and drift-corrected (%)."""
    b = row.get("budget_ms")
    if not _ok(b):
        return
    for key, src in (("budget_error_pred_pct", "predicted_ms"), ("budget_error_meas_pct", "measured_ms"),
                     ("budget_error_corrected_pct", "corrected_ms")):  # fmt: skip
        row[key] = _pct(row[src], b) if _ok(row.get(src)) else None


def _best_at_or_below(rows: list[dict[str, Any]], latency: float) -> dict[str, Any] | None:
    fit = [r for r in rows if r["measured_ms"] <= latency]
    return max(fit, key=lambda r: r["test_accuracy"]) if fit else None


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of the study: status 'met', 'not met' or 'n/a' (data missing), with the figures."""
    done = [r for r in rows if complete(r)]
    by_kind = {k: [r for r in done if r["kind"] == k] for k in KINDS}
    plain = by_kind["plain"][0] if by_kind["plain"] else None
    aware = [r for r in done if r["kind"] in ("latency", "budget")]
    out: list[dict[str, Any]] = []

    g: dict[str, Any] = {"goal": "at <= 1 point accuracy loss vs weight 0, >= 30 % lower measured latency"}
    if plain is None or not aware:
        g.update(status="n/a", detail="needs the weight-0 network and a latency-aware one, trained and measured")
    else:
        ok = [r for r in aware if r["test_accuracy"] >= plain["test_accuracy"] - ACC_LOSS_MAX - 1e-12]
        best = max(ok, key=lambda r: 1 - r["measured_ms"] / plain["measured_ms"]) if ok else None
        cut = 1 - best["measured_ms"] / plain["measured_ms"] if best else None
        g.update(
            status="met" if cut is not None and cut >= LATENCY_CUT_MIN else "not met",
            value=cut, network=best["name"] if best else None,
            detail=(f"{best['name']}: {100 * cut:.1f} % lower measured latency at "
                    f"{100 * (best['test_accuracy'] - plain['test_accuracy']):+.1f} points" if best
                    else f"no latency-aware network within {100 * ACC_LOSS_MAX:.0f} point of weight 0"),
        )  # fmt: skip
    out.append(g)

    front_rows = [r for r in done if r["kind"] in LATENCY_AWARE]
    for kind in ("flops", "random"):
        g = {"goal": f"at equal measured latency, latency-aware more accurate than {KINDS[kind][0]}"}
        others = by_kind[kind]
        if not others or not front_rows:
            g.update(status="n/a", detail=f"needs {kind} and latency-aware networks, trained and measured")
            out.append(g)
            continue
        wins = losses = incomparable = 0
        lines = []
        for r in others:
            best = _best_at_or_below(front_rows, r["measured_ms"])
            if best is None:
                incomparable += 1
                lines.append(f"{r['name']}: faster than every latency-aware network")
                continue
            diff = best["test_accuracy"] - r["test_accuracy"]
            wins += diff > 0
            losses += diff <= 0
            lines.append(f"{r['name']} {100 * r['test_accuracy']:.1f} % at {r['measured_ms']:.3g} ms vs "
                         f"{best['name']} {100 * best['test_accuracy']:.1f} % at {best['measured_ms']:.3g} ms")  # fmt: skip
        g.update(
            status="n/a" if wins + losses == 0 else ("met" if losses == 0 else "not met"),
            value={"latency_aware_better": wins, "not_better": losses, "not_comparable": incomparable},
            detail="; ".join(lines),
        )
        out.append(g)

    budgets = [r for r in rows if r["kind"] == "budget"]
    g = {"goal": "budget runs within +-5 % predicted and +-10 % measured (drift-corrected)"}
    if not budgets:
        g.update(status="n/a", detail="no budget run finished")
    else:
        lines, status = [], "met"
        for r in budgets:
            ep, em, er = (r.get("budget_error_pred_pct"), r.get("budget_error_corrected_pct"),
                          r.get("budget_error_meas_pct"))  # fmt: skip
            if em is None:
                em = er
            if ep is None or em is None:
                status = "n/a" if status == "met" else status
                lines.append(f"{r['name']}: not measured yet")
                continue
            if abs(ep) > 100 * BUDGET_TOL_PRED or abs(em) > 100 * BUDGET_TOL_MEAS:
                status = "not met"
            raw = f", raw {er:+.1f} %" if er is not None else ""
            lines.append(f"{r['name']} ({r['budget_ms']:.4g} ms): predicted {ep:+.1f} %, measured {em:+.1f} %{raw}")
        g.update(status=status, detail="; ".join(lines))
    out.append(g)

    g = {"goal": "plain search's best within 1.5 points of DARTS-V2 (same recipe)"}
    darts = [r for r in rows if r["kind"] == "darts-v2" and _ok(r.get("test_accuracy"))]
    plain_acc = [r for r in rows if r["kind"] == "plain" and _ok(r.get("test_accuracy"))]
    if not darts or not plain_acc:
        g.update(status="n/a", detail="needs DARTS-V2 in this space and the weight-0 network, both trained")
    else:
        gap = darts[0]["test_accuracy"] - plain_acc[0]["test_accuracy"]
        g.update(status="met" if gap <= DARTS_GAP_MAX else "not met", value=gap,
                 detail=f"{darts[0]['name']} {100 * darts[0]['test_accuracy']:.1f} % vs weight 0 "
                        f"{100 * plain_acc[0]['test_accuracy']:.1f} % ({100 * gap:+.1f} points)")  # fmt: skip
    out.append(g)
    return out


# -- the table ---------------------------------------------------------------------------------------
def _f(v: Any, fmt: str) -> str:
    return format(v, fmt) if _ok(v) else "-"


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown page: one row per network, then the goals."""
    rows = results["rows"]
    target, cpu = results["target"], results.get("cpu_target")
    head = ["network", "kind", "test acc %", f"measured ms ({target})", f"predicted ms ({target})"]
    if cpu:
        head += [f"measured ms ({cpu})"]
    head += ["params", "MMACs", "Pareto"]
    lines = [
        f"# Trade-off study: {results['space']} on {results['dataset']}, target {target}",
        "",
        results.get("label", ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r["name"], r["kind"], _f(100 * r["test_accuracy"] if _ok(r.get("test_accuracy")) else None, ".1f"),
                 _f(r.get("measured_ms"), ".4g") + ("" if r.get("stable", True) else " (unstable)"),
                 _f(r.get("predicted_ms"), ".4g")]  # fmt: skip
        if cpu:
            cells.append(_f(r.get("cpu_measured_ms"), ".4g"))
        cells += [_f(r.get("params"), ",d"), _f(r["macs"] / 1e6 if _ok(r.get("macs")) else None, ".2f"),
                  {True: "yes", False: "", None: "-"}[r.get("pareto")]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    budgets = [r for r in rows if r["kind"] == "budget"]
    if budgets:
        lines += ["", "| budget run | budget ms | predicted error | measured error (raw) | measured error (drift-corrected) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in budgets:
            lines.append(
                f"| {r['name']} | {r['budget_ms']:.4g} | {_f(r.get('budget_error_pred_pct'), '+.1f')} % | "
                f"{_f(r.get('budget_error_meas_pct'), '+.1f')} % | {_f(r.get('budget_error_corrected_pct'), '+.1f')} % |"
            )
    rr = results.get("random_range")
    if rr:
        lines += ["", f"Random baseline: {rr['random_count']} networks predicted {rr['random_ms'][0]:.4g}-"
                  f"{rr['random_ms'][1]:.4g} ms; the searched ones {rr['searched_ms'][0]:.4g}-{rr['searched_ms'][1]:.4g} ms."]  # fmt: skip
    lines += ["", "## Goals", ""]
    for g in results["goals"]:
        lines.append(f"- **{g['status']}**: {g['goal']}. {g.get('detail', '')}")
    transfer = results.get("cpu_transfer") or []
    if transfer:
        lines += ["", f"## Also faster on {cpu}?", "", f"| network | measured cut vs weight 0 on {target} | on {cpu} |",
                  "|---|---|---|"]  # fmt: skip
        for t in transfer:
            lines.append(f"| {t['name']} | {100 * t['target_cut']:+.1f} % | {100 * t['cpu_cut']:+.1f} % |")
    for note in results.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def cpu_transfer(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Is a network that is faster than weight 0 on the target also faster on the CPU target?
    Per searched network: its measured cut vs weight 0 on each (None without a CPU run)."""
    plain = next((r for r in rows if r["kind"] == "plain"), None)
    if plain is None or not _ok(plain.get("cpu_measured_ms")) or not _ok(plain.get("measured_ms")):
        return []
    out = []
    for r in rows:
        if r["kind"] in ("latency", "budget", "flops") and _ok(r.get("cpu_measured_ms")) and _ok(r.get("measured_ms")):
            out.append({"name": r["name"], "target_cut": 1 - r["measured_ms"] / plain["measured_ms"],
                        "cpu_cut": 1 - r["cpu_measured_ms"] / plain["cpu_measured_ms"]})  # fmt: skip
    return out


def random_range(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The predicted latency range of the searched networks and of the random baseline."""
    searched = [r["predicted_ms"] for r in rows if r["kind"] in ("plain", "latency", "budget", "flops")]
    rnd = [r["predicted_ms"] for r in rows if r["kind"] == "random"]
    if not searched or not rnd:
        return None
    return {"searched_ms": [min(searched), max(searched)], "random_ms": [min(rnd), max(rnd)], "random_count": len(rnd)}


def _panel(ax: Any, rows: list[dict[str, Any]], key: str, target: str) -> None:
    pts_all = [r for r in rows if _ok(r.get(key))]
    for kind, (label, colour, marker) in KINDS.items():
        pts = [r for r in pts_all if r["kind"] == kind]
        if pts:
            ax.scatter([r[key] for r in pts], [100 * r["test_accuracy"] for r in pts], c=colour,
                       marker=marker, s=70 if marker == "*" else 30, label=label, zorder=3)  # fmt: skip
    done = [(r[key], r["test_accuracy"]) for r in pts_all]
    front = [pts_all[i] for i in pareto_front(done)]
    if front:
        ax.step([r[key] for r in front], [100 * r["test_accuracy"] for r in front], where="post",
                c="k", lw=0.8, ls="--", label="Pareto front", zorder=2)  # fmt: skip
    for r in pts_all:
        if r["kind"] in ("plain", "latency", "budget", "flops", "darts-v2"):
            ax.annotate(r["short"], (r[key], 100 * r["test_accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel(f"measured latency on {target} (ms, one interleaved run)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Accuracy vs measured latency, one marker per kind, the Pareto front as a step line;
    a second panel for the CPU target when the networks were measured there too."""
    rows = [r for r in results["rows"] if complete(r)]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = results.get("cpu_target") if any(_ok(r.get("cpu_measured_ms")) for r in rows) else None
    fig, axes = plt.subplots(1, 2 if cpu else 1, figsize=(11.5 if cpu else 6.6, 4.6), dpi=100, squeeze=False)
    _panel(axes[0][0], rows, "measured_ms", results["target"])
    if cpu:
        _panel(axes[0][1], rows, "cpu_measured_ms", cpu)
        axes[0][1].set_title(f"the same networks on {cpu}", fontsize=9)
    axes[0][0].set_title(results.get("title", "accuracy vs measured latency"), fontsize=9)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
