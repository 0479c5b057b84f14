"""scikit-learn baselines fitted on exactly the split the MLP sees.

- `lut`: ridge regression on the raw encoding in milliseconds: latency as a sum of per-op,
  per-position costs, which is the lookup table of ProxylessNAS/FBNet learned from whole
  networks.
- `random_forest`: nn-Meter's choice of regressor (on log latency).
- `gradient_boosting`: boosted trees on log latency.
- `sk_mlp`: sklearn's `MLPRegressor` on standardised inputs and log latency.

All but `lut` get the MLP's own input features (predictor.features), so the comparison
is between models, not between inputs. Each picks its one or two hyperparameters on the
validation split, the data the MLP uses for early stopping; none sees the test split.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from predictor.features import FeatureLayout

BASELINES: tuple[str, ...] = ("lut", "random_forest", "gradient_boosting", "sk_mlp")


@dataclass
class Baseline:
    """A fitted baseline: `predict_ms(X) -> ms`, with the hyperparameters it chose."""

    name: str
    predict_ms: Callable[[np.ndarray], np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _mape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p / y - 1.0)))


def _fit_lut(X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, seed: int) -> Baseline:
    best: tuple[float, Any, float] | None = None
    for alpha in (1e-2, 1e-1, 1.0, 10.0, 100.0):
        m = Ridge(alpha=alpha).fit(X, y)
        err = _mape(yv, np.maximum(m.predict(Xv), 1e-6))
        if best is None or err < best[0]:
            best = (err, m, alpha)
    assert best is not None
    model = best[1]
    return Baseline("lut", lambda Z: np.maximum(model.predict(Z), 1e-6), {"alpha": best[2]})


def _fit_forest(
    X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, seed: int
) -> Baseline:
    best: tuple[float, Any, Any] | None = None
    for max_features in (0.33, 1.0):
        m = RandomForestRegressor(
            n_estimators=200,
            max_features=max_features,
            min_samples_leaf=1,
            random_state=seed,
            n_jobs=1,
        ).fit(X, np.log(y))
        err = _mape(yv, np.exp(m.predict(Xv)))
        if best is None or err < best[0]:
            best = (err, m, max_features)
    assert best is not None
    model = best[1]
    return Baseline(
        "random_forest",
        lambda Z: np.exp(model.predict(Z)),
        {"n_estimators": 200, "max_features": best[2]},
    )


def _fit_boosting(
    X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, seed: int
) -> Baseline:
    def make(iters: int, depth: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=iters,
            learning_rate=0.1,
            max_depth=depth,
            min_samples_leaf=5,
            l2_regularization=1e-3,
            early_stopping=False,
            random_state=seed,
        )

    best: tuple[float, int, int] | None = None
    for depth in (3, 5):
        m = make(400, depth).fit(X, np.log(y))
        # The number of rounds is chosen on the validation split (staged predictions).
        errs = [_mape(yv, np.exp(p)) for p in m.staged_predict(Xv)]
        k = int(np.argmin(errs)) + 1
        if best is None or errs[k - 1] < best[0]:
            best = (errs[k - 1], depth, k)
    assert best is not None
    _, depth, k = best
    model = make(k, depth).fit(X, np.log(y))
    return Baseline(
        "gradient_boosting", lambda Z: np.exp(model.predict(Z)), {"max_depth": depth, "max_iter": k}
    )


def _fit_sk_mlp(
    X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray, seed: int
) -> Baseline:
    scaler = StandardScaler().fit(X)
    ly = np.log(y)
    mu, sd = float(ly.mean()), float(ly.std()) or 1.0
    best: tuple[float, Any, Any] | None = None
    for alpha in (1e-3, 1e-1):
        m = MLPRegressor(
            hidden_layer_sizes=(128, 128),
            alpha=alpha,
            learning_rate_init=1e-3,
            max_iter=300,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=20,
            random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(scaler.transform(X), (ly - mu) / sd)
        err = _mape(yv, np.exp(m.predict(scaler.transform(Xv)) * sd + mu))
        if best is None or err < best[0]:
            best = (err, m, alpha)
    assert best is not None
    model = best[1]
    return Baseline(
        "sk_mlp",
        lambda Z: np.exp(model.predict(scaler.transform(Z)) * sd + mu),
        {"hidden_layer_sizes": [128, 128], "alpha": best[2]},
    )


_FITTERS: dict[str, Callable[..., Baseline]] = {
    "lut": _fit_lut,
    "random_forest": _fit_forest,
    "gradient_boosting": _fit_boosting,
    "sk_mlp": _fit_sk_mlp,
}


def fit_baselines(
    X_train: np.ndarray,
    y_train_ms: np.ndarray,
    X_val: np.ndarray,
    y_val_ms: np.ndarray,
    *,
    features: FeatureLayout | None = None,
    seed: int = 0,
    names: Sequence[str] = BASELINES,
) -> dict[str, Baseline]:
    """Fit the named baselines on encodings; hyperparameters chosen on the validation split.

    The returned `predict_ms` functions take encodings, like the MLP.
    """
    out: dict[str, Baseline] = {}
    X = np.asarray(X_train, dtype=np.float64)
    Xv = np.asarray(X_val, dtype=np.float64)
    F, Fv = (features.transform(X), features.transform(Xv)) if features is not None else (X, Xv)
    for name in names:
        if name not in _FITTERS:
            raise ValueError(f"unknown baseline '{name}'; choose from {', '.join(BASELINES)}")
        t0 = time.perf_counter()
        raw = name == "lut" or features is None
        with threadpool_limits(limits=1):  # small problems; extra BLAS threads only contend
            b = _FITTERS[name](
                X if raw else F,
                np.asarray(y_train_ms),
                Xv if raw else Fv,
                np.asarray(y_val_ms),
                seed,
            )
        if not raw:
            assert features is not None
            inner = b.predict_ms
            b.predict_ms = lambda Z, f=inner: f(features.transform(Z))
        b.params["inputs"] = (
            "encoding" if raw else f"features ({features.kind if features else 'raw'})"
        )
        b.seconds = time.perf_counter() - t0
        out[name] = b
    return out
