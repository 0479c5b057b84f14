"""Full versus sampled search on `digits`, same seed: search time, the derived architectures'
predicted latency and parameter-free share, and their accuracy after the same short training.

    .venv/bin/python bench/search_digits.py --predictor PRED.pt --epochs 6 --train-epochs 8

Each mode searches with latency weight 0 (so this is also the collapse check: the derived
network's share of parameter-free edges, with and without the guard), on a proxy supernet
(`--search-channels`), then the derived architecture is built at deploy width and trained
with one recipe (SGD lr 0.05 cosine, momentum 0.9, wd 3e-4, batch 64, the digits training
split, no augmentation) and scored on the digits test split.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hwnas.data.datasets import load_dataset
from hwnas.nets.network import build_network
from hwnas.search import SearchConfig, param_free_share, run_search
from hwnas.space import Architecture


def train_and_score(arch: Architecture, epochs: int, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    data = load_dataset("digits", arch.space, seed=seed)
    net = build_network(arch)
    opt = torch.optim.SGD(net.parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    x, y = data.train.images, data.train.labels
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y) - 1, 64):
            idx = perm[i : i + 64]
            if len(idx) < 2:
                continue
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(data.test.images).argmax(1) == data.test.labels).float().mean())
    return acc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train-epochs", type=int, default=8)
    ap.add_argument("--search-channels", type=int, default=4)
    ap.add_argument("--subset", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default="sampled,full")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/search-digits"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for mode in args.modes.split(","):
        out = args.out / mode
        cfg = SearchConfig(
            space="digits", dataset="digits", predictor=args.predictor, latency_weight=0.0, mode=mode,
            search_channels=args.search_channels, epochs=args.epochs, subset=args.subset,
            batch_size=args.batch_size, seed=args.seed,
        )
        t0 = time.perf_counter()
        res = run_search(cfg, out, resume=(out / "config.json").exists(), progress=False)
        search_s = res.summary["seconds_total"]
        acc, train_s = train_and_score(res.architecture, args.train_epochs, args.seed)
        raw = res.alpha.derive()
        row = {
            "mode": mode,
            "search_s": round(search_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1),
            "predicted_ms": round(res.summary["predicted_latency_ms"], 4),
            "param_free_share": res.summary["param_free_share"],
            "param_free_share_unguarded": param_free_share(raw),
            "depths": [s.depth for s in res.architecture.stages],
            "supernet_val_acc": res.summary["val_accuracy"],
            "test_acc_after_training": round(acc, 4),
            "train_s": round(train_s, 1),
            "arch_hash": res.architecture.hash[:12],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| mode | search s | predicted ms | depths | param-free (guarded / unguarded) | test acc after training |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['search_s']} | {r['predicted_ms']} | {r['depths']} | "
            f"{r['param_free_share']:.0%} / {r['param_free_share_unguarded']:.0%} | {r['test_acc_after_training']:.3f} |"
        )


if __name__ == "__main__":
    main()
