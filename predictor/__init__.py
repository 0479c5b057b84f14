"""Latency predictors learned from profiles, with honest accuracy reports.

Public API (the search and the CLI code against these):

- `load_profiles(db, target, ProfileQuery(...)) -> Dataset`: ok profile rows of one target
  and fingerprint, split train/val/test by architecture hash.
- `fit_predictor(ds, ...) -> FitResult`: the MLP and the sklearn baselines, scored on test.
- `LatencyPredictor`: `model(encoding [..., D]) -> latency ms [...]`, differentiable.
- `save_predictor(path, model, header)`, `load_predictor(path, device="cpu") -> LatencyPredictor`
  (`torch.load(weights_only=True)`), `check_space(model, space_key)`.
- For the search: `check_layout(model, layout_names)` (the encoding layout, by hash of its
  names, `layout_hash`) and `deploy_space_config(model)` (the deploy space the predictions
  are for; hwnas.search.predictor_check.check_predictor_for_search lets a narrower supernet use it).
- `evaluate(model, ds, split)`, `render_report(report)`, `relaxation_gap(model, relaxed, derived)`.
"""

from __future__ import annotations

from predictor.dataset import Dataset
from predictor.evaluate import FitResult, evaluate, fit_predictor
from predictor.features import FeatureLayout, build_feature_layout
from predictor.io import (
    build_header,
    check_layout,
    check_space,
    deploy_space_config,
    layout_hash,
    load_predictor,
    save_predictor,
)
from predictor.model import LatencyPredictor, MLPConfig
from predictor.profiles import ProfileQuery, load_profiles, usable_architectures
from predictor.relax import categorical_blocks_check, relaxation_gap
from predictor.report import render_report

__all__ = [
    "Dataset",
    "FeatureLayout",
    "FitResult",
    "LatencyPredictor",
    "MLPConfig",
    "ProfileQuery",
    "build_feature_layout",
    "build_header",
    "categorical_blocks_check",
    "check_layout",
    "check_space",
    "deploy_space_config",
    "evaluate",
    "fit_predictor",
    "layout_hash",
    "load_predictor",
    "load_profiles",
    "usable_architectures",
    "relaxation_gap",
    "render_report",
    "save_predictor",
]
