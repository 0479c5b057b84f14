"""Issue 20: the trade-off study (`bench/tradeoff.py`). Its `--quick` CPU run end to end (slow:
~3-4 minutes on a busy 2-core host), and the pure parts (Pareto front, goals, optional config
fields, DARTS-V2's analogue) in milliseconds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hwnas.mainjob import tradeoff_report as R
from hwnas.mainjob.tradeoff_networks import darts_v2
from hwnas.mainjob.tradeoff_study import with_optional_fields
from hwnas.space import get_space
from targets.basics import UserError

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "tradeoff.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=1200)  # fmt: skip


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tradeoff") / "quick"
    res = _run("--quick", "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def _ok(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@pytest.mark.slow
def test_quick_run_outputs_are_complete_and_consistent(quick: Path) -> None:
    for name in ("results.json", "results.md", "tradeoff.png", "study.json"):
        assert (quick / name).is_file(), name
    assert (quick / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parts = [json.loads(p.read_text()) for p in sorted((quick / "parts").glob("*.json"))]
    assert {p["part"] for p in parts} == {"predictor", "search", "train", "measure", "report"}
    assert all(p["command"][:2] == ["bench/tradeoff.py", "--quick"] and p["started"] and p["finished"] for p in parts)

    res = json.loads((quick / "results.json").read_text())
    rows = res["rows"]
    kinds = [r["kind"] for r in rows]
    assert kinds.count("plain") == 1 and kinds.count("latency") >= 3 and kinds.count("flops") == 1
    assert kinds.count("budget") == 2 and kinds.count("random") >= 8 and kinds.count("darts-v2") == 1
    for r in rows:  # every network trained and measured, with its size
        assert _ok(r["test_accuracy"]) and 0 <= r["test_accuracy"] <= 1, r["name"]
        assert _ok(r["measured_ms"]) and r["measured_ms"] > 0, r["name"]
        assert _ok(r["predicted_ms"]) and r["params"] > 0 and r["macs"] > 0, r["name"]

    # the Pareto front is exactly the non-dominated set
    def dominates(a: dict, b: dict) -> bool:
        return (a["measured_ms"] <= b["measured_ms"] and a["test_accuracy"] >= b["test_accuracy"]
                and (a["measured_ms"] < b["measured_ms"] or a["test_accuracy"] > b["test_accuracy"]))  # fmt: skip

    for r in rows:
        assert r["pareto"] == (not any(dominates(o, r) for o in rows if o is not r)), r["name"]
    assert any(r["pareto"] for r in rows)

    # budgets: reported with their error vs the budget, predicted within the repair's band
    for r in (r for r in rows if r["kind"] == "budget"):
        assert _ok(r["budget_ms"]) and _ok(r["budget_error_pred_pct"]) and _ok(r["budget_error_meas_pct"])
        assert abs(r["budget_error_pred_pct"]) <= 5.0 + 1e-6
        assert r["budget_error_pred_pct"] == pytest.approx(100 * (r["predicted_ms"] / r["budget_ms"] - 1))
    md = (quick / "results.md").read_text()
    assert "| budget run |" in md and "## Goals" in md and "CPU toy run" in md

    # the random baseline spans the searched networks' predicted latency range
    searched = [r["predicted_ms"] for r in rows if r["kind"] in ("plain", "latency", "budget", "flops")]
    rnd = sorted(r["predicted_ms"] for r in rows if r["kind"] == "random")
    span = max(searched) - min(searched)
    assert rnd[0] <= min(searched) + 0.25 * span and rnd[-1] >= max(searched) - 0.25 * span
    assert res["random_range"]["random_ms"] == [rnd[0], rnd[-1]] and "Random baseline: " in md

    # the FLOPs search was matched on FLOPs cuts, and every goal has a status
    m = res["flops_matching"]
    flops_row = next(r for r in rows if r["kind"] == "flops")
    assert flops_row["name"] == f"flops-w{m['chosen_flops_weight']:g}"
    best = min(m["flops_cuts"].values(), key=lambda c: abs(c - m["latency_cut"]))
    assert m["flops_cuts"][f"{m['chosen_flops_weight']:g}"] == best
    assert len(res["goals"]) == 5 and all(g["status"] in ("met", "not met", "n/a") for g in res["goals"])


@pytest.mark.slow
def test_quick_rerun_reuses_finished_searches_and_trainings(quick: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in quick.glob("search/*/summary.json")}
    before |= {p: p.stat().st_mtime_ns for p in quick.glob("train/*/summary.json")}
    res = _run("--quick", "--out", str(quick), "--part", "search,train")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "starting" not in res.stdout and "resuming" not in res.stdout
    assert before and all(p.stat().st_mtime_ns == t for p, t in before.items())


# -- the pure parts --------------------------------------------------------------------------------
def test_pareto_front_is_the_non_dominated_set() -> None:
    pts = [(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.7), (0.5, 0.2), (2.0, 0.6)]
    assert R.pareto_front(pts) == [4, 0, 1]


def _row(name: str, kind: str, ms: float, acc: float, **kw: float) -> dict:
    return {"name": name, "kind": kind, "measured_ms": ms, "test_accuracy": acc, "short": name, **kw}


def test_goals_read_the_rows() -> None:
    rows = [
        _row("w0", "plain", 1.0, 0.90), _row("w1", "latency", 0.65, 0.895), _row("w4", "latency", 0.5, 0.85),
        _row("f", "flops", 0.66, 0.88), _row("r0", "random", 0.9, 0.80), _row("r1", "random", 0.3, 0.5),
        _row("b", "budget", 0.8, 0.9, budget_ms=0.8, predicted_ms=0.82, corrected_ms=0.85),
        _row("d", "darts-v2", 1.2, 0.92),
    ]  # fmt: skip
    for r in rows:
        R.budget_errors(r)
    goals = R.goals(rows)
    cut, flops, rnd, budget, darts = goals
    assert cut["status"] == "met" and cut["network"] == "w1" and cut["value"] == pytest.approx(0.35)
    assert flops["status"] == "met"  # w1: 0.895 at 0.65 ms vs 0.88 at 0.66 ms
    assert rnd["status"] == "met" and rnd["value"]["not_comparable"] == 1
    assert budget["status"] == "met" and rows[6]["budget_error_pred_pct"] == pytest.approx(2.5)
    assert darts["status"] == "not met" and darts["value"] == pytest.approx(0.02)
    R.mark_pareto(rows)
    assert [r["name"] for r in rows if r["pareto"]] == ["w1", "w4", "r1", "b", "d"]  # b dominates w0
    page = R.markdown({"rows": rows, "target": "t", "space": "s", "dataset": "d", "goals": goals})
    assert page.count("| w") == 3 and "| b | 0.8 |" in page


def test_optional_fields_pass_only_where_the_dataclass_has_them() -> None:
    @dataclass
    class Old:
        epochs: int = 1

    @dataclass
    class New:
        epochs: int = 1
        device: str = "cpu"

    assert with_optional_fields(Old, {"epochs": 2}, device="cuda", precision=None) == ({"epochs": 2}, ["device"])
    assert with_optional_fields(New, {"epochs": 2}, device="cuda") == ({"epochs": 2, "device": "cuda"}, [])
    with pytest.raises(UserError, match="no field"):
        with_optional_fields(Old, {"epoch": 2})


def test_darts_v2_is_the_example_in_cifar_and_an_analogue_in_digits() -> None:
    arch, what = darts_v2(get_space("cifar"))
    assert arch is not None and "examples/darts_v2_cifar.json" in what and arch.stages[0].depth == 6
    small, what = darts_v2(get_space("digits"))
    assert small is not None and "analogue" in what
    assert all(s.depth == 3 for s in small.stages) and small.stages[0].cell == arch.stages[0].cell


def test_flops_model_is_a_predictor_file_priced_like_latency(tmp_path: Path) -> None:
    """The FLOPs penalty: a predictor file of analytic MMACs, so WeightedLatency on it is
    w x FLOPs / FLOPs at the centre, and run_search takes it as `predictor`."""
    import torch

    from hwnas.mainjob.tradeoff_study import macs_of, mixed_nth
    from hwnas.search.flops import FLOPS_UNIT, fit_flops_predictor, is_flops_predictor
    from hwnas.search.latency import LatencyTerm, WeightedLatency
    from hwnas.space.encoding import ArchParameters
    from predictor import load_predictor

    space = get_space("digits")
    archs = [mixed_nth(space, 7, i) for i in range(66)]
    path = tmp_path / "flops.pt"
    test = fit_flops_predictor(space, [(a, macs_of(a)) for a in archs[:60]], path)
    assert test["mape"] < 15
    model = load_predictor(path)
    assert is_flops_predictor(model.header) and model.header["unit"] == FLOPS_UNIT
    term = LatencyTerm(model, space)
    for a in archs[60:]:  # never seen: within 15 % of the counted multiply-adds
        assert term.derived_ms(a) == pytest.approx(macs_of(a) / 1e6, rel=0.15)
    penalty = WeightedLatency(term, 2.0)
    centre = ArchParameters(space, init_scale=0.0)
    loss = penalty.loss(term.predicted_ms(centre))
    assert float(loss.detach()) == pytest.approx(2.0, rel=1e-5)
    grads = torch.autograd.grad(loss, centre.parameters(), allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)  # differentiable in the logits
    with pytest.raises(UserError, match="at least 50"):
        fit_flops_predictor(space, [(a, 1) for a in archs[:10]], tmp_path / "x.pt")
