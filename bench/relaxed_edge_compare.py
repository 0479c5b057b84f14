"""The relaxed calibration check with the old (2p capped) and the new (inclusion probabilities)
two-input relaxation, on a `tiny` store with a nonlinear SYNTHETIC latency (per stage its
cell's op cost x its depth, plus a tanh factor): no profiling needed.

    python bench/relaxed_edge_compare.py --folder runs/bench/edge-compare
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from searchkit import OP_MS, STAGE_OP_MS  # noqa: E402

import hwnas.space.encoding as E  # noqa: E402
from hwnas.search.predictor_check import calibrate_predictor, relaxed_calibration  # noqa: E402
from hwnas.space import get_space, sample_architectures  # noqa: E402
from hwnas.space.encoding import encode, encoding_layout  # noqa: E402
from predictor import MLPConfig, fit_predictor, load_dataset  # noqa: E402
from predictor.synthetic import write_store  # noqa: E402

torch.set_num_threads(1)
space = get_space("tiny")
layout = encoding_layout(space)

def lat(X: np.ndarray) -> np.ndarray:
    # per stage: (its cell's op cost) x (its depth) + connection ops; reductions add; a smooth cache term
    out = np.full(len(X), 0.3)
    for s in range(3):
        cell, dep, conn = np.zeros(len(layout)), np.zeros(len(layout)), np.zeros(len(layout))
        for i, name in enumerate(layout):
            t = name.split(".")
            if t[0] != f"stage{s}":
                continue
            if t[1] == "cell":
                cell[i] = OP_MS[t[-1]] * 3
            elif t[1] == "depth":
                dep[i] = float(t[2])
            else:
                conn[i] = STAGE_OP_MS[t[-1]]
        out += (X @ cell) * (X @ dep) + X @ conn
    red = np.array([OP_MS[n.split(".")[-1]] * 1.5 if n.startswith("reduction") else 0.0 for n in layout])
    out += X @ red
    return out * (1 + 0.15 * np.tanh(out - 2.0))

def old_edge_weights(beta: torch.Tensor) -> torch.Tensor:
    """The relaxation before issue 18 (flat once an input holds half the mass)."""
    p = torch.softmax(beta, dim=-1)
    if p.shape[-1] <= 2:
        return torch.ones_like(p)
    top, idx = p.max(dim=-1, keepdim=True)
    rest = torch.softmax(beta.scatter(-1, idx, float("-inf")), dim=-1)
    capped = rest.scatter(-1, idx, torch.ones_like(top))
    return torch.where(2 * top > 1.0, capped, 2 * p)

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--folder", type=Path, required=True)
folder = ap.parse_args().folder
folder.mkdir(parents=True, exist_ok=True)
archs = sample_architectures(space, 1, 400)
X = np.stack([encode(a) for a in archs])
y = lat(X)
rows = [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)]
db = folder / "tiny-nl.db"
if not db.exists():
    write_store(db, rows, space_name=space.name, space_key=space.key, space_config=space.to_dict(), layout=layout)
ds = load_dataset(db, "ort-cpu")
t = time.time()
fit = fit_predictor(ds, cfg=MLPConfig(members=2, max_epochs=150), baselines=(), seed=0)
print("fit", time.time() - t, fit.report.get("test", {}) if isinstance(fit.report, dict) else "")
model = fit.model
judge = dict(n=40, samples=48, seed=0)
out = {}
new = E._edge_weights
for name, fn in (("old", old_edge_weights), ("new", new)):
    E._edge_weights = fn
    model.relax_w.zero_()
    before = relaxed_calibration(model, space, **judge)
    rep = calibrate_predictor(model, space, points=180, samples=32, seed=0)
    after = relaxed_calibration(model, space, **judge)
    out[name] = {"before": before, "after": after, "fit": rep}
    for b, a in zip(before, after, strict=True):
        print(f"{name} scale {a['scale']:g}: mean gap {100*b['mean_gap']:+.2f} % -> {100*a['mean_gap']:+.2f} %, "
              f"median abs {100*b['median_abs_gap']:.2f} % -> {100*a['median_abs_gap']:.2f} %, "
              f"spearman {a['spearman']:.3f}, SE {100*a['median_rel_sem']:.2f} %", flush=True)
E._edge_weights = new
(folder / "result.json").write_text(json.dumps(out, indent=1, default=float))
