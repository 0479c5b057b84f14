"""Does the supernet learn? Weight steps only, on `digits`, printing loss and batch accuracy.

    .venv/bin/python bench/search_learning.py --mode sampled --steps 60             # new path each step
    .venv/bin/python bench/search_learning.py --mode sampled --steps 40 --fixed-path
    .venv/bin/python bench/search_learning.py --mode full --steps 15
"""

from __future__ import annotations

import argparse
import time

import torch

from hwnas.data.datasets import load_dataset
from hwnas.search import SearchConfig, Searcher
from hwnas.space import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("full", "sampled"), default="sampled")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--fixed-path", action="store_true", help="sampled: the same path every step")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = get_space("digits")
    cfg = SearchConfig(space="digits", mode=args.mode, search_channels=args.channels, batch_size=32, epochs=10)
    s = Searcher(cfg, space, load_dataset("digits", space, subset=400, seed=0))
    s.gumbel, s.tau = torch.Generator().manual_seed(0), 1.0
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for it in range(args.steps):
        x, y = s._batch(s.w_half, torch.randint(0, len(s.w_half), (32,), generator=g))
        if args.fixed_path:
            s.gumbel = torch.Generator().manual_seed(0)
        logits, loss_t = s.weight_step(x, y)
        loss = float(loss_t)
        if it % 5 == 4:
            acc = float((logits.argmax(1) == y).float().mean())
            print(f"step {it + 1}: loss {loss:.3f} batch acc {acc:.3f} {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
