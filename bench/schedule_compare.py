"""`--schedule hdas` against `joint` on `digits`: depth per stage, supernet accuracy, latency.

    python bench/schedule_compare.py --seeds 0,1 --epochs 4 --subset 400 --out runs/bench/schedules.json
    python bench/schedule_compare.py --grads      # the depth logits' gradient, term by term

Per seed and variant (`hdas`; `joint`, whose depth is priced by the CE and the latency term;
`joint-p0.4`, the objective before: 0.4 x expected cells in the architecture loss) one
search, in memory, at the main job's proxy settings (C = 8, 8x8 inputs, arch lr 3e-3,
latency weight 1.0), with a latency predictor: `--predictor FILE`, else a synthetic one fitted
here as the tests fit theirs (tests/searchkit.py: a per-op sum, depth priced 0.15 ms per
cell; fine for depth and accuracy comparisons, not a real target's latency). Reports the
depth per stage of the derived network, the share of runs with any stage deeper than the
minimum, the supernet's last validation accuracy, the derived network's predicted latency
and the search's seconds. `hdas` is also run with the epochs that take about `joint`'s
wall time (`--match-time`: its phase 2 computes only the held cells' ops, so its epochs
are cheaper). `--grads`: at the start of a `joint` search (and after `--grad-steps` steps),
the mean |gradient| on the depth logits of the CE, of the latency term, of 0.4 x expected
cells and of H-DAS's depth objective, over `--batches` validation batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hwnas.search import SearchConfig, Searcher, run_search
from hwnas.search import schedule as S
from hwnas.search.run import _resolve
from hwnas.space import get_space

VARIANTS: dict[str, dict[str, Any]] = {
    "hdas": {"schedule": "hdas"},
    "joint": {"schedule": "joint"},
    "joint-p0.4": {"schedule": "joint", "depth_penalty": 0.4},
}


def _predictor(path: str | None, folder: Path) -> str:
    if path:
        return path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from searchkit import make_predictor  # noqa: PLC0415 (the tests' synthetic predictor)

    return str(make_predictor(folder, get_space("digits")))


def _cfg(args: argparse.Namespace, pred: str, seed: int, epochs: int, **kw: Any) -> SearchConfig:
    return SearchConfig(
        space="digits", dataset="digits", predictor=pred, latency_weight=args.latency_weight, epochs=epochs,
        seed=seed, subset=args.subset, batch_size=args.batch_size, search_channels=args.channels,
        search_resolution=args.resolution, a_lr=args.arch_lr, **kw,
    )


def compare(args: argparse.Namespace, pred: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    minimum = min(get_space("digits").depth_choices)
    for seed in args.seeds:
        joint_s = None
        todo = [(v, args.epochs) for v in args.variants]
        for name, epochs in todo + ([("hdas-time", None)] if args.match_time else []):
            if epochs is None:  # hdas with about joint's wall time
                hd = next(r for r in runs if r["variant"] == "hdas" and r["seed"] == seed)
                if joint_s is None:
                    continue
                epochs = max(2, round(args.epochs * joint_s / hd["seconds"]))
                kw = VARIANTS["hdas"]
            else:
                kw = VARIANTS[name]
            t = time.perf_counter()
            res = run_search(_cfg(args, pred, seed, epochs, **kw), None, progress=False)
            sec = time.perf_counter() - t
            if name == "joint":
                joint_s = sec
            depths = [st.depth for st in res.architecture.stages]
            row = {
                "variant": name, "seed": seed, "epochs": epochs, "depths": depths,
                "deeper_than_min": any(d > minimum for d in depths),
                "val_acc": res.summary["val_accuracy"], "predicted_ms": res.summary["predicted_latency_ms"],
                "seconds": sec, "expected_depth_last": [res.log[-1][f"depth_stage{s}"] for s in range(3)],
            }
            runs.append(row)
            print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {}
    for name in sorted({r["variant"] for r in runs}):
        rs = [r for r in runs if r["variant"] == name]
        summary[name] = {
            "runs": len(rs),
            "share_deeper_than_min": sum(r["deeper_than_min"] for r in rs) / len(rs),
            "mean_val_acc": sum(r["val_acc"] for r in rs) / len(rs),
            "mean_predicted_ms": sum(r["predicted_ms"] for r in rs) / len(rs),
            "mean_seconds": sum(r["seconds"] for r in rs) / len(rs),
        }
    return {"runs": runs, "summary": summary}


def grads(args: argparse.Namespace, pred: str) -> dict[str, Any]:
    """Mean |d term / d depth logits| of each term, at the start and after a few steps."""
    cfg = _cfg(args, pred, args.seeds[0], args.epochs, schedule="joint")
    space, term, penalty, data, _ = _resolve(cfg)
    s = Searcher(cfg, space, data, term, penalty)
    depth = list(s.alpha.depth)
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)

    def measure(tag: str) -> None:
        rows: dict[str, list[float]] = {"ce": [], "latency": [], "penalty_0.4": [], "hdas_objective": []}
        for _ in range(args.batches):
            idx = torch.randperm(len(s.a_half), generator=gen)[: s.batch_size]
            xv, yv = s._batch(s.a_half, idx)
            logits = s.model.net(xv, s.relaxed())
            parts = {
                "ce": torch.nn.functional.cross_entropy(logits, yv),
                "latency": s.penalty.loss(s.term.predicted_ms(s.alpha)),
                "penalty_0.4": 0.4 * S.expected_cells(s.alpha),
                "hdas_objective": S.hdas_depth_loss(s.alpha, 0.4),
            }
            for k, v in parts.items():
                g = torch.autograd.grad(v, depth, retain_graph=True, allow_unused=True)
                rows[k].append(float(torch.cat([x.abs().reshape(-1) for x in g if x is not None]).mean()))
        out[tag] = {k: sum(v) / len(v) for k, v in rows.items()}
        print(tag, json.dumps(out[tag]), flush=True)

    measure("start")
    order = torch.randperm(len(s.a_half), generator=gen)
    worder = torch.randperm(len(s.w_half), generator=gen)
    for step in range(args.grad_steps):
        sl = slice((step * s.batch_size) % (len(order) - s.batch_size), None)
        xv, yv = s._batch(s.a_half, order[sl][: s.batch_size])
        xt, yt = s._batch(s.w_half, worder[sl][: s.batch_size])
        s.arch_step(xv, yv)
        s.weight_step(xt, yt)
    measure(f"after {args.grad_steps} steps")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--variants", default="hdas,joint,joint-p0.4")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--subset", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=8)
    ap.add_argument("--arch-lr", type=float, default=3e-3)
    ap.add_argument("--latency-weight", type=float, default=1.0)
    ap.add_argument("--predictor", default=None, help="a fitted digits predictor (default: synthetic)")
    ap.add_argument("--match-time", action="store_true", help="also run hdas for about joint's wall time")
    ap.add_argument("--grads", action="store_true")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--grad-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.variants = args.variants.split(",")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pred = _predictor(args.predictor, Path(tmp))
        result = grads(args, pred) if args.grads else compare(args, pred)
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out" and not isinstance(v, Path)}
    result["predictor"] = args.predictor or "synthetic (tests/searchkit.py)"
    print(json.dumps(result.get("summary", result), indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
