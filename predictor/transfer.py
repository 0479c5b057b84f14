"""Adapt a predictor fitted on one target to another target of the same space.

(Over 400 lines on purpose: the adaptation methods share one cross-validation and one
report, and read best side by side.)

A new target should not cost a thousand profiles. What changes between two targets of one
space (two thread counts, another graph optimisation level, another CPU) is mostly a
scale, then the relative cost of some ops; what an architecture *is* (its ops, depths,
connections and how they add up) does not. So the known predictor's hidden layers, learned
from many profiles, are kept as they are, and only its output layer is refitted on the new
target's few profiles:

1. `scale`: one factor on the known predictor's output, fitted on relative error;
2. `ridge`: then every member's output layer (its weights on the last hidden layer, its
   bias, and its linear per-op term) refitted by weighted least squares on relative
   error, pulled towards the scaled known weights by two ridge penalties, one on the
   hidden-feature weights and one on the bias and per-op term (a new target differs by op
   costs, not one factor), both chosen by k-fold cross-validation on the new profiles.
   With few profiles the pulls win and the result stays near the scaled known predictor;
   with more, the new target's costs come through.
3. `blend` (the default): `ridge`, then, from 50 profiles on, averaged with a predictor
   fitted from scratch on the same rows, the share of each chosen by 3-fold
   cross-validation (LitePred-style selection between the known start and the new data,
   made continuous): the adapted predictor's hidden features were learned on another
   target and cap how close it can get; the scratch one keeps improving as profiles grow.
   The blend is one plain LatencyPredictor (the scratch members rewritten to the adapted
   one's standardisation and appended), so files and the search are unchanged.

`scale` and `ridge` are closed-form (deterministic, seconds). `finetune` (every layer
trained again from the known weights, early-stopped on the validation split) is kept for
comparison; docs/benchmarks.md ("Transfer to a new target, network v2") has the learning
curves that chose the default.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from predictor.baselines import fit_baselines
from predictor.dataset import MIN_EVAL, MIN_SAMPLES
from predictor.evaluate import MLP_NAME, FitResult, budget_split, dataset_summary, repeatability
from predictor.features import build_feature_layout
from predictor.metrics import regression_metrics
from predictor.model import LatencyPredictor, MLPConfig, deterministic, train_mlp
from targets.basics import UserError

METHODS = ("blend", "ridge", "scale", "finetune")
DEFAULT_METHOD = "blend"
BLEND_MIN_ROWS = MIN_SAMPLES  # fewer rows: a predictor from scratch is worse than none
BLEND_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)  # shares of the adapted predictor tried, in order
BLEND_FOLDS = 3
# Pulls tried by cross-validation: on the hidden-feature weights, and on the bias and per-op term.
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
LAMBDAS_OPS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FOLDS = 5
MIN_VAL = 5  # validation rows a scratch predictor needs to early-stop (predictor.dataset.MIN_EVAL)


@dataclass
class TransferInfo:
    """What the adaptation did (saved in the predictor header under "transfer")."""

    method: str
    n_adapt: int
    scale: float
    ridge_lambda: float | None = None  # pull on the hidden-feature weights; None: kept (scaled)
    ridge_lambda_ops: float | None = None  # pull on the bias and per-op term; None: kept
    cv_rel_rmse: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    blend_weight: float | None = None  # blend: share of the adapted predictor; None: not blended
    cv_blend_rel_rmse: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n_adapt": self.n_adapt,
            "scale": round(self.scale, 6),
            "ridge_lambda": self.ridge_lambda,
            "ridge_lambda_ops": self.ridge_lambda_ops,
            "cv_rel_rmse": {k: round(v, 5) for k, v in self.cv_rel_rmse.items()},
            "seconds": round(self.seconds, 3),
            "blend_weight": self.blend_weight,
            "cv_blend_rel_rmse": {k: round(v, 5) for k, v in self.cv_blend_rel_rmse.items()},
        }


def check_compatible(init: LatencyPredictor, space_key: str, encoding_dim: int, what: str) -> None:
    """UserError unless the known predictor was fitted on the same space as the new profiles."""
    h = init.header
    if h.get("space_key") != space_key or init.dim != encoding_dim:
        raise UserError(
            f"{what} was fitted on space '{h.get('space_name')}' ({str(h.get('space_key'))[:12]}), "
            f"the new profiles are of another space ({space_key[:12]}); --init needs a predictor "
            "of the same space (fit one with `hwnas predictor fit` on that space's profiles)"
        )


def _parts(model: LatencyPredictor, X: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member the design of the output layer [K, N, H+1+F] (hidden, 1, features) and
    the current parameters [K, H+1+F]."""
    with torch.no_grad():
        x = model.featurise(torch.as_tensor(np.asarray(X), dtype=torch.float32)).double()
        k = model.cfg.members
        h = x.unsqueeze(0).expand(k, -1, -1)
        for w, b in zip(list(model.weights)[:-1], list(model.biases)[:-1], strict=True):
            h = model._act(torch.baddbmm(b.double().unsqueeze(1), h, w.double()))
        ones = torch.ones(k, x.shape[0], 1, dtype=torch.float64)
        cols = [h, ones]
        params = [model.weights[-1].double().squeeze(-1), model.biases[-1].double()]
        if model.skip is not None:
            cols.append(x.unsqueeze(0).expand(k, -1, -1))
            params.append(model.skip.double().squeeze(-1))
        return torch.cat(cols, dim=2), torch.cat(params, dim=1)


