"""A FLOPs penalty of the same form as the latency one: the common proxy, for comparison.

Hardware-aware NAS papers compare a latency-aware search with one that penalises FLOPs
(multiply-adds), the usual proxy for speed. To compare like with like, the FLOPs penalty here
has exactly the latency penalty's relative form,

    loss = w * predicted_FLOPs(relaxed architecture) / FLOPs_0,   FLOPs_0 = at uniform logits,

and reaches the search through the same door: the FLOPs "predictor" is a `LatencyPredictor`
file (the same MLP, differentiable in the encoding) fitted on (encoding, analytic
multiply-adds of the deploy network) pairs of sampled architectures, in millions of
multiply-adds where a latency predictor holds ms. So

    run_search(SearchConfig(..., predictor="flops.pt", latency_weight=w))

applies `WeightedLatency(LatencyTerm(flops model), w)`: the search code, its resume, its
config.json (the file's sha256) and its derive are those of the latency search, unchanged;
only the quantity priced differs. No device is needed: the labels are counted, not timed.

`FLOPS_TARGET` is the file's target name; `is_flops_predictor(header)` tells the two apart.
The MAC counts come from the caller (`hwnas.train.evaluate.count_macs` of the deploy network:
the training room owns that counter, and the search room may not import it).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwnas.space import Architecture, SpaceConfig
from hwnas.space.encoding import encode, encoding_layout
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    fit_predictor,
    load_profiles,
    save_predictor,
)
from profiling.store import ProfileStore
from targets.basics import UserError
from targets.timing import fingerprint_key

#: The target name a FLOPs model carries in its header (what it "measures").
FLOPS_TARGET = "flops"
#: Its unit: millions of multiply-adds at batch 1 (Conv2d and Linear).
FLOPS_UNIT = "MMACs"
FINGERPRINT = {"backend": "analytic", "quantity": "multiply-adds at batch 1 (Conv2d + Linear), millions"}
#: Small and smooth: the labels are exact, so a short fit is enough (the linear skip carries most).
FLOPS_MLP = MLPConfig(members=1, hidden=(64, 64), max_epochs=200, patience=40, loss="mse")


def is_flops_predictor(header: dict[str, Any]) -> bool:
    return str(header.get("target_name")) == FLOPS_TARGET


def _row(space: SpaceConfig, arch: Architecture, mmacs: float) -> dict[str, Any]:
    return {
        "kind": "profile", "arch_hash": arch.hash, "arch_json": arch.to_json(None),
        "encoding": [float(v) for v in encode(arch)], "space_name": space.name, "space_key": space.key,
        "target_name": FLOPS_TARGET, "fingerprint": FINGERPRINT, "fingerprint_key": fingerprint_key(FINGERPRINT),
        "status": "ok", "error": None, "latency_ms": mmacs, "statistic": "exact", "median_ms": mmacs,
        "p10_ms": mmacs, "min_ms": mmacs, "spread": 0.0, "repetitions": 1, "rounds": 1, "reference_ms": None,
        "host": "analytic", "pid": 0, "run_id": "flops", "started_at": None, "finished_at": None,
    }  # fmt: skip


def fit_flops_predictor(
    space: SpaceConfig,
    samples: Sequence[tuple[Architecture, int]],
    path: Path,
    *,
    seed: int = 0,
    mlp: MLPConfig = FLOPS_MLP,
) -> dict[str, Any]:
    """Fit the FLOPs model on (architecture, multiply-adds) pairs and save it at `path`
    (loadable with `predictor.load_predictor`, usable as `SearchConfig.predictor`).
    Returns its test-split metrics (MAPE etc., in MMACs)."""
    if len(samples) < 50:
        raise UserError(f"a FLOPs model needs at least 50 sampled architectures, got {len(samples)}")
    bad = [a.hash[:12] for a, m in samples if not (isinstance(m, int) and m > 0)]
    if bad:
        raise UserError(f"multiply-add counts must be positive integers; bad for {', '.join(bad[:5])}")
    with tempfile.TemporaryDirectory(prefix="hwnas-flops-") as tmp:
        db = Path(tmp) / "flops.db"
        with ProfileStore(db) as store:
            store.bind_space(space.name, space.key, space.to_dict(), encoding_layout(space))
            store.insert_measurements([_row(space, a, m / 1e6) for a, m in samples])
        ds = load_profiles(db, FLOPS_TARGET, ProfileQuery(label="raw"))
        result = fit_predictor(ds, cfg=mlp, baselines=(), seed=seed)
        header = build_header(result.model, ds, result.report)
    header["unit"] = FLOPS_UNIT
    header["note"] = "a FLOPs model: 'ms' in its API are millions of multiply-adds (hwnas.search.flops)"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_predictor(path, result.model, header)
    test = (result.report.get("test") or {}).get("mlp") or {}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in test.items()}
