"""Is predictor(relaxed encoding) the expected latency of the architectures it describes?

    python bench/relaxed_calibration.py --db runs/bench/tiny-calib.db --target ort-cpu --seed 0

Fits the MLP on the store (as `hwnas predictor fit` does), then, at each logit scale (0 is
the centre, where the search starts), draws `--n` random ArchParameters (seeds
seed * 1_000_003 + i) and compares the prediction on the relaxed encoding with the mean
prediction over `--samples` architectures drawn from the same logits
(`ArchParameters.sample`): before and after the relaxed correction
(`hwnas.search.predictor_check.calibrate_predictor`, fitted on relaxations from other seeds). Also
reports the discrete held-out MAPE before and after. Prints a Markdown table; writes
JSON next to `--out` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.search.predictor_check import DEFAULT_SCALES, calibrate_predictor, relaxed_calibration
from hwnas.space import SpaceConfig
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    fit_predictor,
    load_profiles,
    save_predictor,
)
from predictor.metrics import regression_metrics
from targets.basics import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--target", required=True)
    p.add_argument("--space")
    p.add_argument("--seed", type=int, default=0, help="split, training and relaxation seed")
    p.add_argument("--n", type=int, default=50, help="random relaxations per scale")
    p.add_argument("--samples", type=int, default=64, help="architectures drawn per relaxation")
    p.add_argument("--scales", default=",".join(str(s) for s in DEFAULT_SCALES))
    p.add_argument("--relaxed-points", type=int, default=540, help="relaxations the correction is fitted on")
    p.add_argument("--include-unstable", action="store_true", help="fit on unstable rows too")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--out", type=Path, help="predictor file to write (JSON results beside it)")
    return p.parse_args(argv)


def _table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    lines = [
        "| logit scale | mean gap before | median abs gap before | Spearman before "
        "| mean gap after | median abs gap after | p90 abs gap after | Spearman after "
        "| noise of the draws' mean (median SE) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b, a in zip(before, after, strict=True):
        lines.append(
            f"| {a['scale']:g} | {100 * b['mean_gap']:+.2f} % | {100 * b['median_abs_gap']:.2f} % "
            f"| {b['spearman']:.3f} | {100 * a['mean_gap']:+.2f} % | {100 * a['median_abs_gap']:.2f} % "
            f"| {100 * a['p90_abs_gap']:.2f} % | {a['spearman']:.3f} | {100 * a['median_rel_sem']:.2f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    scales = [float(s) for s in args.scales.split(",")]
    t0 = time.perf_counter()
    query = ProfileQuery(space=args.space, seed=args.seed, include_unstable=args.include_unstable)
    ds = load_profiles(args.db, args.target, query)
    space = SpaceConfig.from_dict(ds.space_config)
    result = fit_predictor(ds, cfg=MLPConfig(members=args.members), baselines=(), seed=args.seed)
    model = result.model
    te = ds.indices("test")
    mape_before = regression_metrics(ds.latency_ms[te], model.predict_ms(ds.X[te]))["mape"]
    t_fit = time.perf_counter() - t0
    kw = {"scales": scales, "n": args.n, "samples": args.samples, "seed": args.seed}
    before = relaxed_calibration(model, space, **kw)
    t1 = time.perf_counter()
    fit = calibrate_predictor(model, space, points=args.relaxed_points, seed=args.seed)
    t_cal = time.perf_counter() - t1
    after = relaxed_calibration(model, space, **kw)
    pred_after = model.predict_ms(ds.X[te])
    mape_after = regression_metrics(ds.latency_ms[te], pred_after)["mape"]
    counts = ds.counts()
    print(
        f"store {args.db}: {len(ds)} architectures ({counts}; unstable rows "
        f"{'included' if args.include_unstable else 'left out'}: {ds.stats.get('unstable_rows')}), "
        f"{args.n} relaxations x {args.samples} draws per scale, seed {args.seed}"
    )
    print(f"discrete held-out MAPE: {mape_before:.2f} % before, {mape_after:.2f} % after")
    print(f"fit {t_fit:.0f} s, correction {t_cal:.0f} s (lambda {fit['ridge_lambda']:g})")
    print(_table(before, after))
    if args.out is not None:
        save_predictor(
            args.out, model, {**build_header(model, ds, result.report), "relaxed_correction": fit}
        )
        payload = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "n_architectures": len(ds),
            "split": counts,
            "discrete_test_mape": {"before": mape_before, "after": mape_after},
            "correction": fit,
            "before": before,
            "after": after,
            "expected_spread_note": "std/mean of the sampled expectations across relaxations",
        }
        args.out.with_suffix(".json").write_text(
            json.dumps(payload, indent=2, default=lambda o: float(o) if np.isscalar(o) else str(o))
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