def _set_output(model: LatencyPredictor, theta: torch.Tensor) -> None:
    """Write per-member output-layer parameters [K, H+1+F] back into the model."""
    hidden = model.weights[-1].shape[1]
    with torch.no_grad():
        model.weights[-1].copy_(theta[:, :hidden].unsqueeze(-1).float())
        model.biases[-1].copy_(theta[:, hidden : hidden + 1].float())
        if model.skip is not None:
            model.skip.copy_(theta[:, hidden + 1 :].unsqueeze(-1).float())


def _fit_scale(pred: np.ndarray, t: np.ndarray) -> float:
    """argmin_a sum(((a * pred - t) / t)^2), the factor on relative error."""
    r = pred / t
    return float(np.sum(r) / max(np.sum(r * r), 1e-12))


def _ridge(
    phi: torch.Tensor, t: torch.Tensor, theta0: torch.Tensor, pen: torch.Tensor
) -> torch.Tensor:
    """Per member: argmin sum(((phi theta - t) / t)^2) + sum(pen * (theta - theta0)^2).

    `pen` [H+1+F] is a per-coordinate pull; an infinite pull keeps that coordinate at theta0.
    """
    free = torch.isfinite(pen)
    if not bool(free.any()):
        return theta0.clone()
    p = phi[:, :, free]
    w = (1.0 / t**2).reshape(1, -1, 1)
    a = p.transpose(1, 2) @ (p * w)
    resid = t.reshape(1, -1) - torch.einsum("knd,kd->kn", phi, theta0)
    rhs = (p * w).transpose(1, 2) @ resid.unsqueeze(-1)
    a = a + torch.diag(pen[free]).expand_as(a)
    theta = theta0.clone()
    theta[:, free] += torch.linalg.solve(a, rhs).squeeze(-1)
    return theta


def _penalty(n_hidden: int, n_total: int, lam_hidden: float, lam_ops: float) -> torch.Tensor:
    """Pull per output-layer coordinate: `lam_hidden` on the weights of the known hidden
    features, `lam_ops` on the bias and the linear per-op term."""
    pen = torch.full((n_total,), lam_ops, dtype=torch.float64)
    pen[:n_hidden] = lam_hidden
    return pen


def _ensemble(phi: torch.Tensor, theta: torch.Tensor) -> np.ndarray:
    """The model's output (relative to y_mean) from the output-layer design: mean over
    members, then the same smooth floor as LatencyPredictor.forward."""
    rel = torch.einsum("knd,kd->kn", phi, theta).mean(0)
    return torch.nn.functional.softplus(rel, beta=20.0).numpy()


def _lam_key(lam_hidden: float, lam_ops: float) -> str:
    if math.isinf(lam_ops):
        return "scale only"
    hidden = "kept" if math.isinf(lam_hidden) else f"{lam_hidden:g}"
    return f"hidden {hidden}, ops {lam_ops:g}"


def _rel_rmse(pred: np.ndarray, t: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred - t) / t) ** 2)))


