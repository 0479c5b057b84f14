"""Score a predictor against later re-measurements (another process) of held-out architectures.

    python bench/predictor_vs_remeasure.py --db runs/bench/tiny-ort-cpu.db \
        --predictor runs/bench/p1000.pt --target ort-cpu

For the test-split architectures that have 'repeat' rows, compares the prediction with
(a) the first later re-measurement (its raw latency), (b) the mean of all measurements of the architecture
(profile + repeats: a less noisy truth), and the profile measurement with the repeat
(the floor: how well a measurement predicts a later one).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from predictor import ProfileQuery, load_predictor, load_profiles
from predictor.metrics import format_table, regression_metrics
from profiling.store import ProfileStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", required=True)
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--seed", type=int, default=0, help="the split seed the predictor was fitted with")
    args = ap.parse_args()
    model = load_predictor(args.predictor)
    # the same label the predictor learned (raw or reference-corrected); re-measurements
    # below are always the raw stored latency of the later process
    query = ProfileQuery(seed=args.seed, label=str(model.header.get("label") or "raw"))
    ds = load_profiles(args.db, args.target, query)
    with ProfileStore(args.db, readonly=True) as store:
        rows = store.select(
            ("arch_hash", "latency_ms", "started_at"),
            kind="repeat", status="ok", fingerprint_key=ds.fingerprint_key,
        )  # fmt: skip
    repeats: dict[str, list[float]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["started_at"] or ""):
        repeats[r["arch_hash"]].append(r["latency_ms"])
    test = [i for i in ds.indices("test") if ds.hashes[i] in repeats]
    if not test:
        raise SystemExit("no test architecture has a repeat measurement: run `hwnas db repeat` first")
    pred = model.predict_ms(ds.X[test])
    first = np.array([repeats[ds.hashes[i]][0] for i in test])
    profile = ds.latency_ms[test]
    mean = np.array([np.mean([ds.latency_ms[i], *repeats[ds.hashes[i]]]) for i in test])
    rows = {
        "mlp vs later re-measure": regression_metrics(first, pred),
        "profile vs later re-measure": regression_metrics(first, profile),
        "mlp vs mean of measurements": regression_metrics(mean, pred),
    }
    print(f"{len(test)} held-out architectures with later re-measurements "
          f"(mean {np.mean([len(repeats[ds.hashes[i]]) for i in test]):.1f} repeats each)")
    print(format_table(rows))


if __name__ == "__main__":
    main()
