"""How the prediction on a relaxed encoding relates to the architecture derived from it.

The search minimises `predictor(relaxed encoding)`, but what it ships is the discrete
architecture derived from that relaxation. The predictor was fitted on one-hot encodings
only, so on a relaxed one it is extrapolating; these functions measure by how much:
the relative gap between the two predictions, whether the relaxed prediction at least
ranks derived architectures correctly (Spearman), and, for layouts of independent
categorical blocks, how it compares to the expected latency of architectures sampled
from the relaxation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from predictor.model import LatencyPredictor


@torch.no_grad()
def relaxation_gap(
    model: LatencyPredictor, relaxed: torch.Tensor, derived: torch.Tensor
) -> dict[str, Any]:
    """Statistics of predictor(relaxed) vs predictor(derived), rows paired: [N, D] each."""
    r = model(relaxed).double().cpu().numpy()
    d = model(derived).double().cpu().numpy()
    gap = r / d - 1.0
    out: dict[str, Any] = {
        "n": int(len(r)),
        "relaxed_ms_mean": float(r.mean()),
        "derived_ms_mean": float(d.mean()),
        "mean_rel_gap": float(gap.mean()),
        "median_abs_rel_gap": float(np.median(np.abs(gap))),
        "max_abs_rel_gap": float(np.abs(gap).max()),
        "spearman": float("nan"),
    }
    if len(r) >= 3 and np.ptp(r) > 0 and np.ptp(d) > 0:
        out["spearman"] = float(stats.spearmanr(r, d).statistic)
    return out


def categorical_blocks_check(
    model: LatencyPredictor,
    blocks: Sequence[tuple[int, int]],
    *,
    temperatures: Sequence[float] = (0.1, 0.3, 1.0, 3.0),
    n: int = 64,
    samples: int = 32,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For an encoding made of independent categorical blocks (index ranges), per temperature:

    random logits, relaxed = softmax(logits / T) per block, derived = its argmax one-hot;
    reports `relaxation_gap` plus the gap to the mean prediction over `samples` discrete
    architectures drawn from the relaxation (what the relaxed encoding stands for).
    Low T is a nearly converged search, high T an early one.
    """
    gen = torch.Generator().manual_seed(seed)
    dim = model.dim
    rows = []
    for t in temperatures:
        relaxed = torch.zeros(n, dim)
        derived = torch.zeros(n, dim)
        draws = torch.zeros(samples, n, dim)
        for a, b in blocks:
            logits = torch.randn(n, b - a, generator=gen)
            p = torch.softmax(logits / t, dim=-1)
            relaxed[:, a:b] = p
            derived[torch.arange(n), a + p.argmax(-1)] = 1.0
            pick = torch.multinomial(p, samples, replacement=True, generator=gen).T  # [samples, n]
            draws[torch.arange(samples)[:, None], torch.arange(n)[None, :], a + pick] = 1.0
        row = {"temperature": float(t), **relaxation_gap(model, relaxed, derived)}
        with torch.no_grad():
            r = model(relaxed).double()
            expected = model(draws).double().mean(0)
        row["mean_rel_gap_to_expected"] = float((r / expected - 1.0).mean())
        row["median_abs_rel_gap_to_expected"] = float((r / expected - 1.0).abs().median())
        rows.append(row)
    return rows


@torch.no_grad()
def expectation_gap(
    model: LatencyPredictor, relaxed: torch.Tensor, samples: torch.Tensor
) -> dict[str, Any]:
    """predictor(relaxed) [N] against the mean prediction over its draws `samples` [N, K, D].

    The relaxed prediction's meaning is the expected latency of the architectures the
    relaxation describes; the gap is relaxed / expected - 1 (negative: relaxed too low).
    """
    r = model(relaxed).double().cpu().numpy()
    drawn = model(samples).double().cpu()
    e = drawn.mean(-1).numpy()
    # standard error of the K-draw mean, relative: the noise floor of each pair's gap
    sem = (drawn.std(-1) / np.sqrt(drawn.shape[-1])).numpy() / e
    gap = r / e - 1.0
    out: dict[str, Any] = {
        "n": int(len(r)),
        "samples": int(samples.shape[1]),
        "relaxed_ms_mean": float(r.mean()),
        "expected_ms_mean": float(e.mean()),
        "mean_gap": float(gap.mean()),
        "median_gap": float(np.median(gap)),
        "median_abs_gap": float(np.median(np.abs(gap))),
        "p90_abs_gap": float(np.quantile(np.abs(gap), 0.9)),
        "expected_spread": float(np.std(e) / np.mean(e)),
        "median_rel_sem": float(np.median(sem)),
        "spearman": float("nan"),
    }
    if len(r) >= 3 and np.ptp(r) > 0 and np.ptp(e) > 0:
        out["spearman"] = float(stats.spearmanr(r, e).statistic)
    return out


