"""`hwnas search`: the hierarchical latency-aware differentiable search (hwnas.search).

Writes a run directory (config.json, log.csv, checkpoint.pt each epoch, architecture.json,
summary.json); `--resume` continues a run killed at any moment with the same result. Under
`torchrun --nproc-per-node N -m hwnas search ...` the ranks train data-parallel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.commands.common import add_run_flags, continue_run_dir, set_up_process
from hwnas.search.config import SearchConfig
from targets.basics import strict_json

_D = SearchConfig(space="")  # the defaults, in one place: hwnas.search.config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="hierarchical differentiable search with the latency predictor (weight or budget)",
        description=(
            "Search of H-DAS's hierarchical space (cells and stages; --schedule joint: all at "
            "once, hdas: H-DAS's phases) with the fitted latency predictor as a loss: "
            "--latency-weight L adds L * latency / latency0 (latency0: the space's centre), "
            "--latency-budget MS adapts the weight so the derived architecture lands within 5% "
            "of MS (never more than 5% above)."
        ),
    )
    p.add_argument("--space", required=True,
                   help="search space name (hwnas space list); it takes --dataset's channels and classes "
                   "(e.g. tiny-3class for 3 classes: README 'Your own data')")
    p.add_argument("--dataset", default=_D.dataset, help="digits | cifar10:PATH | imagefolder:PATH | npz:PATH")
    p.add_argument("--predictor", required=True, type=Path, help="latency predictor file (hwnas predictor fit)")
    p.add_argument("--target", default=None, help="refuse a predictor fitted for another target")
    # weight and budget exclude each other: SearchConfig.check refuses both (one line, exit 2)
    p.add_argument("--latency-weight", type=float, default=None, help="L: loss += L * latency / latency0 (default 0)")
    p.add_argument("--latency-budget", type=float, default=None, metavar="MS", help="hard budget in ms")
    p.add_argument("--mode", choices=("full", "sampled"), default=_D.mode,
                   help="full DARTS mixture (default), or Gumbel-TopK sampled sub-graphs (~6x cheaper steps)")
    p.add_argument("--samples", type=int, default=_D.samples, metavar="K", help="sub-graphs per step in sampled mode (1 = GDAS)")
    p.add_argument("--all-inputs", action="store_true",
                   help="sampled mode: every candidate input of a node, only its ops drawn (GDAS)")
    p.add_argument("--search-channels", type=int, default=None, metavar="C", help="proxy supernet width")
    p.add_argument("--search-resolution", type=int, default=None, metavar="R",
                   help="proxy input size of the supernet (default: the deployed network's input size, "
                   "32 for digits, whose network upsamples its 8x8 images 4x; `hwnas run` searches digits "
                   "at 8, measured 4-6x cheaper a step: docs/benchmarks.md)")
    p.add_argument("--arch-lr", type=float, default=_D.a_lr,
                   help="Adam lr of the architecture logits (DARTS: 3e-4, sized for ~20k steps; "
                   "raise it for short searches)")
    p.add_argument("--epochs", type=int, required=True, help="epochs of the search (with --schedule hdas: of both phases together)")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=int, default=_D.seed, help=f"seed of the data split, weights and sampling (default {_D.seed})")
    p.add_argument("--subset", type=int, default=None, metavar="N", help="N training images (stratified)")
    p.add_argument("--batch-size", type=int, default=_D.batch_size, help=f"default {_D.batch_size}")
    p.add_argument("--second-order", action="store_true", help="DARTS's unrolled architecture step")
    p.add_argument("--schedule", default=None, metavar="NAME",
                   help="hdas: H-DAS's phases (cells in a fixed chain, then connections and depth with "
                   "those cells fixed; --epochs is their total); joint: everything in one supernet "
                   "(hwnas's own). Default: joint (docs/search.md)")
    p.add_argument("--depth-penalty", type=float, default=None,
                   help="x expected cells per stage (default: H-DAS's 0.4 with --schedule hdas, 0 with joint)")
    p.add_argument("--max-param-free", type=int, default=_D.max_param_free,
                   help="collapse guard: parameter-free edges kept per cell (-1: off)")
    p.add_argument("--derive", default=_D.derive, metavar="RULE",
                   help="argmax: DARTS's argmax and the collapse guard (default); priced: then each "
                   "change whose predicted latency saving is worth its loss of architecture score at "
                   "the search's latency price (lowers the prediction; measured no faster on digits: "
                   "docs/search.md)")
    add_run_flags(p, "print summary.json")
    p.set_defaults(func=_run, on_interrupt=continue_run_dir(resume_flag=True))


def _run(args: argparse.Namespace) -> int:

    from hwnas.search import run_search

    cfg = SearchConfig(
        space=args.space,
        dataset=args.dataset,
        predictor=str(args.predictor),
        latency_weight=args.latency_weight,
        latency_budget_ms=args.latency_budget,
        mode=args.mode,
        samples=args.samples,
        sample_inputs=not args.all_inputs,
        search_channels=args.search_channels,
        search_resolution=args.search_resolution,
        a_lr=args.arch_lr,
        epochs=args.epochs,
        seed=args.seed,
        subset=args.subset,
        batch_size=args.batch_size,
        second_order=args.second_order,
        depth_penalty=args.depth_penalty,
        **({} if args.schedule is None else {"schedule": args.schedule}),
        max_param_free=None if args.max_param_free < 0 else args.max_param_free,
        derive=args.derive,
        target=args.target,
        device=args.device,
        precision=args.precision,
    )
    set_up_process(args)
    res = run_search(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None)
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return 0  # under torchrun rank 0 reports
    s = res.summary
    if args.json:
        print(strict_json(s, indent=2))
    else:
        lat = s.get("predicted_latency_ms")
        print(
            f"search done: {res.run_dir / 'architecture.json'} (hash {s['architecture_hash'][:12]}), "
            f"predicted {lat:.4g} ms, val accuracy {s['val_accuracy']:.3f}, "
            f"parameter-free edges {s['param_free_share']:.0%}"
        )
        for line in s.get("repair", []):
            print(f"  repair: {line}")
    return 0
