"""Shared by the search tests: a real (small) latency predictor fitted on synthetic profiles.

The latency of an architecture is a sum of per-op costs, a stage's cost scaled by its depth,
plus noise; nothing is exported or timed. Fitting 1 MLP member on 160 architectures takes a
few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwnas.space import CELL_OPS, STAGE_OPS, SpaceConfig, sample_architectures
from hwnas.space.encoding import encode, encoding_layout
from predictor import MLPConfig, build_header, fit_predictor, load_profiles, save_predictor
from predictor.synthetic import write_store

# Per-op costs (ms) in the order of hwnas's own vocabulary, so a new op there fails here loudly.
OP_MS = dict(zip(CELL_OPS, (0.012, 0.013, 0.002, 0.040, 0.048, 0.024, 0.028), strict=True))
STAGE_OP_MS = dict(zip(STAGE_OPS, (0.002, 0.010, 0.011), strict=True))


def synthetic_ms(X: np.ndarray, layout: list[str]) -> np.ndarray:
    add = np.zeros(len(layout))
    depth_w = np.zeros(len(layout))
    for i, name in enumerate(layout):
        t = name.split(".")
        if t[1] == "depth":
            depth_w[i] = 0.15 * float(t[2])
        elif t[1] == "cell":
            add[i] = OP_MS[t[-1]] * (3.0 if t[0].startswith("stage") else 1.5)
        else:
            add[i] = STAGE_OP_MS[t[-1]]
    return 0.3 + X @ add + X @ depth_w


def make_predictor(folder: Path, space: SpaceConfig, n: int = 160) -> Path:
    layout = encoding_layout(space)
    archs = sample_architectures(space, 0, n)
    X = np.stack([encode(a) for a in archs])
    y = synthetic_ms(X, layout)
    rows = [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)]
    db = folder / f"{space.name}.db"
    write_store(db, rows, space_name=space.name, space_key=space.key, space_config=space.to_dict(), layout=layout)
    ds = load_profiles(db, "ort-cpu")
    fit = fit_predictor(ds, cfg=MLPConfig(members=1, max_epochs=60), baselines=(), seed=0)
    path = folder / f"{space.name}.pt"
    save_predictor(path, fit.model, build_header(fit.model, ds, fit.report))
    return path
