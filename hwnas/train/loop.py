"""Train a discrete architecture from scratch with the DARTS/H-DAS evaluation recipe.

SGD (momentum 0.9, weight decay 3e-4), cosine learning rate, gradient clipping, random crop +
flip from the data module, cutout, drop-path on every cell edge op that is not an identity
(its probability ramped linearly over the epochs, as DARTS), and an optional auxiliary head
after the last reduction. Drop-path and the auxiliary head wrap the deploy network with
forward hooks, so `hwnas.nets.network` stays the one definition that also writes the ONNX file.

A run directory holds `config.json` (what was asked: refuses another configuration),
`architecture.json`, `checkpoint.pt` (each epoch, atomic replace: weights, optimiser,
scheduler, the run's random generator, the log so far), `log.csv` and, when done,
`summary.json`. The data is the source run's (a search or train run recorded it), else the
one asked for (`cfg.dataset`), else digits for the digits space. `--resume` continues from the checkpoint and ends bit-identical to an
uninterrupted run. Randomness (initial weights, augmentation, drop-path) comes from the
run's own generator seeded by `cfg.seed`; the process's global generators are left alone.

On a GPU (`cfg.device`, `hwnas.devices`) the network runs channels_last under bf16 autocast
(`cfg.precision`), the training images sit on the device and are augmented there in batches
(`augment_batch`), drop-path and augmentation draw from a generator on the device (reseeded
each epoch from the run's generator, its state in the checkpoint too), and losses and counts
are read once per epoch. On the CPU every figure is as before.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwnas import devices
from hwnas.data.augment import augment_batch
from hwnas.data.datasets import LoadedData, load_dataset
from hwnas.nets.network import Network, build_network
from hwnas.space import Architecture, save_architecture
from hwnas.train.aux_head import AuxiliaryHead, AuxTap, anchor_channels, aux_anchor
from hwnas.train.evaluate import count_macs, count_params, evaluate, recalibrate_bn
from hwnas.train.recipe import TrainConfig
from hwnas.train.runs import (
    ARCHITECTURE,
    CHECKPOINT,
    CONFIG,
    LOG,
    LOG_FIELDS,
    OWN_FILES,
    RUN_KIND,
    SCHEMA,
    SUMMARY,
    ArchSource,
    _config_record,
    load_checkpoint,
    load_trained,
    prepare_run_dir,
    resolve_dataset,
    resolve_source,
)
from targets.basics import UserError, atomic_write_bytes, atomic_write_text, strict_json
from targets.progress import Progress


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _load_data(cfg: TrainConfig, arch: Architecture) -> LoadedData:
    """Training data augmented on read (crop, flip where it makes sense, cutout)."""
    return load_dataset(
        cfg.dataset, arch.space, subset=cfg.subset, seed=cfg.seed, cutout=cfg.cutout_size(arch.space.input_size)
    )


def check_fits(arch: Architecture, data: Any, dataset: str) -> None:
    """The network's input and classifier must match the data: a clear error otherwise."""
    space = arch.space
    x, _ = data.train[0]
    shape = tuple(x.shape)
    if shape[0] != space.in_channels:
        raise UserError(
            f"architecture of space '{space.name}' takes {space.in_channels} input channel(s) but "
            f"dataset '{dataset}' has {shape[0]}; pick an architecture of a space made for this dataset"
        )
    if shape[1:] != (space.input_size, space.input_size):
        raise UserError(
            f"architecture of space '{space.name}' takes {space.input_size}x{space.input_size} inputs "
            f"but dataset '{dataset}' gives {shape[1]}x{shape[2]}"
        )
    if int(data.num_classes) != space.num_classes:
        raise UserError(
            f"architecture of space '{space.name}' has {space.num_classes} classes but dataset "
            f"'{dataset}' has {data.num_classes}; pick an architecture of a space made for this dataset"
        )


@dataclass
class TrainResult:
    net: Network
    summary: dict[str, Any]
    resumed_from: int


@dataclass
class _Run:
    """One training in memory: network, head, optimiser, schedule, generator, log."""

    net: Network
    aux: AuxiliaryHead | None
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rng: torch.Generator  # augmentation and drop-path draw from it
    rows: list[dict[str, Any]]
    start: int
    placement: devices.Placement = devices.Placement(torch.device("cpu"), "fp32")
    dev_rng: torch.Generator | None = None  # on a GPU: augmentation and drop-path masks there


