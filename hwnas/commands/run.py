"""`hwnas run`: the main job on one target (what `make demo` runs); flags -> `MainJobConfig`.

The job itself (profile, re-measure, fit, fresh check, search x2, train x2, export + measure,
report) is `hwnas.mainjob.job.run_main_job`; every default is `hwnas.mainjob.config`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.commands.common import continue_run_dir
from hwnas.mainjob.config import DEFAULTS as D
from hwnas.search.config import LATENCY_AWARE_WEIGHT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="end to end: profile, fit the latency predictor, search, train, export and report",
        description=(
            "The main job on one target: profile sampled architectures, re-measure some, fit the "
            "latency predictor and check it on fresh architectures; then (unless --no-deploy) search "
            "twice (plain and latency-aware), train both found networks, export and measure them, "
            "and write report.html. Rerun the same command to continue."
        ),
    )
    p.add_argument("--out", type=Path, default=D.out, help="run directory")
    p.add_argument("--space", default=D.space,
                   help="search space (default digits: its data ships with scikit-learn); with --dataset it "
                   "takes the data's channels and classes, and that variant is profiled (README 'Your own data')")
    p.add_argument("--target", default=D.target, help=f"target name or .toml (default: {D.target})")
    p.add_argument("--samples", type=int, default=D.samples, help="architectures to profile")
    p.add_argument("--repeat", type=int, default=D.repeat, help="architectures to re-measure")
    p.add_argument("--fresh", type=int, default=D.fresh, help="fresh architectures to predict + measure")
    p.add_argument("--seed", type=int, default=D.seed, help=f"seed of every step (default {D.seed})")
    p.add_argument(
        "--init",
        type=Path,
        metavar="KNOWN.pt",
        help="adapt this predictor of another target of the same space instead of fitting "
        "from scratch (needs far fewer --samples; see hwnas predictor fit --init)",
    )
    p.add_argument(
        "--include-unstable", action="store_true",
        help="fit on profile rows the timing protocol flagged unstable too (a busy host); by default "
        "they are left out and step 1 profiles more until the fit has enough",
    )
    p.add_argument(
        "--max-samples", type=int, default=D.max_samples, metavar="N",
        help="profile at most N architectures to reach the fit's floor of usable ones (default 3 x --samples)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines (stderr)")
    _deploy_arguments(p)
    p.set_defaults(func=_run, on_interrupt=continue_run_dir(resume_flag=False))


def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    """The main job's search/train/deploy options."""
    p.add_argument("--dataset", default=D.dataset, help="dataset of the search and training (default: digits for the digits space)")
    p.add_argument("--search-epochs", type=int, default=D.search_epochs, help=f"epochs of each search (default {D.search_epochs})")
    p.add_argument("--search-subset", type=int, default=D.search_subset,
                   help=f"training images the searches use, split 50/50 between weights and architecture (default {D.search_subset})")
    p.add_argument(
        "--search-mode", choices=("full", "sampled"), default=D.search_mode,
        help="full (default: the DARTS mixture, the mode whose supernet learns in CPU-sized budgets) "
        "or sampled (one sub-graph per step; cheaper, but its supernet stays near chance here)",
    )
    p.add_argument(
        "--search-resolution", type=int, default=D.search_resolution, metavar="R",
        help="input size of the searched supernet (default: the data's native size, e.g. 8 for "
        "digits, whose deployed network upsamples to 32; the latency term always predicts the deployed network)",
    )
    p.add_argument(
        "--search-arch-lr", type=float, default=D.search_arch_lr,
        help=f"Adam lr of the architecture logits (default {D.search_arch_lr:g}: 10x DARTS's, which is "
        "sized for ~20k steps; these searches make ~100)",
    )
    p.add_argument(
        "--search-schedule", choices=("joint", "hdas"), default=D.search_schedule,
        help="joint (default: every level at once, hwnas's own) or hdas (H-DAS's phases: cells, then "
        "connections and depth); docs/search.md",
    )
    p.add_argument("--train-epochs", type=int, default=D.train_epochs, help=f"epochs of training each found network (default {D.train_epochs})")
    p.add_argument("--train-subset", type=int, default=D.train_subset, help="training images for training (default: all)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latency-weight", type=float, default=D.latency_weight,
                     help=f"latency weight of the latency-aware search (default {LATENCY_AWARE_WEIGHT:g}: "
                     "loss = CE + weight x predicted / centre latency)")
    lat.add_argument("--latency-budget", type=float, default=D.latency_budget, metavar="MS",
                     help="a hard latency budget for the latency-aware search instead of a weight")
    p.add_argument("--device", default=D.device,
                   help="device of the searches and trainings: auto (default: the first CUDA device, else cpu), "
                   "cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=D.precision,
                   help="bf16 or fp32 (default: bf16 on a CUDA device that has it, fp32 on a CPU)")
    p.add_argument("--no-deploy", action="store_true", help="stop after checking the predictor (no search, training, export)")
    p.add_argument("--force", action="store_true", help="use an --out that holds another configuration or kind of run")


def _run(args: argparse.Namespace) -> int:
    from hwnas.mainjob.config import MainJobConfig
    from hwnas.mainjob.job import run_main_job

    cfg = MainJobConfig(
        out=args.out, space=args.space, target=args.target, samples=args.samples, repeat=args.repeat,
        fresh=args.fresh, seed=args.seed, init=args.init, dataset=args.dataset,
        include_unstable=args.include_unstable, max_samples=args.max_samples,
        search_epochs=args.search_epochs, search_subset=args.search_subset, search_mode=args.search_mode,
        search_resolution=args.search_resolution, search_arch_lr=args.search_arch_lr,
        search_schedule=args.search_schedule,
        train_epochs=args.train_epochs, train_subset=args.train_subset, latency_weight=args.latency_weight,
        latency_budget=args.latency_budget, device=args.device, precision=args.precision,
        deploy=not args.no_deploy, force=args.force,
        progress=not args.no_progress,
    )  # fmt: skip
    import torch

    torch.manual_seed(args.seed)  # the entry point seeds the process (library code uses its own generators)
    run_main_job(cfg)
    return 0
