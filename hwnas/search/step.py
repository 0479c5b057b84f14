"""The latency-aware bilevel search in memory: one step, one epoch, its state (no files).

DARTS/H-DAS's alternation, one architecture step then one weight step per batch, the
training set split 50/50 between them (`LoadedData.search_split`):

* architecture step (Adam lr 3e-4, betas (0.5, 0.999), wd 1e-3) on the architecture half:
  loss = CE + latency penalty(predictor(alpha.encode())) [+ depth_penalty * sum over stages of
  E[cells] in `joint`]; in H-DAS's stage phase a second Adam step on its depth objective
  (`hwnas.search.schedule`: the phase says which logits train). First-order by default: the gradient of that
  loss at the CURRENT weights (the same modules the weight step trains, no copy). With
  `second_order`, DARTS's unrolled step: w' = w - lr (momentum + grad + wd w), the loss at
  w', and the finite-difference Hessian-vector correction.
* weight step (SGD lr 0.025 cosine to 0.001, momentum 0.9, wd 3e-4, grad clip 5) on the
  weight half, with a fresh relaxation (a fresh sample in sampled mode).

Every epoch's randomness (batch order, augmentation, Gumbel noise) is drawn from generators
seeded by (seed, epoch), and the checkpoint written at the end of each epoch holds every
other state (weights, BatchNorm statistics, logits, both optimisers, the schedule, the
latency penalty, the log): a run killed at any moment and resumed ends with exactly the
architecture of the uninterrupted run (same seed, CPU).

On a GPU (`cfg.device`): the training images live on the device and are cropped, flipped
and cut out there in batches (`augment_batch`, from a generator on the device), the
supernet runs channels_last under bf16 autocast (`cfg.precision`; the logits, their
gradients, the predictor and the losses stay fp32), and the per-step losses and counts
are summed on the device and read once per epoch. On the CPU every figure is as before.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from hwnas import devices
from hwnas.data.augment import ImageTensorDataset, augment_batch
from hwnas.search import dist as D
from hwnas.search import schedule as S
from hwnas.search.config import SearchConfig, search_channels, search_resolution
from hwnas.search.derive import derive, expected_depth, param_free_share
from hwnas.search.relax import relax
from hwnas.search.second_order import unrolled_gradient
from hwnas.search.supernet import SearchModel
from hwnas.space import Architecture, SpaceConfig
from hwnas.space.encoding import ArchParameters
from targets.basics import UserError

CHECKPOINT_FORMAT = "hwnas.search-checkpoint/1"


def _seeded(*key: int) -> torch.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class Searcher:
    """One search in memory: model, optimisers, data, latency penalty (no files)."""

    def __init__(
        self,
        cfg: SearchConfig,
        space: SpaceConfig,
        data: Any,
        term: Any = None,
        penalty: Any = None,
        info: D.DistInfo | None = None,
        device: torch.device | None = None,
        phase: S.Phase | None = None,
        cells: Architecture | None = None,
    ):
        """`phase` (default: the schedule's only or first phase) says which logits train;
        `cells`: the genotypes a phase that holds the cells holds them at."""
        self.cfg = cfg
        self.space = space
        self.data = data
        self.term = term
        self.penalty = penalty
        self.info = info or D.DistInfo()
        self.device = device or torch.device("cpu")
        self.phase = phase or S.phases(cfg.schedule, cfg.epochs)[0]
        self.cells = cells
        # phase 0 keeps the seeds of a one-phase search; later phases draw their own
        self.key = (cfg.seed,) if self.phase.index == 0 else (cfg.seed, 0x9BA5E, self.phase.index)
        alpha = ArchParameters(space, generator=_seeded(cfg.seed, 0xA1FA))
        if not self.phase.train_cells:
            if cells is None:
                raise ValueError(f"phase {self.phase.name!r} holds the cells: give their genotypes")
            S.hold_cells(alpha, cells)
        res = search_resolution(cfg, space)
        with torch.random.fork_rng(devices=[]):  # the weights' init from the seed; the caller's RNG untouched
            torch.manual_seed(cfg.seed if self.phase.index == 0 else int(_seeded(*self.key).initial_seed()))
            model = SearchModel(
                alpha, search_channels(cfg, space), None if res == space.input_size * space.upsample else res
            )
        self.model = model.to(self.device)
        self.placement = devices.Placement(self.device, devices.resolve_precision(cfg.precision, self.device))
        # on the CPU each image is augmented on read, as always (the exact figures); elsewhere
        # the images sit on the device and batches are augmented there (`_resident`)
        self.batched_data = self.device.type != "cpu"
        # augmentation draws from a generator of the search's own, reseeded every epoch
        self.augment_rng = torch.Generator(device=self.device if self.batched_data else "cpu")
        if not self.batched_data:
            data.train.generator = self.augment_rng
        # channels_last on CPU: pooling and convolutions ~18 % faster per step (digits supernet
        # at 8x8, C = 8; docs/benchmarks.md); one process only (collectives want contiguous).
        # On CUDA: cuDNN's NHWC kernels (bf16 tensor cores); set after the broadcast below.
        self.channels_last = (self.device.type == "cpu" and self.info.world == 1) or self.device.type == "cuda"
        self.alpha = self.model.alpha
        held = S.held_groups(self.phase)
        for group in held:  # held logits: not trained, not differentiated
            for p in getattr(self.alpha, group):
                p.requires_grad_(False)
        #: the logits this phase trains (all of them in `joint`)
        self.arch_params = [p for g in ("alpha", "beta", "depth", "conn_alpha", "conn_beta") if g not in held
                            for p in getattr(self.alpha, g)]
        D.broadcast_(self.model.weights() + self.model.arch_parameters(), self.info)
        if self.channels_last:
            self.model.net.to(memory_format=torch.channels_last)
        self.w_optim = torch.optim.SGD(
            self.model.weights(), cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
        )
        self.a_optim = torch.optim.Adam(
            self.arch_params, cfg.a_lr, betas=tuple(cfg.a_betas), weight_decay=cfg.a_weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optim, self.phase.epochs, eta_min=cfg.w_lr_min)
        self.w_half, self.a_half = data.search_split(cfg.seed)
        self._resident: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]] = {}
        if self.batched_data:
            self._place_data()
        n = min(len(self.w_half), len(self.a_half))
        self.batch_size = min(cfg.batch_size, n)
        if self.batch_size < max(2, 2 * self.info.world):
            raise UserError(
                f"dataset {cfg.dataset!r}: {len(data.train)} training images leave {n} per half of the "
                "search split, too few for a batch; use more data (--subset) or a smaller --batch-size"
            )
        self.steps_per_epoch = n // self.batch_size
        self.epoch = 0
        self.rows: list[dict[str, Any]] = []
        self.gumbel: torch.Generator | None = None
        self.tau = cfg.tau_max

    # -- one step ----------------------------------------------------------------------------
    def price_per_ms(self) -> float:
        """The latency penalty's loss per ms now (0 without a latency term): the exchange
        rate `--derive priced` uses."""
        return 0.0 if self.penalty is None else float(self.penalty.price_per_ms)

    def derive(self) -> tuple[Architecture, list[str]]:
        """The discrete architecture now, by the run's derive rule, and its changes' log (the
        price changes only what this phase searches: held cells or stages stay held)."""
        kinds = {"node"} if self.phase.train_cells else set()
        kinds |= {"depth", "slot"} if self.phase.train_stages else set()
        price = self.price_per_ms() if self.cfg.derive == "priced" else 0.0
        return derive(self.alpha, self.cfg.max_param_free, term=self.term, price=price, kinds=frozenset(kinds))

    def relaxed(self) -> Any:
        r = relax(
            self.alpha, self.cfg.mode, k=self.cfg.samples, tau=self.tau, generator=self.gumbel,
            sample_inputs=self.cfg.sample_inputs,
        )
        return r if self.phase.train_cells and self.phase.train_stages else S.held_relaxation(r, self.alpha, self.phase)

    def depth_loss(self) -> torch.Tensor:
        """The depth term of the architecture loss: depth_penalty x expected cells (`joint`)."""
        if self.phase.depth_objective != "penalty":
            return torch.zeros((), device=self.device)
        return self.cfg.depth_weight * S.expected_cells(self.alpha)

    def depth_step(self) -> float:
        """H-DAS's second architecture step (stage phase): Adam on -cal_depth + penalty x E[cells]."""
        loss = S.hdas_depth_loss(self.alpha, self.cfg.depth_weight)
        grads = torch.autograd.grad(loss, self.arch_params, allow_unused=True)
        for p, g in zip(self.arch_params, grads, strict=True):
            p.grad = g.detach() if g is not None else torch.zeros_like(p)
        D.average_grads(self.arch_params, self.info)
        self.a_optim.step()
        self.a_optim.zero_grad(set_to_none=True)
        return float(loss.detach())

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The architecture step's task loss (cross-entropy; tests put a stand-in task here)."""
        return F.cross_entropy(logits, y)

    def arch_loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE + latency penalty + depth penalty (the last two do not depend on the weights)."""
        ce = self.task_loss(logits, y)
        loss = ce + self.depth_loss()
        parts = {"ce": float(ce.detach())}
        if self.term is not None:
            ms = self.term.predicted_ms(self.alpha)
            lat = self.penalty.loss(ms)
            loss = loss + lat
            parts.update(relaxed_ms=float(ms.detach()), latency_loss=float(lat.detach()))
        return loss, parts

    def arch_gradient(
        self, xv: torch.Tensor, yv: torch.Tensor, xt: torch.Tensor | None = None, yt: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, float]]:
        """Gradients of the architecture loss for every logit this phase trains (`arch_params`),
        the validation logits, and the loss parts. First-order: at the current weights."""
        params = self.arch_params
        r = self.relaxed()
        if not self.cfg.second_order:
            with self.placement.autocast():
                logits = self.model.net(xv, r)
            logits = logits.float()  # the architecture loss in fp32 (a no-op at fp32)
            loss, parts = self.arch_loss(logits, yv)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)], logits, parts
        assert xt is not None and yt is not None
        return unrolled_gradient(self, xt, yt, xv, yv, r)

    def arch_step(self, xv, yv, xt=None, yt=None) -> tuple[torch.Tensor, dict[str, float]]:  # type: ignore[no-untyped-def]
        grads, logits, parts = self.arch_gradient(xv, yv, xt, yt)
        params = self.arch_params
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        D.average_grads(params, self.info)
        self.a_optim.step()
        self.a_optim.zero_grad(set_to_none=True)
        if self.phase.depth_objective == "hdas":
            parts["depth_objective"] = self.depth_step()
        if self.term is not None:
            with torch.no_grad():
                relaxed_ms = float(self.term.predicted_ms(self.alpha))
            derived_ms = self.term.derived_ms(self.alpha.derive())
            self.penalty.update(relaxed_ms, derived_ms)
        return logits, parts

    def weight_step(self, xt: torch.Tensor, yt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight step; returns the logits and the loss, both detached on the device
        (read once per epoch: no host synchronisation here)."""
        with torch.no_grad():
            r = self.relaxed()
        with self.placement.autocast():
            logits = self.model.net(xt, r)
        logits = logits.float()
        loss = F.cross_entropy(logits, yt)
        weights = self.model.weights()
        self.w_optim.zero_grad(set_to_none=True)
        loss.backward(inputs=weights)
        D.average_grads(weights, self.info)
        torch.nn.utils.clip_grad_norm_(weights, self.cfg.w_grad_clip)
        self.w_optim.step()
        return logits.detach(), loss.detach()

    # -- one epoch ---------------------------------------------------------------------------
    def _place_data(self) -> None:
        """The halves' images, labels and indices on the device, once (a few hundred MB for
        CIFAR-10 as float32: small next to a GPU's memory)."""
        on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for ds in (self.w_half, self.a_half):
            base, index = (ds.dataset, list(ds.indices)) if isinstance(ds, Subset) else (ds, None)
            if not isinstance(base, ImageTensorDataset):
                continue  # another kind of data set (benchmarks): read item by item
            if id(base) not in on_device:
                on_device[id(base)] = (base.images.to(self.device), base.labels.to(self.device))
            images, labels = on_device[id(base)]
            rows = torch.arange(len(base)) if index is None else torch.as_tensor(index, dtype=torch.long)
            self._resident[id(ds)] = (images, labels, rows.to(self.device), base.augment)

    def _batch(self, ds: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx[self.info.rank :: self.info.world]
        if id(ds) in self._resident:  # on the device: gather, then augment the batch there
            images, labels, rows, aug = self._resident[id(ds)]
            sel = rows[idx.to(self.device)]
            x = images[sel]
            if aug is not None:
                x = augment_batch(x, aug, self.augment_rng)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, labels[sel]
        items = [ds[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items]).to(self.device)
        y = torch.stack([torch.as_tensor(it[1]) for it in items]).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def run_epoch(self, on_step: Callable[[Searcher, int], None] | None = None, bar: Any = None) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch
        t0 = time.perf_counter()
        span = max(1, self.phase.epochs - 1)
        self.tau = cfg.tau_max - (cfg.tau_max - cfg.tau_min) * e / span
        order = _seeded(*self.key, e, 1)
        w_perm = torch.randperm(len(self.w_half), generator=order)
        a_perm = torch.randperm(len(self.a_half), generator=order)
        if self.batched_data:  # one copy per epoch, not one per step
            w_perm, a_perm = w_perm.to(self.device), a_perm.to(self.device)
        self.gumbel = _seeded(*self.key, e, 2)
        self.augment_rng.manual_seed(int(torch.randint(0, 2**62, (), generator=_seeded(*self.key, e, 3))))
        self.model.train()
        # summed on the device in float64 (the same additions as Python floats), read at the end
        on_dev = torch.zeros(3, dtype=torch.float64, device=self.device)  # w_loss, t_ok, v_ok
        sums = {"w_loss": 0.0, "a_loss": 0.0, "ce_val": 0.0, "latency_loss": 0.0, "n": 0.0, "t_ok": 0.0, "v_ok": 0.0, "t_n": 0.0, "v_n": 0.0}
        B = self.batch_size
        for step in range(self.steps_per_epoch):
            xv, yv = self._batch(self.a_half, a_perm[step * B : (step + 1) * B])
            xt, yt = self._batch(self.w_half, w_perm[step * B : (step + 1) * B])
            v_logits, parts = self.arch_step(xv, yv, xt, yt)
            t_logits, w_loss = self.weight_step(xt, yt)
            on_dev[0] += w_loss
            sums["ce_val"] += parts["ce"]
            sums["latency_loss"] += parts.get("latency_loss", 0.0)
            sums["n"] += 1
            on_dev[1] += (t_logits.argmax(1) == yt).sum()
            on_dev[2] += (v_logits.argmax(1) == yv).sum()
            sums["t_n"] += len(yt)
            sums["v_n"] += len(yv)
            if on_step is not None:
                on_step(self, step)
            if bar is not None:
                bar.update(e * self.steps_per_epoch + step + 1)
        sums["w_loss"], sums["t_ok"], sums["v_ok"] = on_dev.tolist()
        self.scheduler.step()
        D.assert_same(self.model.arch_parameters(), self.info, "architecture logits")
        keys = list(sums)
        tot = dict(zip(keys, D.all_sum([sums[k] for k in keys], self.info), strict=True))
        world = self.info.world
        arch, _ = self.derive()
        raw = self.alpha.derive()
        depths = expected_depth(self.alpha)
        row: dict[str, Any] = {
            "epoch": self.phase.first_epoch + e + 1,
            "phase": self.phase.name,
            "w_loss": tot["w_loss"] / max(1.0, tot["n"]),
            "ce_val": tot["ce_val"] / max(1.0, tot["n"]),
            "latency_loss": tot["latency_loss"] / max(1.0, tot["n"]),
            "depth_loss": float(self.depth_loss().detach()) if self.phase.depth_objective != "hdas"
            else float(S.hdas_depth_loss(self.alpha, self.cfg.depth_weight).detach()),
            "train_acc": tot["t_ok"] / max(1.0, tot["t_n"]),
            "val_acc": tot["v_ok"] / max(1.0, tot["v_n"]),
            "relaxed_ms": math.nan,
            "derived_ms": math.nan,
            "latency_weight": math.nan,
        }
        row["a_loss"] = row["ce_val"] + row["latency_loss"] + row["depth_loss"]
        if self.term is not None:
            with torch.no_grad():
                row["relaxed_ms"] = float(self.term.predicted_ms(self.alpha))
            row["derived_ms"] = self.term.derived_ms(arch)
            row["latency_weight"] = float(self.penalty.weight)
        for s, d in enumerate(depths):
            row[f"depth_stage{s}"] = d
        row["param_free_share"] = param_free_share(arch)
        row["param_free_share_unguarded"] = param_free_share(raw)
        row["tau"] = self.tau
        row["lr"] = self.scheduler.get_last_lr()[0]
        row["seconds"] = time.perf_counter() - t0
        row["ranks"] = world
        self.rows.append(row)
        self.epoch += 1
        return row

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "phase": self.phase.name,
            "cells": self.cells.to_dict() if self.cells is not None else None,
            "epoch": self.epoch,
            "net": self.model.net.state_dict(),
            "alpha": self.alpha.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "penalty": self.penalty.state_dict() if self.penalty is not None else None,
            "rows": [dict(r) for r in self.rows],
            "torch_rng": self.augment_rng.get_state(),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.net.load_state_dict(st["net"])
        self.alpha.load_state_dict(st["alpha"])
        self.w_optim.load_state_dict(st["w_optim"])
        self.a_optim.load_state_dict(st["a_optim"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.penalty is not None and st.get("penalty") is not None:
            self.penalty.load_state_dict(st["penalty"])
        self.rows = [dict(r) for r in st["rows"]]
        self.epoch = int(st["epoch"])
        self.augment_rng.set_state(st["torch_rng"])
