"""Why does sampled mode not train the supernet? Weight steps only, on a micro space (the
`digits` input, 2 nodes, depths 1-2, C = 4), drawing a new sample each step for some parts
of the relaxation and a fixed one for the rest; prints the mean loss and batch accuracy per
50 steps.

    .venv/bin/python bench/search_sampled_diag.py none                 # one fixed path
    .venv/bin/python bench/search_sampled_diag.py cells,slots,exits    # a new path each step
    .venv/bin/python bench/search_sampled_diag.py cells                # only the cells' ops/inputs anew
    .venv/bin/python bench/search_sampled_diag.py cells --only max+avg+skip   # cell ops restricted
    .venv/bin/python bench/search_sampled_diag.py cells --all-inputs   # GDAS: ops drawn, every input
"""

from __future__ import annotations

import argparse
import time

import torch

from hwnas.data.datasets import load_dataset
from hwnas.search import SearchConfig, Searcher
from hwnas.search.relax import relax
from hwnas.space import CELL_OPS, SpaceConfig

MICRO = SpaceConfig(
    name="micro", in_channels=1, input_size=8, num_classes=10, channels=4,
    depth_choices=(1, 2), nodes=2, stem_multiplier=2,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("anew", help="comma list of parts drawn anew each step: cells, slots, exits (or none)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--w-lr", type=float, default=0.025)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--all-inputs", action="store_true", help="GDAS: every input, only ops drawn")
    ap.add_argument("--only", help="restrict cell ops to names starting with these ('+'-separated)")
    ap.add_argument("--warmup-full", type=int, default=0, metavar="N",
                    help="first N steps on the full mixture, then the draws")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    anew = set(args.anew.split(","))
    cfg = SearchConfig(
        space="micro", mode="sampled", batch_size=32, epochs=10, w_lr=args.w_lr, samples=args.samples,
        sample_inputs=not args.all_inputs, seed=args.seed,
    )
    s = Searcher(cfg, MICRO, load_dataset("digits", MICRO, subset=400, seed=args.seed))
    if args.only:
        keep = args.only.split("+")
        with torch.no_grad():
            for p in s.alpha.alpha:
                for o, name in enumerate(CELL_OPS):
                    if not any(name.startswith(x) for x in keep):
                        p[..., o] = -30.0  # never drawn
    s.gumbel, s.tau = torch.Generator().manual_seed(args.seed), 1.0
    drawn = s.relaxed

    step = 0

    def relaxed():  # type: ignore[no-untyped-def]
        if step < args.warmup_full:
            return relax(s.alpha, "full")
        r = drawn()
        f = relax(s.alpha, "sampled", k=cfg.samples, sample_inputs=cfg.sample_inputs,
                  generator=torch.Generator().manual_seed(args.seed))
        if "cells" not in anew:
            r.cells = f.cells
        if "slots" not in anew:
            r.slots = f.slots
        if "exits" not in anew:
            r.exits, r.active_exits, r.run_depth = f.exits, f.active_exits, f.run_depth
        return r

    s.relaxed = relaxed  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    accs: list[float] = []
    t = time.perf_counter()
    for it in range(args.steps):
        step = it
        x, y = s._batch(s.w_half, torch.randint(0, len(s.w_half), (32,), generator=g))
        logits, loss = s.weight_step(x, y)
        losses.append(float(loss))
        accs.append(float((logits.argmax(1) == y).float().mean()))
        if it % 50 == 49:
            print(
                f"{args.anew} step {it + 1}: mean loss {sum(losses[-50:]) / 50:.3f} "
                f"batch acc {sum(accs[-50:]) / 50:.3f} {time.perf_counter() - t:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