def adapt(
    init: LatencyPredictor,
    X: np.ndarray,
    y_ms: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    X_val: np.ndarray | None = None,
    y_val_ms: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[LatencyPredictor, TransferInfo]:
    """A copy of `init` adapted to profiles (X, y_ms) of a new target; `init` is untouched.

    `ridge` and `scale` fit on (X, y) together with (X_val, y_val) when given (they choose
    their one hyperparameter by cross-validation); `finetune` early-stops on the val rows.
    """
    if method not in METHODS:
        raise UserError(f"unknown transfer method '{method}'; choose from {', '.join(METHODS)}")
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y_ms, dtype=np.float64)
    if method == "finetune":
        if X_val is None or y_val_ms is None:
            raise UserError("transfer method 'finetune' needs validation rows")
        model, scale = _finetune(init, X, y, np.asarray(X_val), np.asarray(y_val_ms), seed)
        info = TransferInfo(method, len(X) + len(X_val), scale)
        info.seconds = time.perf_counter() - t0
        return model, info
    with deterministic(seed):  # one torch thread: small solves, and a busy host
        ridge_method = "ridge" if method == "blend" else method
        model, info = _adapt_output(init, X, y, ridge_method, X_val, y_val_ms, seed)
    info.method = method
    n_val = 0 if X_val is None else len(X_val)
    if method == "blend" and len(X) + n_val >= BLEND_MIN_ROWS and n_val >= MIN_VAL:
        X_val, y_val = np.asarray(X_val, dtype=np.float32), np.asarray(y_val_ms, dtype=np.float64)
        weight, scores = _blend_weight(
            init, np.concatenate([X, X_val]), np.concatenate([y, y_val]), info, seed
        )
        info.blend_weight, info.cv_blend_rel_rmse = weight, scores
        if weight < 1.0:
            scratch = _scratch(init, X, y, X_val, y_val, seed)
            model = scratch if weight == 0.0 else _merge(model, scratch, weight)
    info.seconds = time.perf_counter() - t0
    return model, info


def _blend_weight(
    init: LatencyPredictor, X: np.ndarray, y: np.ndarray, info: TransferInfo, seed: int
) -> tuple[float, dict[str, float]]:
    """The share of the adapted predictor in its blend with one fitted from scratch, chosen
    by k-fold cross-validation on the new rows (relative RMSE; ties go to the adapted one).

    Each fold refits both on the other folds: the adapted one with the pulls already
    chosen, the scratch one early-stopped on 15 % of them. With few rows the adapted one
    wins; as the rows grow the scratch one takes over where the known target misleads.
    """
    pen_h = math.inf if info.ridge_lambda is None else info.ridge_lambda
    pen_o = math.inf if info.ridge_lambda_ops is None else info.ridge_lambda_ops
    y_mean = float(init.y_mean)
    t = y / y_mean
    with deterministic(seed):
        phi, theta = _parts(init, X)
    pen = _penalty(init.weights[-1].shape[1], theta.shape[1], pen_h, pen_o)
    rng = np.random.default_rng(seed + 1)
    folds = rng.permutation(len(X)) % BLEND_FOLDS
    pred_a, pred_b = np.empty(len(X)), np.empty(len(X))
    for f in range(BLEND_FOLDS):
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        with deterministic(seed):
            a = _fit_scale(_ensemble(phi[:, tr], theta), t[tr])
            th = _ridge(phi[:, tr], torch.as_tensor(t[tr]), a * theta, pen)
            pred_a[te] = _ensemble(phi[:, te], th)
        inner = rng.permutation(tr)
        n_val = max(MIN_VAL, round(0.15 * len(tr)))
        val, fit = inner[:n_val], inner[n_val:]
        scratch = _scratch(init, X[fit], y[fit], X[val], y[val], seed)
        pred_b[te] = scratch.predict_ms(X[te]) / y_mean
    scores = {f"{w:g}": _rel_rmse(w * pred_a + (1 - w) * pred_b, t) for w in BLEND_WEIGHTS}
    best = min(BLEND_WEIGHTS, key=lambda w: (scores[f"{w:g}"], -w))
    return best, scores


def _scratch(
    init: LatencyPredictor,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
) -> LatencyPredictor:
    """A predictor of the new target from its rows alone: the same features and network
    shape as `init`, trained as `hwnas predictor fit` does (early-stopped on the val rows)."""
    cfg = MLPConfig(
        hidden=init.cfg.hidden,
        members=init.cfg.members,
        activation=init.cfg.activation,
        linear_skip=init.cfg.linear_skip,
    )
    model, _ = train_mlp(X, y, X_val, y_val, init.features, cfg, seed=seed)
    return model


