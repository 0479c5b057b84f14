"""The search's latency term: weighted loss, budget (range check, dual ascent, state), repair.

The predictor is a real fitted one (2 MLP members, a minute's fraction of training) on a
synthetic `digits` store: per-op costs growing with the stage's width, a stage's depth
multiplying its cell's cost, plus noise; no network is exported or timed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hwnas.search.derive import PARAM_FREE_OPS, derive
from hwnas.search.discrete import reachable_range
from hwnas.search.latency import BudgetLatency, LatencyTerm, WeightedLatency
from hwnas.search.repair import repair_to_budget, score_cost
from hwnas.space import CELL_OPS, Architecture, SpaceConfig, get_space, sample_architectures
from hwnas.space.encoding import ArchParameters, encode, encoding_layout
from predictor import (
    MLPConfig,
    build_header,
    fit_predictor,
    load_predictor,
    load_profiles,
    save_predictor,
)
from predictor.synthetic import write_store
from targets.basics import UserError

SPACE = get_space("digits")
OP_COST = {
    "max_pool_3x3": 0.012,
    "avg_pool_3x3": 0.013,
    "skip_connect": 0.002,
    "sep_conv_3x3": 0.040,
    "sep_conv_5x5": 0.048,
    "dil_conv_3x3": 0.024,
    "dil_conv_5x5": 0.028,
}
STAGE_OP_COST = {"skip_connect": 0.002, "max_pool_3x3": 0.010, "avg_pool_3x3": 0.011}


def synthetic_ms(X: np.ndarray, layout: list[str]) -> np.ndarray:
    add = np.zeros(len(layout))
    cell = np.zeros((3, len(layout)))
    depth = np.zeros((3, len(layout)))
    for i, name in enumerate(layout):
        t = name.split(".")
        if m := re.match(r"stage(\d)", t[0]):
            s = int(m.group(1))
            if t[1] == "cell":
                cell[s, i] = OP_COST[t[-1]] * (1 + 0.4 * s)
            elif t[1] == "depth":
                depth[s, i] = float(t[2])
            else:
                add[i] = STAGE_OP_COST[t[-1]] * (1 + 0.4 * s)
        else:
            add[i] = OP_COST[t[-1]] * (1.2 + 0.4 * int(t[0][-1]))
    total = 0.25 + X @ add
    for s in range(3):
        total = total + (X @ depth[s]) * (0.03 + X @ cell[s])
    noise = 1 + 0.02 * np.random.default_rng(0).standard_normal(len(X))
    return total * noise


@pytest.fixture(scope="module")
def term(tmp_path_factory: pytest.TempPathFactory) -> LatencyTerm:
    layout = encoding_layout(SPACE)
    archs = sample_architectures(SPACE, 0, 300)
    X = np.stack([encode(a) for a in archs])
    y = synthetic_ms(X, layout)
    folder = tmp_path_factory.mktemp("latency")
    rows = [
        (a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)
    ]
    write_store(
        folder / "digits.db",
        rows,
        space_name=SPACE.name,
        space_key=SPACE.key,
        space_config=SPACE.to_dict(),
        layout=layout,
    )
    ds = load_profiles(folder / "digits.db", "ort-cpu")
    fit = fit_predictor(ds, cfg=MLPConfig(members=2, max_epochs=80), baselines=(), seed=0)
    save_predictor(folder / "digits.pt", fit.model, build_header(fit.model, ds, fit.report))
    return LatencyTerm(load_predictor(folder / "digits.pt"), SPACE)


@pytest.fixture(scope="module")
def reach(term: LatencyTerm) -> tuple[float, float]:
    return reachable_range(term, seed=0)


def _alpha(seed: int, scale: float = 1.0, space: SpaceConfig = SPACE) -> ArchParameters:
    return ArchParameters(space, init_scale=scale, generator=torch.Generator().manual_seed(seed))


def test_latency0_is_the_centre_and_weight_prices_relative_latency(term: LatencyTerm) -> None:
    # The centre of the space, built without the relaxation: uniform logits are the expected
    # one-hot encoding of uniformly sampled architectures (each op 1/k, each input by its share).
    mean = np.stack([encode(a) for a in sample_architectures(SPACE, 1, 2000)]).mean(0)
    with torch.no_grad():
        at_mean = float(term.predictor(torch.as_tensor(mean, dtype=torch.float32)))
    assert term.latency0_ms == pytest.approx(at_mean, rel=0.02)
    centre = ArchParameters(SPACE, init_scale=0.0)
    penalty = WeightedLatency(term, 0.5)
    assert float(penalty.loss(term.predicted_ms(centre)).detach()) == pytest.approx(0.5)
    assert penalty.weight == 0.5 and penalty.describe()["latency0_ms"] == term.latency0_ms
    with pytest.raises(UserError, match="latency-weight"):
        WeightedLatency(term, -1.0)


def test_weighted_loss_gradient_reaches_every_kind_of_logit(term: LatencyTerm) -> None:
    alpha = _alpha(0)
    loss = WeightedLatency(term, 1.0).loss(term.predicted_ms(alpha))
    loss.backward()
    for kind in ("alpha", "beta", "depth", "conn_alpha", "conn_beta"):
        grads = [p.grad for p in getattr(alpha, kind)]
        # a node or slot with exactly two candidate inputs takes both: no gradient on its beta
        live = [g for g in grads if g is not None and float(g.abs().sum()) > 0]
        assert live, f"no gradient reaches {kind}"
        assert all(torch.isfinite(g).all() for g in live)
    assert all(float(p.grad.abs().sum()) > 0 for p in alpha.alpha)  # every cell edge is priced


def test_a_narrower_search_space_is_scored_at_deploy_width(term: LatencyTerm) -> None:
    narrow = SpaceConfig.from_dict({**SPACE.to_dict(), "name": "digits-narrow", "channels": 4})
    wide, thin = _alpha(3), _alpha(3, space=narrow)
    assert float(term.predicted_ms(thin).detach()) == pytest.approx(float(term.predicted_ms(wide).detach()))
    arch = thin.derive()
    assert term.derived_ms(arch) == pytest.approx(term.derived_ms(wide.derive()))
    other = SpaceConfig.from_dict({**SPACE.to_dict(), "name": "digits-3", "nodes": 3})
    with pytest.raises(UserError, match="encodes architectures differently"):
        term.predicted_ms(_alpha(0, space=other))
    with pytest.raises(UserError, match="not on the deploy space 'digits-narrow'"):
        LatencyTerm(term.predictor, narrow)  # the predictor's space is the one that ships


def test_a_predictor_of_another_space_is_refused(term: LatencyTerm) -> None:
    with pytest.raises(UserError, match="differs from the predictor's deploy space 'digits'"):
        LatencyTerm(term.predictor, get_space("tiny"))


def test_reachable_range_brackets_every_sampled_architecture(
    term: LatencyTerm, reach: tuple[float, float]
) -> None:
    lo, hi = reach
    sampled = [term.derived_ms(a) for a in sample_architectures(SPACE, 7, 200)]
    assert lo <= min(sampled) and max(sampled) <= hi
    assert lo < 0.7 * float(np.median(sampled)) and hi > 1.3 * float(np.median(sampled))


def test_a_budget_out_of_reach_is_refused_with_the_range(
    term: LatencyTerm, reach: tuple[float, float]
) -> None:
    lo, hi = reach
    for budget in (lo / 2, hi * 2):
        with pytest.raises(UserError) as err:
            BudgetLatency(term, budget, reachable=reach)
        msg = str(err.value)
        assert "out of reach" in msg and f"{lo:.4g}-{hi:.4g} ms" in msg and "digits" in msg
    with pytest.raises(UserError, match="positive"):
        BudgetLatency(term, -1.0, reachable=reach)
    BudgetLatency(term, (lo + hi) / 2, reachable=reach)  # inside: accepted
    BudgetLatency(term, (lo + hi) / 2)  # computes the range itself


def test_dual_ascent_raises_the_weight_over_budget_and_lowers_it_under(
    term: LatencyTerm, reach: tuple[float, float]
) -> None:
    budget = sum(reach) / 2
    pen = BudgetLatency(term, budget, reachable=reach, step=0.1)
    assert pen.weight == 0.0
    weights = []
    for relaxed in (1.3, 1.3, 1.1, 0.8, 0.8, 0.8, 0.8):
        pen.update(relaxed * budget, relaxed * budget)
        weights.append(pen.weight)
    assert weights[0] == pytest.approx(0.03) and weights[1] == pytest.approx(0.06)
    assert weights[2] > weights[1] > weights[0] and weights[3] < weights[2]
    assert weights[-1] == 0.0  # never negative
    pen.update(2 * budget, 0.0)
    assert pen.weight == pytest.approx(0.1)
    pred = torch.tensor(budget * 1.5, requires_grad=True)
    pen.loss(pred).backward()
    assert float(pred.grad) == pytest.approx(pen.weight / budget)


def test_penalty_state_round_trips_for_exact_resume(
    term: LatencyTerm, reach: tuple[float, float]
) -> None:
    budget = sum(reach) / 2
    a = BudgetLatency(term, budget, reachable=reach)
    for r in (1.4, 1.2, 0.9):
        a.update(r * budget, r * budget)
    b = BudgetLatency(term, budget, reachable=reach)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.weight == a.weight
    for r in (1.1, 0.7):
        a.update(r * budget, 0.0)
        b.update(r * budget, 0.0)
    assert b.weight == a.weight and b.updates == a.updates == 5
    with pytest.raises(ValueError):
        BudgetLatency(term, budget * 1.01, reachable=reach).load_state_dict(a.state_dict())
    w = WeightedLatency(term, 0.3)
    w2 = WeightedLatency(term, 0.0)
    w2.load_state_dict(w.state_dict())
    assert w2.weight == 0.3 and w2.describe() == w.describe()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ratio", [0.55, 0.85, 1.3])
def test_repair_lands_in_the_band_at_a_cost_logged(
    term: LatencyTerm, seed: int, ratio: float
) -> None:
    alpha = _alpha(seed)
    derived = alpha.derive()
    assert score_cost(derived, alpha) == pytest.approx(0.0, abs=1e-9)
    budget = ratio * term.derived_ms(derived)
    arch, log = repair_to_budget(derived, alpha, term, budget)
    ms = term.derived_ms(arch)
    assert 0.95 * budget <= ms <= 1.05 * budget, "\n".join(log)
    assert arch != derived and len(log) >= 3 and f"{ms:.4g} ms" in log[-1]
    assert Architecture.from_dict(arch.to_dict()) == arch  # a valid architecture of the space
    assert score_cost(arch, alpha) > 0


def test_repair_leaves_an_architecture_in_the_band_alone_and_prefers_cheap_changes(
    term: LatencyTerm,
) -> None:
    alpha = _alpha(4, scale=2.0)
    derived = alpha.derive()
    ms = term.derived_ms(derived)
    arch, log = repair_to_budget(derived, alpha, term, ms * 1.02)
    assert arch == derived and "no change" in log[-1]
    # a budget the search's own ranking nearly meets: cheaper than one far away
    near, _ = repair_to_budget(derived, alpha, term, ms * 0.9)
    far, _ = repair_to_budget(derived, alpha, term, ms * 0.6)
    assert score_cost(near, alpha) < score_cost(far, alpha)


def _free_per_cell(arch: Architecture) -> list[int]:
    genos = [s.cell for s in arch.stages] + list(arch.reductions)
    return [sum(op in PARAM_FREE_OPS for node in g for op, _ in node) for g in genos]


@pytest.mark.parametrize("seed", [0, 5])
def test_repair_keeps_the_collapse_guard_cap_unless_it_must_lift_it(
    term: LatencyTerm, seed: int
) -> None:
    alpha = _alpha(seed)
    guarded, _ = derive(alpha, 2)
    assert max(_free_per_cell(guarded)) <= 2
    budget = 0.7 * term.derived_ms(guarded)
    arch, log = repair_to_budget(guarded, alpha, term, budget)  # default: keep the cap
    assert 0.95 * budget <= term.derived_ms(arch) <= 1.05 * budget
    assert not any("cap lifted" in line for line in log)
    assert max(_free_per_cell(arch)) <= 2
    free, _ = repair_to_budget(guarded, alpha, term, budget, max_param_free=None)
    assert sum(_free_per_cell(free)) >= sum(_free_per_cell(arch))
    # a cap of 0 cannot reach a low budget in this space: lifted, logged, still in the band
    low = 0.4 * term.derived_ms(guarded)
    arch0, log0 = repair_to_budget(guarded, alpha, term, low, max_param_free=0)
    assert any("cap lifted" in line for line in log0)
    assert term.derived_ms(arch0) <= 1.05 * low


# -- the priced derive (issue 18: the sweep's prediction rose from weight 2 to 8) ---------------
@pytest.mark.parametrize("seed", [0, 3, 7])
def test_priced_derive_is_the_guarded_argmax_at_price_zero_and_each_change_pays(
    term: LatencyTerm, seed: int
) -> None:
    alpha = _alpha(seed, scale=1.0)
    guarded, log = derive(alpha, 2)
    assert derive(alpha, 2, term=term, price=0.0) == (guarded, log)
    base = term.derived_ms(guarded)
    for weight in (0.5, 2.0, 8.0):
        price = weight / term.latency0_ms
        priced, plog = derive(alpha, 2, term=term, price=price)
        ms = term.derived_ms(priced)
        changes = [line for line in plog if line.startswith("latency price")]
        assert ms <= base and (ms < base) == bool(changes)
        assert max(_free_per_cell(priced)) <= 2  # the collapse guard's cap holds
        # what it gave up in architecture score is less than the latency it bought, at that price
        assert score_cost(priced, alpha) - score_cost(guarded, alpha) < price * (base - ms) + 1e-9


def test_priced_derive_breaks_near_ties_toward_speed_and_leaves_clear_choices_alone(term: LatencyTerm) -> None:
    """A near-tie (sep_conv_5x5 a hair above dil_conv_3x3, half its cost in this store) goes
    to the faster op; the same ranking by a wide margin is the search's decision and stays."""

    def alpha_with(gap: float) -> ArchParameters:
        alpha = ArchParameters(SPACE, init_scale=0.0)
        with torch.no_grad():
            for p in alpha.alpha:
                p[:, CELL_OPS.index("sep_conv_5x5")] = 1.0 + gap
                p[:, CELL_OPS.index("dil_conv_3x3")] = 1.0
        return alpha

    price = 2.0 / term.latency0_ms
    near = alpha_with(0.02)
    argmax, _ = derive(near, 2)
    priced, log = derive(near, 2, term=term, price=price)
    ops = lambda a: [op for g in [s.cell for s in a.stages] + list(a.reductions) for n in g for op, _ in n]  # noqa: E731
    assert set(ops(argmax)) == {"sep_conv_5x5"}
    assert ops(priced).count("sep_conv_5x5") < len(ops(priced)) // 2
    assert term.derived_ms(priced) < 0.9 * term.derived_ms(argmax) and log
    clear = alpha_with(5.0)
    kept, klog = derive(clear, 2, term=term, price=price)
    assert ops(kept) == ops(derive(clear, 2)[0]) and not any("cell node" in line for line in klog)