def _build(arch: Architecture, cfg: TrainConfig, placement: devices.Placement | None = None) -> _Run:
    """Network (and head) initialised from the seed without touching the caller's RNG; the
    run's generator continues the same stream, so augmentation draws what it always drew.
    Built on the CPU (the same initial weights anywhere), then moved to the run's device."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build_network(arch)
        aux = None
        if cfg.aux_weight > 0:
            aux = AuxiliaryHead(anchor_channels(net, arch.space.input_shape), arch.space.num_classes)
        rng = torch.Generator()
        rng.set_state(torch.get_rng_state())
    placement = placement or devices.Placement(torch.device("cpu"), "fp32")
    dev_rng = None
    if placement.device.type != "cpu":
        net.to(placement.device, memory_format=torch.channels_last)
        if aux is not None:
            aux.to(placement.device, memory_format=torch.channels_last)
        dev_rng = torch.Generator(device=placement.device)
    params = list(net.parameters()) + (list(aux.parameters()) if aux is not None else [])
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr_min)
    return _Run(net, aux, params, optimizer, scheduler, rng, [], 0, placement, dev_rng)


def _restore(run: _Run, ckpt: dict[str, Any], path: Path) -> None:
    try:
        run.net.load_state_dict(ckpt["model"])
        if run.aux is not None:
            run.aux.load_state_dict(ckpt["aux"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.rng.set_state(ckpt["rng"]["torch"])
        if run.dev_rng is not None and "device" in ckpt["rng"]:
            run.dev_rng.set_state(ckpt["rng"]["device"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise UserError(
            f"{path}: does not match this run ({exc.__class__.__name__}); train again (--force)"
        ) from None
    run.rows = list(ckpt["log"])
    run.start = int(ckpt["epoch"])


def _checkpoint(run: _Run, arch: Architecture, epoch: int) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "schema": SCHEMA,
            "arch_hash": arch.hash,
            "epoch": epoch,
            "model": run.net.state_dict(),
            "aux": run.aux.state_dict() if run.aux is not None else {},
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": {"torch": run.rng.get_state(), **({"device": run.dev_rng.get_state()} if run.dev_rng else {})},
            "log": run.rows,
        },
        buf,
    )
    return buf.getvalue()


def _train_epoch(
    run: _Run, data: LoadedData, cfg: TrainConfig, epoch: int, tap: AuxTap | None, bar: Progress
) -> dict[str, float]:
    """One epoch of SGD over the training set in a seeded order; loss and accuracy sums."""
    n_train = len(data.train)
    batches = math.ceil(n_train / cfg.batch_size)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    run.net.train()
    if run.aux is not None:
        run.aux.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for b in range(batches):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
        xs, ys = zip(*(data.train[i] for i in idx), strict=True)
        x = torch.stack(xs)
        y = torch.as_tensor(ys, dtype=torch.long)
        logits = run.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        total = loss
        if run.aux is not None and tap is not None:
            total = loss + cfg.aux_weight * nn.functional.cross_entropy(run.aux(tap.take()), y)
        run.optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        run.optimizer.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.update(epoch * batches + b + 1, loss=f"{loss_sum / seen:.3f}")
    return {"train_loss": loss_sum / seen, "train_accuracy": correct / seen}


def _train_epoch_on_device(
    run: _Run, data: LoadedData, cfg: TrainConfig, epoch: int, tap: AuxTap | None, bar: Progress,
    resident: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """`_train_epoch` on a GPU: the same seeded order, the batch gathered and augmented on the
    device, bf16 autocast, sums read once at the end (no host synchronisation per step)."""
    assert run.dev_rng is not None
    dev = run.placement.device
    images, labels = resident
    n_train = len(data.train)
    batches = math.ceil(n_train / cfg.batch_size)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).to(dev)
    run.dev_rng.manual_seed(int(torch.randint(0, 2**62, (), generator=run.rng)))
    run.net.train()
    if run.aux is not None:
        run.aux.train()
    sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss x examples, correct
    aug = data.train.augment
    for b in range(batches):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x, y = images[idx], labels[idx]
        if aug is not None:
            x = augment_batch(x, aug, run.dev_rng)
        x = x.contiguous(memory_format=torch.channels_last)
        with run.placement.autocast():
            logits = run.net(x)
            aux_logits = run.aux(tap.take()) if run.aux is not None and tap is not None else None
        loss = nn.functional.cross_entropy(logits.float(), y)
        total = loss
        if aux_logits is not None:
            total = loss + cfg.aux_weight * nn.functional.cross_entropy(aux_logits.float(), y)
        run.optimizer.zero_grad(set_to_none=True)
        total.backward()
        nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        run.optimizer.step()
        sums[0] += loss.detach() * len(y)
        sums[1] += (logits.argmax(1) == y).sum()
        bar.update(epoch * batches + b + 1)
    loss_sum, correct = sums.tolist()
    return {"train_loss": loss_sum / n_train, "train_accuracy": correct / n_train}


def _summary(run: _Run, arch: Architecture, cfg: TrainConfig, data: LoadedData, source: ArchSource) -> dict[str, Any]:
    return {
        "kind": RUN_KIND,
        "arch_hash": arch.hash,
        "space": arch.space.name,
        "dataset": cfg.dataset,
        "test_accuracy": float(run.rows[-1]["test_accuracy"]),
        "train_accuracy": float(run.rows[-1]["train_accuracy"]),
        "params": count_params(run.net),
        "flops": count_macs(run.net, arch.space.input_shape),
        "flops_unit": "multiply-adds at batch 1 (Conv2d and Linear, counted by hooks)",
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "train_examples": len(data.train),
        "test_examples": len(data.test),
        "predicted_latency_ms": source.predicted_latency_ms,
        "seconds": float(sum(float(r["seconds"]) for r in run.rows)),
    }


def train(
    source: ArchSource,
    cfg: TrainConfig,
    out: Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    recalibrate: bool = True,
) -> TrainResult:
    """Train `source.arch` into run directory `out` (see the module docstring).

    `progress`: a bar on a terminal, a line every ~10 s and one per epoch elsewhere.
    `stop_after` ends the call after that many epochs of this call (tests of resume);
    `recalibrate=False` keeps training's running BatchNorm averages (benchmarks only).
    """
    cfg.validate()
    cfg = replace(cfg, dataset=resolve_dataset(source, cfg.dataset))
    placement = devices.resolve(cfg.device, cfg.precision)
    arch = source.arch
    record = {**_config_record(source, cfg), **placement.record()}
    resuming = prepare_run_dir(out, record, resume=resume, force=force)
    data = _load_data(cfg, arch)
    check_fits(arch, data, cfg.dataset)
    ckpt = load_checkpoint(out / CHECKPOINT) if resuming and (out / CHECKPOINT).is_file() else None
    if ckpt is not None and ckpt.get("arch_hash") != arch.hash:
        raise UserError(f"{out / CHECKPOINT}: belongs to another architecture; train again (--force)")
    run = _build(arch, cfg, placement)
    if ckpt is not None:
        _restore(run, ckpt, out / CHECKPOINT)
    data.train.generator = run.rng
    resident = None
    if run.dev_rng is not None:  # the training images on the device, once
        resident = (data.train.images.to(placement.device), data.train.labels.to(placement.device))

    out.mkdir(parents=True, exist_ok=True)
    if ckpt is None:
        # a fresh start: clear what an earlier (forced-over) run left, so no stale file remains
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        save_architecture(arch, out / ARCHITECTURE)
        atomic_write_text(out / CONFIG, strict_json(record, indent=2) + "\n")

    # the loader draws its base seed from the run's generator each epoch, as it always drew
    # it from the stream augmentation uses: the same figures as before runs had generators
    test_loader = torch.utils.data.DataLoader(data.test, batch_size=256, shuffle=False, generator=run.rng)
    batches = math.ceil(len(data.train) / cfg.batch_size)
    tap = AuxTap(aux_anchor(run.net)) if run.aux is not None else None
    bar = Progress(
        cfg.epochs * batches, f"train {arch.hash[:10]}", initial=run.start * batches, unit="batch",
        enabled=progress,
    )  # fmt: skip
    done_now = 0
    try:
        for epoch in range(run.start, cfg.epochs):
            if stop_after is not None and done_now >= stop_after:
                break
            t0 = time.perf_counter()
            drop_p = cfg.drop_path * epoch / cfg.epochs
            lr = run.optimizer.param_groups[0]["lr"]
            if resident is None:
                run.net.set_drop_path(drop_p, run.rng)
                sums = _train_epoch(run, data, cfg, epoch, tap, bar)
            else:
                run.net.set_drop_path(drop_p, run.dev_rng)
                sums = _train_epoch_on_device(run, data, cfg, epoch, tap, bar, resident)
            run.scheduler.step()
            run.net.set_drop_path(0.0)
            if recalibrate:
                recalibrate_bn(run.net, data.train)
            test_loss, test_acc = evaluate(run.net, test_loader)
            row = {
                "epoch": epoch + 1, "lr": lr, "drop_path": drop_p, **sums, "test_loss": test_loss,
                "test_accuracy": test_acc, "seconds": time.perf_counter() - t0,
            }  # fmt: skip
            run.rows.append(row)
            atomic_write_bytes(out / CHECKPOINT, _checkpoint(run, arch, epoch + 1))
            _write_log(out / LOG, run.rows)
            if progress and bar.bar is None:
                print(
                    f"   epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.3f}, train acc "
                    f"{row['train_accuracy']:.3f}, test acc {row['test_accuracy']:.3f} ({row['seconds']:.1f} s)",
                    flush=True,
                )
            done_now += 1
            if on_epoch is not None:
                on_epoch(row)
    finally:
        bar.close()
        run.net.set_drop_path(0.0)
        if tap is not None:
            tap.handle.remove()

    run.net.eval()
    summary: dict[str, Any] = {}
    if run.rows and int(run.rows[-1]["epoch"]) == cfg.epochs:
        summary = _summary(run, arch, cfg, data, source)
        atomic_write_text(out / SUMMARY, strict_json(summary, indent=2) + "\n")
    return TrainResult(net=run.net, summary=summary, resumed_from=run.start)


__all__ = [
    "ArchSource",
    "TrainConfig",
    "TrainResult",
    "count_macs",
    "count_params",
    "load_trained",
    "resolve_source",
    "train",
]