def _merge(a: LatencyPredictor, b: LatencyPredictor, weight_a: float) -> LatencyPredictor:
    """One LatencyPredictor whose output is weight_a * a + (1 - weight_a) * b (before the
    positive floor): b's members, rewritten to a's feature standardisation and latency
    scale, appended to a's, each member's output layer weighted so the ensemble mean is
    the blend. The file format and the search's differentiable path stay as they are."""
    if not torch.equal(a.feature_matrix, b.feature_matrix) or a.cfg.hidden != b.cfg.hidden:
        raise ValueError("blending needs two predictors with the same features and layers")
    ka, kb = a.cfg.members, b.cfg.members
    cfg = dataclasses.replace(a.cfg, members=ka + kb)
    out = LatencyPredictor(a.features, cfg)
    with torch.no_grad():
        for name in ("feature_matrix", "x_mean", "x_std", "y_mean"):
            getattr(out, name).copy_(getattr(a, name))
        # b's standardised features from a's: z_b = z_a * (s_a / s_b) + (m_a - m_b) / s_b
        ratio = (a.x_std / b.x_std).double()
        shift = ((a.x_mean - b.x_mean) / b.x_std).double()
        wb = [w.double().clone() for w in b.weights]
        bb = [v.double().clone() for v in b.biases]
        bb[0] = bb[0] + torch.einsum("f,kfh->kh", shift, wb[0])
        wb[0] = wb[0] * ratio.reshape(1, -1, 1)
        skb = None
        if b.skip is not None:
            bb[-1] = bb[-1] + torch.einsum("f,kfo->ko", shift, b.skip.double())
            skb = b.skip.double() * ratio.reshape(1, -1, 1)
        # b's output relative to a's mean latency, and the blend weights per member
        ra = weight_a * (ka + kb) / ka
        rb = (1.0 - weight_a) * (ka + kb) / kb * float(b.y_mean / a.y_mean)
        last = len(out.weights) - 1
        for i in range(len(out.weights)):
            wa, ba = a.weights[i].double(), a.biases[i].double()
            wi, bi = wb[i], bb[i]
            if i == last:
                wa, ba, wi, bi = ra * wa, ra * ba, rb * wi, rb * bi
            out.weights[i].copy_(torch.cat([wa, wi]).float())
            out.biases[i].copy_(torch.cat([ba, bi]).float())
        if out.skip is not None and a.skip is not None and skb is not None:
            out.skip.copy_(torch.cat([ra * a.skip.double(), rb * skb]).float())
    out.eval()
    out.requires_grad_(False)
    return out


def _adapt_output(
    init: LatencyPredictor,
    X: np.ndarray,
    y: np.ndarray,
    method: str,
    X_val: np.ndarray | None,
    y_val_ms: np.ndarray | None,
    seed: int,
) -> tuple[LatencyPredictor, TransferInfo]:
    """`scale` and `ridge`: refit the output layer in closed form (see the module doc)."""
    if X_val is not None and y_val_ms is not None and len(X_val):
        X = np.concatenate([X, np.asarray(X_val, dtype=np.float32)])
        y = np.concatenate([y, np.asarray(y_val_ms, dtype=np.float64)])
    if len(X) < 2 or np.any(y <= 0):
        raise UserError("adapting a predictor needs at least 2 positive latencies")
    model = copy.deepcopy(init)
    model.header = {}
    y_mean = float(model.y_mean)
    t = torch.as_tensor(y / y_mean, dtype=torch.float64)
    phi, theta = _parts(model, X)
    scale = _fit_scale(_ensemble(phi, theta), t.numpy())
    info = TransferInfo(method, len(X), scale)
    n_hidden = model.weights[-1].shape[1]
    best: tuple[float, float] = (math.inf, math.inf)  # (hidden, ops): the scaled known model
    if method == "ridge" and len(X) >= 2 * FOLDS:
        folds = np.random.default_rng(seed).permutation(len(X)) % FOLDS
        tn = t.numpy()
        scales = [
            _fit_scale(_ensemble(phi[:, folds != f], theta), tn[folds != f]) for f in range(FOLDS)
        ]
        scores: dict[str, float] = {}
        for lam_h in (math.inf, *LAMBDAS):
            for lam_o in (math.inf, *LAMBDAS_OPS):
                if math.isinf(lam_o) and not math.isinf(lam_h):
                    continue  # the hidden weights move only with the per-op term free
                pen = _penalty(n_hidden, theta.shape[1], lam_h, lam_o)
                errs = np.empty(len(X))
                for f in range(FOLDS):
                    tr, te = folds != f, folds == f
                    th = _ridge(phi[:, tr], t[tr], scales[f] * theta, pen)
                    errs[te] = (_ensemble(phi[:, te], th) - tn[te]) / tn[te]
                scores[_lam_key(lam_h, lam_o)] = float(np.sqrt(np.mean(errs**2)))
                if scores[_lam_key(lam_h, lam_o)] < scores.get(_lam_key(*best), math.inf):
                    best = (lam_h, lam_o)
        info.cv_rel_rmse = scores
    pen = _penalty(n_hidden, theta.shape[1], *best)
    new_theta = _ridge(phi, t, scale * theta, pen)
    _set_output(model, new_theta)
    model.eval()
    model.requires_grad_(False)
    info.ridge_lambda = None if math.isinf(best[0]) else best[0]
    info.ridge_lambda_ops = None if math.isinf(best[1]) else best[1]
    return model, info


