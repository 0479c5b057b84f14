"""Fit a predictor and its baselines on one split, and score them honestly side by side.

Honest means: every figure is on test architectures no model (nor any hyperparameter
choice) has seen; the baselines get the same training and validation rows as the MLP;
and next to the predictions stands the measurement's own repeatability, i.e. the same
metrics for a second measurement of the same test architectures (another process, later),
with the MLP scored on exactly those architectures too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from predictor.baselines import BASELINES, fit_baselines
from predictor.dataset import MIN_EVAL, Dataset, check_splits
from predictor.features import build_feature_layout
from predictor.metrics import (
    MIN_FOR_STATISTICS,
    regression_metrics,
)
from predictor.model import LatencyPredictor, MLPConfig, train_mlp
from predictor.threads import single_threaded
from targets.basics import UserError
from targets.progress import Progress

MLP_NAME = "mlp"
REMEASURE = "re-measure"
MLP_ON_REPEATS = "mlp (same archs)"
REMEASURE_ALL = "re-measure (all splits)"


@dataclass
class FitResult:
    """A fitted predictor and the report on it (JSON-able, also stored in the file header)."""

    model: LatencyPredictor
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> dict[str, dict[str, Any]]:
        return table_rows(self.report)


def budget_split(ds: Dataset, budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows; with `budget`, at most `budget` of them in total.

    The budget counts every measured architecture the fit consumes (validation included),
    split in the store's train:val proportion; smaller budgets take nested subsets.
    """
    tr, va = ds.indices("train"), ds.indices("val")
    if budget is None:
        return tr, va
    if budget < 4 * MIN_EVAL + MIN_EVAL:
        raise UserError(
            f"a training budget of {budget} architectures is too small; use at least {5 * MIN_EVAL}"
        )
    share = len(va) / max(1, len(tr) + len(va))
    n_va = max(MIN_EVAL, int(round(budget * share)))
    n_tr = budget - n_va
    if n_tr > len(tr) or n_va > len(va):
        raise UserError(
            f"a training budget of {budget} needs {n_tr} train and {n_va} validation architectures; "
            f"the store has {len(tr)} and {len(va)}: profile more or lower --max-train"
        )
    return tr[:n_tr], va[:n_va]


