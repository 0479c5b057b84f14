"""The accuracy-latency trade-off study (issue 20): latency-aware vs FLOPs-aware vs random vs DARTS-V2.

CPU toy run (digits on ort-cpu, every part, about 3 minutes on a 2-core host; docs/study/README.md):

    python bench/tradeoff.py --quick                       # -> runs/tradeoff-quick/

The study (CIFAR-10 on an H200, target torch-cuda-graph), in parts of <= 10 minutes; every part
is resumable (finished searches/trainings are reused, interrupted ones resumed), so a part that
hits --minutes is simply run again:

    S="--dataset cifar10:data/cifar10 --space cifar --target torch-cuda-graph --device cuda \
       --predictor runs/cifar-h200.pt --out runs/tradeoff-cifar --paper"
    python bench/tradeoff.py $S --part predictor --minutes 9   # FLOPs model (+ profile/fit if no --predictor)
    python bench/tradeoff.py $S --part search --minutes 9      # repeat until all searches are done
    python bench/tradeoff.py $S --part train --minutes 9       # repeat until all networks are trained
    python bench/tradeoff.py $S --part measure --minutes 9     # torch-cuda-graph, then ort-cpu
    python bench/tradeoff.py $S --part report

`--paper` is the reduced CIFAR-10 schedule of docs/study/README.md (searches of 8 epochs on 10k
images at C=16 and 16x16, trainings of 10 epochs on 20k images with cutout 16; three workers
on the one GPU); `--search-epochs`, `--train-epochs`, `--search-subset`, `--train-subset`
override it. `--device`/`--precision` reach SearchConfig/TrainConfig only once they have those
fields (a note in the results says when they did not). Each part writes parts/<date>-<part>.json
(the command, dates, wall time) and results.json, results.md, tradeoff.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hwnas.mainjob.tradeoff import PARTS, TradeoffConfig, run_parts
from targets.basics import UserError

#: The CPU toy run: every part in ~3 minutes on 2 cores (tiny searches and trainings; the
#: latency predictor from 120 short profiles on ort-cpu, fitted on unstable figures too).
QUICK: dict[str, Any] = dict(
    space="digits", dataset="digits", target="ort-cpu", cpu_target="ort-cpu",
    profile_samples=120, profile_include_unstable=True,
    profile_protocol={"warmup": 2, "min_rounds": 2, "rounds": 3, "runs_per_round": 5},
    predictor_mlp={"members": 1, "max_epochs": 60}, flops_samples=100,
    weights=(0.0, 1.0, 3.0, 9.0), flops_weights=(3.0, 9.0), match_weight=3.0, budget_fracs=(0.8, 0.6),
    random_count=8, random_pool=400,
    search={"epochs": 1, "subset": 240, "search_resolution": 8, "a_lr": 0.05, "batch_size": 24},
    train={"epochs": 2, "subset": 240, "batch_size": 32},
    workers=2, threads=1, label="CPU toy run (--quick), not the study",
)  # fmt: skip
#: The H200 study's reduced CIFAR-10 schedule (docs/study/README.md, "Plan").
PAPER: dict[str, Any] = dict(
    weights=(0.0, 0.5, 1.0, 2.0, 4.0), flops_weights=(0.5, 1.0, 2.0), match_weight=1.0, budget_fracs=(0.8, 0.6),
    random_count=8, random_pool=4000, flops_samples=300, profile_samples=300,
    search={"epochs": 8, "subset": 10000, "search_channels": 16, "search_resolution": 16, "a_lr": 3e-3,
            "batch_size": 64},
    train={"epochs": 10, "subset": 20000, "batch_size": 128, "lr": 0.05, "cutout": 16},
    workers=3, threads=4, label="reduced CIFAR-10 schedule (docs/study/README.md)",
)  # fmt: skip


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the CPU toy run: digits, ort-cpu, every part (~3 min)")
    p.add_argument("--paper", action="store_true", help="the reduced CIFAR-10 schedule of the H200 study")
    p.add_argument("--part", default="all", help=f"one of {', '.join(PARTS)}, all, or a comma list")
    p.add_argument("--out", type=Path, help="the study folder (default runs/tradeoff-quick with --quick)")
    p.add_argument("--space")
    p.add_argument("--dataset")
    p.add_argument("--target")
    p.add_argument("--cpu-target", help="also measured there (default ort-cpu; 'none' to skip)")
    p.add_argument("--predictor", type=Path, help="a latency predictor fitted on the target's profiles")
    p.add_argument("--cpu-predictor", type=Path, help="optional: predictions on the CPU target too")
    p.add_argument("--profile-samples", type=int, help="without --predictor: architectures to profile")
    p.add_argument("--weights", type=_floats, help="latency weights, comma-separated (must hold 0)")
    p.add_argument("--flops-weights", type=_floats, help="FLOPs weights tried for the match")
    p.add_argument("--match-weight", type=float, help="the latency weight whose FLOPs cut the FLOPs search matches")
    p.add_argument("--budget-fracs", type=_floats, help="budgets as fractions of weight 0's predicted latency")
    p.add_argument("--random-count", type=int)
    p.add_argument("--search-epochs", type=int)
    p.add_argument("--search-subset", type=int)
    p.add_argument("--train-epochs", type=int)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--device", help="cuda, cuda:N (passed on where SearchConfig/TrainConfig have a device field)")
    p.add_argument("--precision", help="fp32, fp16 (likewise)")
    p.add_argument("--workers", type=int, help="searches/trainings at once")
    p.add_argument("--threads", type=int, help="torch threads per worker")
    p.add_argument("--seed", type=int)
    p.add_argument("--minutes", type=float, help="stop starting work after this (the part resumes on rerun)")
    return p.parse_args(argv)


def build_config(a: argparse.Namespace) -> tuple[TradeoffConfig, list[str]]:
    kw: dict[str, Any] = {}
    if a.quick:
        kw.update(QUICK)
    if a.paper:
        kw.update(PAPER)
    out = a.out or (Path("runs/tradeoff-quick") if a.quick else None)
    if out is None:
        raise UserError("--out DIR is needed (the study folder), or --quick")
    plain = {"space": a.space, "dataset": a.dataset, "target": a.target, "predictor": a.predictor,
             "cpu_predictor": a.cpu_predictor, "profile_samples": a.profile_samples, "weights": a.weights,
             "flops_weights": a.flops_weights, "match_weight": a.match_weight, "budget_fracs": a.budget_fracs,
             "random_count": a.random_count, "device": a.device, "precision": a.precision, "workers": a.workers,
             "threads": a.threads, "seed": a.seed}  # fmt: skip
    kw.update({k: v for k, v in plain.items() if v is not None})
    if a.cpu_target is not None:
        kw["cpu_target"] = None if a.cpu_target == "none" else a.cpu_target
    search, train = dict(kw.get("search", {})), dict(kw.get("train", {}))
    for d, key, v in ((search, "epochs", a.search_epochs), (search, "subset", a.search_subset),
                      (train, "epochs", a.train_epochs), (train, "subset", a.train_subset)):  # fmt: skip
        if v is not None:
            d[key] = v
    kw.update(search=search, train=train)
    if a.minutes is not None:
        kw["deadline_s"] = 60.0 * a.minutes
    parts = list(PARTS) if a.part == "all" else [p.strip() for p in a.part.split(",") if p.strip()]
    return TradeoffConfig(out=out, **kw), parts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # the entry point owns the threads: 2 spinning threads on a busy 2-core host cost 10x
    try:
        cfg, parts = build_config(parse(argv))
        run_parts(cfg, parts, command=["bench/tradeoff.py", *argv])
    except UserError as exc:
        print(f"tradeoff: error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    print(f"\ntradeoff: done in {wall:.0f} s; {cfg.out / 'results.md'}")
    (cfg.out / "wall.json").write_text(json.dumps({"wall_s": wall, "argv": argv}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