def _finetune(
    init: LatencyPredictor,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    lr: float = 1e-3,
    max_epochs: int = 200,
    patience: int = 30,
) -> tuple[LatencyPredictor, float]:
    """Every layer trained again from the (scaled) known weights, early-stopped on val."""
    model = copy.deepcopy(init)
    model.header = {}
    y_mean = float(model.y_mean)
    with deterministic(seed):
        model.requires_grad_(True)
        model.train()
        phi, theta = _parts(model, X)
        scale = _fit_scale(_ensemble(phi, theta), y / y_mean)
        _set_output(model, scale * theta)
        xs = model.featurise(torch.as_tensor(X, dtype=torch.float32)).detach()
        xv = model.featurise(torch.as_tensor(X_val, dtype=torch.float32)).detach()
        t = torch.as_tensor(y / y_mean, dtype=torch.float32)
        tv = torch.as_tensor(y_val / y_mean, dtype=torch.float32)
        opt = torch.optim.Adam([p for p in model.parameters()], lr=lr)
        gen = torch.Generator().manual_seed(seed)
        best, best_state, since = math.inf, copy.deepcopy(model.state_dict()), 0
        bs = max(8, min(64, len(X)))
        for _ in range(max_epochs):
            perm = torch.randperm(len(X), generator=gen)
            for i in range(0, len(X), bs):
                idx = perm[i : i + bs]
                out = model.members_output(xs[idx])
                loss = (((out - t[idx]) / t[idx]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                val = float((((model.members_output(xv).mean(0) - tv) / tv) ** 2).mean())
            if val < best * (1 - 1e-4):
                best, best_state, since = val, copy.deepcopy(model.state_dict()), 0
            else:
                since += 1
                if since >= patience:
                    break
        model.load_state_dict(best_state)
    model.eval()
    model.requires_grad_(False)
    return model, scale


KNOWN_AS_IS = "known predictor as is"


def transfer_predictor(
    init: LatencyPredictor,
    ds: Any,
    *,
    method: str = DEFAULT_METHOD,
    baselines: Any = (),
    seed: int = 0,
    max_train: int | None = None,
    init_path: str = "",
) -> Any:
    """`fit_predictor`'s counterpart for `predictor fit --init`: adapt `init` to dataset `ds`
    (train + validation rows, at most `max_train` of them), score it on the test split.

    The report puts next to it the known predictor unchanged and the baselines fitted from
    scratch on the same rows, so the gain of transferring is visible.
    """
    check_compatible(init, ds.space_key, ds.dim, init_path or "the --init predictor")
    t0 = time.perf_counter()
    tr, va = budget_split(ds, max_train)
    te = ds.indices("test")
    model, info = adapt(
        init,
        ds.X[tr],
        ds.latency_ms[tr],
        method=method,
        X_val=ds.X[va],
        y_val_ms=ds.latency_ms[va],
        seed=seed,
    )
    report: dict[str, Any] = {
        "dataset": dataset_summary(ds, n_train=len(tr), n_val=len(va), n_test=len(te)),
        "split": "test",
        "test": {},
        "transfer": {
            "from": init_path,
            "from_target": init.header.get("target_name"),
            "from_fingerprint_key": init.header.get("fingerprint_key"),
            **info.to_json(),
        },
        "seed": seed,
    }
    if len(te) >= MIN_EVAL:
        preds = {MLP_NAME: model.predict_ms(ds.X[te]), KNOWN_AS_IS: init.predict_ms(ds.X[te])}
        if baselines:
            layout = build_feature_layout(ds.encoding_layout, "counts")
            fitted = fit_baselines(
                ds.X[tr], ds.latency_ms[tr], ds.X[va], ds.latency_ms[va],
                features=layout, seed=seed, names=baselines,
            )  # fmt: skip
            preds.update({name: b.predict_ms(ds.X[te]) for name, b in fitted.items()})
            report["baselines"] = {
                n: {"params": b.params, "seconds": round(b.seconds, 2)} for n, b in fitted.items()
            }
        report["test"] = {n: regression_metrics(ds.latency_ms[te], p) for n, p in preds.items()}
        report["repeatability"] = repeatability(ds, te, preds[MLP_NAME])
    else:
        report["note"] = (
            f"only {len(te)} architectures fall in the test split: too few to score; judge the "
            "predictor on a held-out set (`hwnas predictor eval FILE --db HELDOUT.db --split all`)"
        )
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return FitResult(model=model, report=report)
