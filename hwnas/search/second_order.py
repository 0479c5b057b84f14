"""DARTS's second-order architecture gradient (`--second-order`), apart from the first-order
step it replaces: w' = w - lr (momentum + grad + wd w), the architecture loss at w', and
the finite-difference Hessian-vector correction (arXiv:1806.09055, eq. 7-8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from hwnas.search.relax import Block, Relaxed

if TYPE_CHECKING:
    from hwnas.search.step import Searcher


def unrolled_gradient(
    self: Searcher,
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    r: Relaxed,
) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, float]]:
    """DARTS's second-order step (arXiv:1806.09055, eq. 7-8) with torch.func."""
    net = self.model.net
    names = [n for n, _ in net.named_parameters()]
    weights = [p for _, p in net.named_parameters()]
    buffers = dict(net.named_buffers())
    alphas = self.arch_params
    lr = self.scheduler.get_last_lr()[0]
    r_w = _detached(r)
    with self.placement.autocast():
        out_t = net(xt, r_w)
    loss_t = F.cross_entropy(out_t.float(), yt)
    g = torch.autograd.grad(loss_t, weights)
    with torch.no_grad():
        unrolled = []
        for p, gp in zip(weights, g, strict=True):
            buf = self.w_optim.state.get(p, {}).get("momentum_buffer")
            m = buf * self.cfg.w_momentum if buf is not None else 0.0
            unrolled.append(
                (p - lr * (m + gp + self.cfg.w_weight_decay * p)).detach().requires_grad_()
            )
    with self.placement.autocast():
        logits = functional_call(
            net, {**dict(zip(names, unrolled, strict=True)), **buffers}, (xv, r)
        )
    logits = logits.float()
    loss, parts = self.arch_loss(logits, yv)
    grads = torch.autograd.grad(loss, alphas + unrolled, allow_unused=True, retain_graph=True)
    dalpha = [
        gr if gr is not None else torch.zeros_like(a)
        for gr, a in zip(grads[: len(alphas)], alphas, strict=True)
    ]
    dw = [
        gr if gr is not None else torch.zeros_like(w)
        for gr, w in zip(grads[len(alphas) :], unrolled, strict=True)
    ]
    eps = 0.01 / (torch.cat([d.reshape(-1) for d in dw]).norm() + 1e-12)

    def alpha_grad_at(sign: float) -> list[torch.Tensor]:
        shifted = {
            n: (w + sign * eps * d).detach() for n, w, d in zip(names, weights, dw, strict=True)
        }
        with self.placement.autocast():
            out = functional_call(net, {**shifted, **buffers}, (xt, r))
        lt = F.cross_entropy(out.float(), yt)
        gs = torch.autograd.grad(lt, alphas, allow_unused=True, retain_graph=True)
        return [
            gg if gg is not None else torch.zeros_like(a) for gg, a in zip(gs, alphas, strict=True)
        ]

    pos, neg = alpha_grad_at(1.0), alpha_grad_at(-1.0)
    out = [da - lr * (gp - gn) / (2 * eps) for da, gp, gn in zip(dalpha, pos, neg, strict=True)]
    return out, logits.detach(), parts


def _detached(r: Any) -> Any:
    """A copy of a relaxation without its graph (for the weight-only virtual step)."""
    return Relaxed(
        [[Block(b.weights.detach(), b.active) for b in c] for c in r.cells],
        [[Block(b.weights.detach(), b.active) for b in s] for s in r.slots],
        [e.detach() for e in r.exits],
        r.active_exits,
        r.run_depth,
    )