def _softplus_inverse(y: torch.Tensor, beta: float = 20.0) -> torch.Tensor:
    """x with softplus(x, beta) = y (y > 0), stable for large y."""
    return y + torch.log(-torch.expm1(-beta * y)) / beta


@torch.no_grad()
def _expected_ms(model: LatencyPredictor, samples: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    return torch.cat(
        [model(samples[i : i + chunk]).double().mean(-1).cpu() for i in range(0, len(samples), chunk)]
    )


@torch.no_grad()
def fit_relaxed_correction(
    model: LatencyPredictor,
    relaxed: torch.Tensor,
    samples: torch.Tensor,
    val_relaxed: torch.Tensor,
    val_samples: torch.Tensor,
    *,
    lambdas: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
) -> dict[str, Any]:
    """Calibrate `model` on relaxed encodings: set `relax_w` so that model(relaxed) is the
    mean of model(draws) (in place), and report what it did.

    `relaxed` [N, D] with the one-hot draws `samples` [N, K, D] it describes (drawn by the
    caller, who knows the space); `val_*` likewise, from other seeds, pick the ridge
    penalty. The term is linear in the per-group spread features (`spread_features`),
    which vanish on one-hot encodings: the ensemble's discrete predictions are unchanged.
    Fitted in closed form (ridge, float64) on the relative residual before the floor.
    """
    dev = model.relax_w.device
    model.relax_w.zero_()
    y_mean = float(model.y_mean)

    def problem(r: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = r.to(dev)
        expected = _expected_ms(model, s.to(dev))
        target = _softplus_inverse(expected / y_mean) - model.relative(r).double().cpu()
        return model.spread_features(r).double().cpu(), target, expected

    V, t, _ = problem(relaxed, samples)
    Vv, tv, ev = problem(val_relaxed, val_samples)
    scale = V.pow(2).mean(0).sqrt()
    scale = torch.where(scale > 1e-9, scale, torch.ones_like(scale))
    Z, Zv = V / scale, Vv / scale
    best: tuple[float, float, torch.Tensor] | None = None
    eye = torch.eye(Z.shape[1], dtype=Z.dtype)
    for lam in lambdas:
        w = torch.linalg.solve(Z.T @ Z + lam * len(Z) * eye, Z.T @ t)
        err = float((Zv @ w - tv).pow(2).mean())
        if best is None or err < best[0]:
            best = (err, float(lam), w)
    assert best is not None
    _, lam, w = best
    rv_before = model(val_relaxed.to(dev)).double().cpu()
    model.relax_w.copy_((w / scale).to(model.relax_w))
    rv_after = model(val_relaxed.to(dev)).double().cpu()
    return {
        "kind": "spread-linear",
        "term": "relax_w . ((x * (1 - x)) @ feature_matrix), relative latency, 0 on one-hot encodings",
        "n_points": int(len(relaxed)),
        "n_val_points": int(len(val_relaxed)),
        "samples_per_point": int(samples.shape[1]),
        "ridge_lambda": lam,
        "val_mean_gap_before": float((rv_before / ev - 1).mean()),
        "val_mean_gap_after": float((rv_after / ev - 1).mean()),
        "val_median_abs_gap_before": float((rv_before / ev - 1).abs().median()),
        "val_median_abs_gap_after": float((rv_after / ev - 1).abs().median()),
    }
