"""Adapting a known target's predictor to a new target (predictor/transfer.py), on synthetic data.

No timing: the "targets" are closed-form latency functions of a synthetic space, so every
figure here is the same on any machine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from predictor.features import build_feature_layout
from predictor.metrics import regression_metrics
from predictor.model import LatencyPredictor, MLPConfig, train_mlp
from predictor.synthetic import SyntheticSpace
from predictor.transfer import _penalty, _ridge, adapt
from targets.basics import UserError

SPACE = SyntheticSpace()


def _sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([SPACE.sample(rng) for _ in range(n)]).astype(np.float32)


def _known_latency(X: np.ndarray) -> np.ndarray:
    return np.array([SPACE.latency_ms(x) for x in X])


def _new_latency(X: np.ndarray) -> np.ndarray:
    """Another target: 1.7x slower, its 5x5 separable convolutions dearer by a fixed cost
    each (an op cost the known target does not have, not one factor)."""
    layout = SPACE.layout()
    sep5 = np.array([i for i, n in enumerate(layout) if n.endswith("syn_sepconv5")])
    base = _known_latency(X)
    return 1.7 * base + 0.1 * float(np.mean(base)) * X[:, sep5].sum(1)


@pytest.fixture(scope="module")
def known() -> LatencyPredictor:
    X, Xv = _sample(400, 1), _sample(80, 2)
    layout = build_feature_layout(SPACE.layout(), "counts")
    cfg = MLPConfig(members=2, max_epochs=80)
    model, _ = train_mlp(X, _known_latency(X), Xv, _known_latency(Xv), layout, cfg, seed=0)
    return model


def test_ridge_learns_op_costs_the_known_target_lacks(known: LatencyPredictor) -> None:
    X, held = _sample(60, 3), _sample(300, 4)
    y, y_held = _new_latency(X), _new_latency(held)
    scaled, s_info = adapt(known, X, y, method="scale", seed=0)
    model, info = adapt(known, X, y, method="ridge", seed=0)
    before = regression_metrics(y_held, scaled.predict_ms(held))["mape"]
    after = regression_metrics(y_held, model.predict_ms(held))["mape"]
    # The known predictor itself is ~4 % off its own target here.
    assert after < 0.6 * before and after < 6.0, (before, after)
    # The per-op term moved (its pull was chosen finite by cross-validation).
    assert info.ridge_lambda_ops is not None and info.n_adapt == 60
    assert set(info.to_json()) >= {"ridge_lambda", "ridge_lambda_ops", "cv_rel_rmse", "scale"}
    assert 1.7 < s_info.scale < 2.6


def test_a_scaled_target_keeps_the_known_predictor_scaled(known: LatencyPredictor) -> None:
    """A target exactly 2x the known predictor: the adaptation is the known one, doubled."""
    X, held = _sample(40, 5), _sample(100, 6)
    model, info = adapt(known, X, 2.0 * known.predict_ms(X), seed=0)
    assert info.scale == pytest.approx(2.0, rel=0.02)
    assert np.allclose(model.predict_ms(held), 2.0 * known.predict_ms(held), rtol=0.01)


def test_same_seed_same_adaptation_and_init_untouched(known: LatencyPredictor) -> None:
    X, held = _sample(50, 7), _sample(20, 8)
    before = known.predict_ms(held)
    a, _ = adapt(known, X, _new_latency(X), seed=3)
    b, _ = adapt(known, X, _new_latency(X), seed=3)
    assert np.array_equal(a.predict_ms(held), b.predict_ms(held))
    assert np.array_equal(known.predict_ms(held), before)


def test_an_infinite_pull_keeps_its_coordinates() -> None:
    gen = torch.Generator().manual_seed(0)
    phi = torch.rand(2, 30, 6, generator=gen, dtype=torch.float64)
    theta0 = torch.rand(2, 6, generator=gen, dtype=torch.float64)
    t = torch.rand(30, generator=gen, dtype=torch.float64) + 1.0
    pen = _penalty(3, 6, math.inf, 0.01)
    assert pen.tolist() == [math.inf] * 3 + [0.01] * 3
    theta = _ridge(phi, t, theta0, pen)
    assert torch.equal(theta[:, :3], theta0[:, :3]) and not torch.allclose(
        theta[:, 3:], theta0[:, 3:]
    )
    assert torch.equal(_ridge(phi, t, theta0, _penalty(3, 6, math.inf, math.inf)), theta0)
    # A huge pull stays at theta0; a tiny one fits the rows better than theta0 does.
    near = _ridge(phi, t, theta0, _penalty(3, 6, 1e9, 1e9))
    assert torch.allclose(near, theta0, atol=1e-6)
    free = _ridge(phi, t, theta0, _penalty(3, 6, 1e-9, 1e-9))

    def loss(th: torch.Tensor) -> float:
        return float((((torch.einsum("knd,kd->kn", phi, th) - t) / t) ** 2).sum())

    assert loss(free) < loss(theta0)


def test_unknown_method_and_bad_latencies_are_user_errors(known: LatencyPredictor) -> None:
    X = _sample(20, 9)
    with pytest.raises(UserError, match="unknown transfer method"):
        adapt(known, X, _new_latency(X), method="magic")
    with pytest.raises(UserError, match="positive"):
        adapt(known, X, -_new_latency(X))


def test_blend_is_one_predictor_averaging_the_adapted_and_a_scratch_one(
    known: LatencyPredictor,
) -> None:
    """`blend` returns a plain LatencyPredictor (one file, differentiable for the search)
    whose output is the average of two models fitted with different standardisations."""
    from predictor.transfer import _merge, _scratch

    X, Xv, held = _sample(60, 10), _sample(15, 11), _sample(50, 12)
    y, yv = _new_latency(X), _new_latency(Xv)
    adapted, _ = adapt(known, X, y, method="ridge", X_val=Xv, y_val_ms=yv, seed=0)
    scratch = _scratch(known, X, y, Xv, yv, seed=0)
    assert not torch.equal(scratch.x_mean, adapted.x_mean)
    merged = _merge(adapted, scratch, 0.25)
    assert merged.cfg.members == adapted.cfg.members + scratch.cfg.members
    x = torch.as_tensor(held)
    with torch.no_grad():
        want = (
            0.25 * adapted.relative(x) * adapted.y_mean
            + 0.75 * scratch.relative(x) * scratch.y_mean
        )
        got = merged.relative(x) * merged.y_mean
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # By default `adapt` blends the two once there are 50 rows, the share chosen by
    # cross-validation: here the target is the known one plus an op cost, which the
    # adapted predictor learns from few rows and a scratch one does not, so it keeps most.
    model, info = adapt(known, X, y, X_val=Xv, y_val_ms=yv, seed=0)
    assert info.method == "blend" and info.n_adapt == 75
    assert info.blend_weight is not None and info.blend_weight >= 0.75, info.cv_blend_rel_rmse
    assert set(info.cv_blend_rel_rmse) == {"1", "0.75", "0.5", "0.25", "0"}
    if info.blend_weight < 1:
        assert model.cfg.members == adapted.cfg.members + scratch.cfg.members
    after = regression_metrics(_new_latency(held), model.predict_ms(held))["mape"]
    alone = regression_metrics(_new_latency(held), scratch.predict_ms(held))["mape"]
    assert after < alone, (after, alone)
    # ... and is differentiable in a relaxed encoding, as the search needs.
    relaxed = torch.full((1, held.shape[1]), 0.3, requires_grad=True)
    model(relaxed).sum().backward()
    assert relaxed.grad is not None and torch.isfinite(relaxed.grad).all()
    # Too few rows for a scratch predictor: the adapted one alone.
    small, info = adapt(known, X[:30], y[:30], X_val=Xv[:5], y_val_ms=yv[:5], seed=0)
    assert info.blend_weight is None and small.cfg.members == known.cfg.members