@single_threaded
def fit_predictor(
    ds: Dataset,
    *,
    cfg: MLPConfig | None = None,
    features: str = "counts",
    baselines: Sequence[str] = BASELINES,
    seed: int = 0,
    max_train: int | None = None,
    time_budget_s: float | None = None,
    progress: bool = False,
    device: Any = "cpu",
) -> FitResult:
    """Fit the MLP (and baselines) on the train split, early-stop on val, score on test.

    `progress`: a bar (terminal) or a line now and then (elsewhere) on stderr, counting
    MLP epochs (at most cfg.max_epochs; early stopping ends sooner), then each baseline.
    """
    check_splits(ds)
    cfg = cfg or MLPConfig()
    t0 = time.perf_counter()
    tr, va = budget_split(ds, max_train)
    te = ds.indices("test")
    layout = build_feature_layout(ds.encoding_layout, features)
    bar = Progress(cfg.max_epochs + len(baselines), "fit mlp", unit="step", enabled=progress)
    try:
        model, info = train_mlp(
            ds.X[tr],
            ds.latency_ms[tr],
            ds.X[va],
            ds.latency_ms[va],
            layout,
            cfg,
            seed=seed,
            time_budget_s=time_budget_s,
            on_epoch=bar.update,
            device=device,
        )
        preds = {MLP_NAME: model.predict_ms(ds.X[te])}
        fitted = {}
        for i, name in enumerate(baselines):
            bar.desc = f"fit {name}"
            bar.update(cfg.max_epochs + i)
            fitted.update(
                fit_baselines(
                    ds.X[tr],
                    ds.latency_ms[tr],
                    ds.X[va],
                    ds.latency_ms[va],
                    features=layout,
                    seed=seed,
                    names=(name,),
                )
            )
        bar.update(cfg.max_epochs + len(baselines))
    finally:
        bar.close()
    for name, b in fitted.items():
        preds[name] = b.predict_ms(ds.X[te])
    report: dict[str, Any] = {
        "dataset": dataset_summary(ds, n_train=len(tr), n_val=len(va), n_test=len(te)),
        "split": "test",
        "test": {name: regression_metrics(ds.latency_ms[te], p) for name, p in preds.items()},
        "repeatability": repeatability(ds, te, preds[MLP_NAME]),
        "mlp": {
            "config": cfg.to_json(),
            "features": layout.kind,
            "n_features": layout.dim,
            "training": info.to_json(),
        },
        "baselines": {
            name: {"params": b.params, "seconds": round(b.seconds, 2)} for name, b in fitted.items()
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "seed": seed,
    }
    return FitResult(model=model, report=report)


def evaluate(
    model: LatencyPredictor,
    ds: Dataset,
    split: str = "test",
    fitted_on: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score a saved predictor on a split of a dataset (plus the repeatability floor).

    `ds` should be loaded with the predictor's own reference baseline (its header's), so
    its labels are the drift-corrected latencies; the raw stored latencies are scored too.
    `fitted_on` (the header's short hashes of train + val architectures) sets apart the
    architectures the predictor was fitted on: accuracy on them is no test.
    """
    idx = ds.indices(split)
    if len(idx) < MIN_EVAL:
        raise UserError(
            f"only {len(idx)} architectures in the {split} split of {ds.db}; {MIN_EVAL} are needed to report "
            "accuracy (use --split all for a store the predictor was not trained on)"
        )
    seen = set(fitted_on) if fitted_on is not None else set()
    in_train = np.array([ds.hashes[i][:16] in seen for i in idx], dtype=bool)
    held, trained = idx[~in_train], idx[in_train]
    main = held if len(held) else trained
    pred_all = model.predict_ms(ds.X[idx])
    pred = {int(i): float(p) for i, p in zip(idx, pred_all, strict=True)}

    def scores(rows: np.ndarray) -> dict[str, Any]:
        p = np.array([pred[int(i)] for i in rows])
        out = {"label": regression_metrics(ds.latency_ms[rows], p)}
        if ds.raw_ms is not None:
            out["raw"] = regression_metrics(ds.raw_ms[rows], p)
        return out

    main_scores = scores(main)
    corrected = ds.stats.get("label") == "reference"
    report: dict[str, Any] = {
        "dataset": dataset_summary(ds, n_test=len(main)),
        "split": split,
        "comparison": "drift-corrected" if corrected else "raw",
        "test": {MLP_NAME: main_scores["label"]},
        "raw": {MLP_NAME: main_scores.get("raw", main_scores["label"])},
        "training_rows": {
            "known": fitted_on is not None,
            "n": int(len(trained)),
            "of": int(len(idx)),
            "all": bool(len(trained) and not len(held)),
        },
        "repeatability": repeatability(ds, main, np.array([pred[int(i)] for i in main])),
    }
    if len(trained) and len(held):
        t = scores(trained)
        report["training_rows"]["metrics"] = t["label"]
        report["training_rows"]["raw"] = t.get("raw", t["label"])
    return report


def repeatability(ds: Dataset, idx: np.ndarray, mlp_pred: np.ndarray) -> dict[str, Any]:
    """The same metrics for a re-measurement of the scored architectures, and the MLP on those."""
    rep = ds.repeat_ms[idx]
    have = ~np.isnan(rep)
    spread = ds.spread[idx]
    out: dict[str, Any] = {
        "n": int(have.sum()),
        "median_within_run_spread": None
        if np.all(np.isnan(spread))
        else float(np.nanmedian(spread)),
    }
    if have.sum() >= 1:
        truth = ds.latency_ms[idx][have]
        out[REMEASURE] = regression_metrics(truth, rep[have])
        out[MLP_ON_REPEATS] = regression_metrics(truth, mlp_pred[have])
    everywhere = ~np.isnan(ds.repeat_ms)
    if everywhere.sum() >= 1 and everywhere.sum() > have.sum():
        # Repeatability is a property of the measurement, not of the split: more rows, a firmer figure.
        out[REMEASURE_ALL] = regression_metrics(ds.latency_ms[everywhere], ds.repeat_ms[everywhere])
    if have.sum() < MIN_FOR_STATISTICS:
        out["note"] = (
            f"{int(have.sum())} of these architectures were measured again; re-measure some "
            f"(`hwnas db repeat --db {ds.db}{_target_option(ds)} -n 200`) to see how close the predictor gets to "
            "the measurement's own "
            "repeatability"
        )
    return out


def _target_option(ds: Dataset) -> str:
    """` --target FILE` when the target came from a file (db repeat cannot resolve its name)."""
    ref = str(ds.stats.get("target_ref") or "")
    return f" --target {ref}" if ref.endswith(".toml") else ""


def dataset_summary(ds: Dataset, **counts: int) -> dict[str, Any]:
    return {
        "db": ds.db,
        "target_name": ds.target_name,
        "space_name": ds.space_name,
        "space_key": ds.space_key,
        "fingerprint_key": ds.fingerprint_key,
        "architectures": len(ds),
        "splits": ds.counts(),
        **counts,
        **ds.stats,
    }


def table_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = dict(report.get("test", {}))
    rep = report.get("repeatability") or {}
    if REMEASURE in rep:
        rows[REMEASURE] = rep[REMEASURE]
        rows[MLP_ON_REPEATS] = rep[MLP_ON_REPEATS]
    if REMEASURE_ALL in rep:
        rows[REMEASURE_ALL] = rep[REMEASURE_ALL]
    return rows
