"""Weight-0 search on `digits`: the share of parameter-free edges in the derived architecture
per epoch, with the collapse guard (`param_free_share`) and without (`..._unguarded`).

    .venv/bin/python bench/search_collapse.py --predictor runs/bench/digits.pt --mode full --epochs 8 --a-lr 3e-3
"""

from __future__ import annotations

import argparse

import torch

from hwnas.search import SearchConfig, run_search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--mode", choices=("full", "sampled"), default="full")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--a-lr", type=float, default=3e-3)
    ap.add_argument("--search-channels", type=int, default=4)
    ap.add_argument("--subset", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = SearchConfig(
        space="digits", dataset="digits", predictor=args.predictor, latency_weight=0.0, mode=args.mode,
        search_channels=args.search_channels, epochs=args.epochs, subset=args.subset, batch_size=32,
        seed=args.seed, a_lr=args.a_lr,
    )
    res = run_search(cfg, None, progress=False)
    for r in res.log:
        print(
            f"{args.mode} a_lr {args.a_lr} epoch {r['epoch']}: parameter-free guarded {r['param_free_share']:.3f} "
            f"unguarded {r['param_free_share_unguarded']:.3f} depths {r['depth_stage0']:.2f} "
            f"{r['depth_stage1']:.2f} {r['depth_stage2']:.2f} val_acc {r['val_acc']:.3f} {r['seconds']:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
