"""`hwnas train ARCH.json|RUN --dataset D --epochs E --out RUN`: train a found network."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwnas.commands.common import add_run_flags, continue_run_dir, set_up_process
from hwnas.train.recipe import TrainConfig
from targets.basics import strict_json

_D = TrainConfig()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an architecture (or a search run's) from scratch: DARTS evaluation recipe",
        description=(
            "Train the discrete network of an architecture JSON or of a search run directory with "
            "the DARTS/H-DAS evaluation recipe (SGD momentum 0.9, cosine, wd 3e-4, crop + flip, "
            "cutout, drop-path, optional auxiliary head); defaults scaled down for a CPU, DARTS's "
            "values in brackets. Writes config.json, architecture.json, checkpoint.pt (each epoch), "
            "log.csv and summary.json (test_accuracy, params, flops, ...) to --out."
        ),
    )
    p.add_argument("source", metavar="ARCH.json|SEARCH_RUN", help="architecture file or run directory")
    p.add_argument(
        "--dataset", default=None, metavar="digits|cifar10:PATH|imagefolder:PATH|npz:PATH",
        help="default: the search (or train) run's own data, refusing another; for an architecture "
        "file, digits for the digits space (other spaces need it)",
    )
    p.add_argument("--epochs", type=int, required=True, help="epochs [DARTS: 600]")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--seed", type=int, default=_D.seed, help=f"seed of the data subset, weights and augmentation (default {_D.seed})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="start again in an --out that holds another run")
    p.add_argument("--subset", type=int, default=None, help="train on N examples (stratified, seeded)")
    p.add_argument("--batch-size", type=int, default=_D.batch_size, help=f"default {_D.batch_size} [96]")
    p.add_argument("--lr", type=float, default=_D.lr, help=f"initial learning rate, default {_D.lr} [0.025]")
    p.add_argument("--lr-min", type=float, default=_D.lr_min, help="final learning rate of the cosine")
    p.add_argument("--weight-decay", type=float, default=_D.weight_decay, help="default 3e-4")
    p.add_argument(
        "--cutout", type=int, default=_D.cutout,
        help="cutout square side in input pixels; -1 (default): a quarter of the input side; 0: off [16 on 32x32]",
    )
    p.add_argument(
        "--drop-path", type=float, default=_D.drop_path,
        help=f"final drop-path probability (ramped linearly), default {_D.drop_path} [0.2]",
    )
    p.add_argument(
        "--aux-weight", type=float, default=_D.aux_weight,
        help=f"auxiliary head loss weight; 0 builds no head; default {_D.aux_weight} [0.4]",
    )
    add_run_flags(p, "print the summary as JSON")
    p.set_defaults(func=cmd_train, on_interrupt=continue_run_dir(resume_flag=True))


def cmd_train(args: argparse.Namespace) -> int:
    from hwnas.train.loop import resolve_source, train

    cfg = TrainConfig(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_min=args.lr_min,
        weight_decay=args.weight_decay,
        cutout=args.cutout,
        drop_path=args.drop_path,
        aux_weight=args.aux_weight,
        subset=args.subset,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    cfg.validate()
    set_up_process(args)
    source = resolve_source(args.source)
    result = train(source, cfg, args.out, resume=args.resume, force=args.force, progress=not args.no_progress)
    s = result.summary
    if args.json:
        print(strict_json(s, indent=2))
        return 0
    if result.resumed_from:
        print(f"resumed at epoch {result.resumed_from}")
    print(
        f"{source.arch.hash[:12]} on {s['dataset']}: test accuracy {s['test_accuracy']:.4f} after "
        f"{s['epochs']} epochs; {s['params']:,} parameters, {s['flops']:,} multiply-adds (batch 1)"
    )
    print(f"run directory {args.out}: config.json, architecture.json, checkpoint.pt, log.csv, summary.json")
    return 0