@pytest.mark.parametrize("seed", [1, 4])
def test_priced_derive_gets_faster_as_the_price_rises_on_these_logits(term: LatencyTerm, seed: int) -> None:
    """A regression check on two seeds, not a theorem: the greedy walk at a higher price may
    take another path, but it should not, in the ordinary case, end slower."""
    alpha = _alpha(seed, scale=0.5)
    ms = [term.derived_ms(derive(alpha, 2, term=term, price=w / term.latency0_ms)[0]) for w in (0, 0.5, 2, 8, 32)]
    assert all(b <= a + 1e-9 for a, b in zip(ms, ms[1:], strict=False)), ms


def test_priced_derive_changes_only_the_choices_a_phase_searches(term: LatencyTerm) -> None:
    alpha = _alpha(2, scale=0.3)
    guarded, _ = derive(alpha, 2)
    price = 8.0 / term.latency0_ms
    stages_only, _ = derive(alpha, 2, term=term, price=price, kinds=frozenset({"depth", "slot"}))
    cells_only, _ = derive(alpha, 2, term=term, price=price, kinds=frozenset({"node"}))
    assert [s.cell for s in stages_only.stages] == [s.cell for s in guarded.stages]
    assert stages_only.reductions == guarded.reductions
    assert [(s.depth, s.connections) for s in cells_only.stages] == [(s.depth, s.connections) for s in guarded.stages]
    # each did change what it may change (else the checks above would hold trivially)
    assert [(s.depth, s.connections) for s in stages_only.stages] != [(s.depth, s.connections) for s in guarded.stages]
    assert [s.cell for s in cells_only.stages] + list(cells_only.reductions) != [
        s.cell for s in guarded.stages
    ] + list(guarded.reductions)
