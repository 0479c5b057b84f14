"""Why a larger latency weight stops mattering under Adam: the latency and CE gradients per logit.

    python bench/search_grad_balance.py runs/bench/sweep-full/weight-0.5 --batches 8 \
        --weights 0,0.5,2,8,32

Loads a search run's checkpoint (config.json + checkpoint.pt), and at its logits and weights
computes, for every architecture logit i:

* mu_i, sigma_i: the mean and standard deviation over `--batches` validation batches of the
  gradient of the architecture loss without latency (CE + depth penalty): what Adam's first
  and second moments see besides the latency term;
* L_i: the gradient of the normalised latency (predicted / latency_0), deterministic.

Adam's steady-state step on logit i is about lr (mu_i + w L_i) / sqrt((mu_i + w L_i)^2 + sigma_i^2):
bounded by lr whatever w. The first-order change of the relaxed latency per architecture step
is then -lr sum_i L_i * that step (x latency_0 to get ms). The script prints it for each weight
next to plain SGD's -lr sum_i L_i (mu_i + w L_i) (linear in w), and the share of logits where the
latency term dominates (|w L_i| > sqrt(mu_i^2 + sigma_i^2)): when that share is near 1 the Adam
rate is flat in w, so a larger weight barely changes the search.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hwnas.search import SearchConfig, Searcher
from hwnas.search.run import CHECKPOINT_FILE, CONFIG_FILE, _resolve


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run", help="a search run directory with config.json and checkpoint.pt")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--weights", default="0,0.5,2,8,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    doc = json.loads((run / CONFIG_FILE).read_text())
    s = dict(doc["search"])
    s["a_betas"] = tuple(s["a_betas"])
    cfg = SearchConfig(**s)
    space, term, penalty, data, _ = _resolve(cfg)
    searcher = Searcher(cfg, space, data, term, penalty)
    searcher.load_state_dict(
        torch.load(run / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    )
    searcher.model.train()
    params = searcher.model.arch_parameters()

    def flat(gs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).reshape(-1)
                for g, p in zip(gs, params, strict=True)
            ]
        )

    lat = term.predicted_ms(searcher.alpha) / term.latency0_ms
    L = flat(torch.autograd.grad(lat, params, allow_unused=True)).double()
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(searcher.a_half), generator=gen)
    B = searcher.batch_size
    G = []
    for b in range(args.batches):
        xv, yv = searcher._batch(searcher.a_half, perm[b * B : (b + 1) * B])
        r = searcher.relaxed()
        ce = torch.nn.functional.cross_entropy(searcher.model.net(xv, r), yv)
        loss = ce + searcher.depth_loss()
        G.append(flat(torch.autograd.grad(loss, params, allow_unused=True)).double())
    Gs = torch.stack(G)
    mu, sigma = Gs.mean(0), Gs.std(0)
    lr = cfg.a_lr
    out = {
        "run": str(run),
        "epoch": searcher.epoch,
        "a_lr": lr,
        "latency0_ms": term.latency0_ms,
        "logits": int(L.numel()),
        "rows": [],
    }
    print(
        f"{run} at epoch {searcher.epoch}: {L.numel()} logits, a_lr {lr:g}, latency_0 "
        f"{term.latency0_ms:.4f} ms; |L| median {L.abs().median():.3g}, |mu| median "
        f"{mu.abs().median():.3g}, sigma median {sigma.median():.3g}"
    )
    print(
        "| weight | latency-dominated logits | Adam d(relaxed ms)/step | SGD-like d(relaxed ms)/step (lr x grad) |"
    )
    print("|---:|---:|---:|---:|")
    for w in (float(x) for x in args.weights.split(",")):
        g = mu + w * L
        adam = g / torch.sqrt(g * g + sigma * sigma + 1e-30)
        d_adam = -lr * float((L * adam).sum()) * term.latency0_ms
        d_sgd = -lr * float((L * g).sum()) * term.latency0_ms
        dom = float(((w * L).abs() > torch.sqrt(mu * mu + sigma * sigma)).double().mean())
        out["rows"].append(
            {"weight": w, "dominated": dom, "adam_ms_per_step": d_adam, "sgd_ms_per_step": d_sgd}
        )
        print(f"| {w:g} | {dom:.1%} | {d_adam:+.4g} | {d_sgd:+.4g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
