"""Train a discrete architecture from scratch with the DARTS/H-DAS evaluation recipe.

SGD (momentum 0.9, weight decay 3e-4), cosine learning rate, gradient clipping, random crop +
flip from the data module, cutout, drop-path on every cell edge op that is not an identity
(its probability ramped linearly over the epochs, as DARTS), and an optional auxiliary head
after the last reduction. Drop-path and the auxiliary head wrap the deploy network with
forward hooks, so `hwnas.nets.network` stays the one definition that also writes the ONNX file.

A run directory holds `config.json` (what was asked: refuses another configuration),
`architecture.json`, `checkpoint.pt` (each epoch, atomic replace: weights, optimiser,
scheduler, every RNG state, the log so far), `log.csv` and, when done, `summary.json`.
`--resume` continues from the checkpoint and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hwnas.data.datasets import LoadedData, load_dataset
from hwnas.nets.network import Network, build_network
from hwnas.space import Architecture, load_architecture, save_architecture
from hwnas.train.recipe import TrainConfig
from targets.basics import UserError, atomic_write_bytes, atomic_write_text

RUN_KIND = "train"
SCHEMA = "hwnas.train/1"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
SUMMARY = "summary.json"
ARCHITECTURE = "architecture.json"
OWN_FILES = (CONFIG, CHECKPOINT, LOG, SUMMARY, ARCHITECTURE)
LOG_FIELDS = ("epoch", "lr", "drop_path", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")


# -- sources: an architecture file or a run directory holding one ------------------------------
@dataclass(frozen=True)
class ArchSource:
    arch: Architecture
    path: Path  # the architecture file read
    kind: str  # "architecture" | "search" | "train"
    run_dir: Path | None
    predicted_latency_ms: float | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable or not JSON ({exc.__class__.__name__}); the run is damaged") from None


def run_kind(directory: Path) -> str | None:
    """'train', 'search', 'main' (hwnas run) or another kind named by config.json; None when
    the directory holds no run config."""
    cfg_path = directory / CONFIG
    if not cfg_path.is_file():
        return None
    data = _read_json(cfg_path)
    if isinstance(data, dict) and isinstance(data.get("kind"), str):
        return data["kind"]
    if isinstance(data, dict) and ("latency_weight" in data or "latency_budget" in data or "mode" in data):
        return "search"
    return "unknown"


def resolve_source(raw: str | Path) -> ArchSource:
    """An architecture JSON, or a search/train run directory (its architecture.json)."""
    path = Path(raw)
    if path.is_dir():
        arch_path = path / ARCHITECTURE
        if not arch_path.is_file():
            raise UserError(
                f"{path}: a directory without {ARCHITECTURE}; give an architecture JSON, a search "
                "run (after it finished) or a train run"
            )
        kind = run_kind(path) or "search"
        predicted = None
        summary = path / SUMMARY
        if summary.is_file():
            data = _read_json(summary)
            if isinstance(data, dict) and isinstance(data.get("predicted_latency_ms"), int | float):
                predicted = float(data["predicted_latency_ms"])
        return ArchSource(load_architecture(arch_path), arch_path, kind, path, predicted)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; give an architecture JSON or a run directory")
    return ArchSource(load_architecture(path), path, "architecture", None, None)


# -- counting -----------------------------------------------------------------------------------
def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass at batch 1, counted with hooks on every Conv2d and
    Linear as the network runs (BatchNorm, pooling, additions and ReLU are not counted)."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return int(total)


# -- the auxiliary head, as a hook on the deploy network ----------------------------------------
def aux_anchor(net: Network) -> nn.Module:
    """Where DARTS attaches its auxiliary head: the output of the last reduction cell."""
    return net.reductions[-1]


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier, made resolution-agnostic with an adaptive pool to 2x2."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c_in, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AuxTap:
    """Keeps the anchor's latest output (training only) for the auxiliary head."""

    def __init__(self, anchor: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = anchor.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        self.value = out if module.training else None

    def take(self) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("auxiliary tap saw no training forward pass")
        v, self.value = self.value, None
        return v


def _anchor_channels(net: Network, input_shape: tuple[int, ...]) -> int:
    seen: list[int] = []
    h = aux_anchor(net).register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, *input_shape))
    h.remove()
    net.train()
    return seen[-1]


# -- RNG state (kept as tensors and ints so the checkpoint loads with weights_only=True) ---------
def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss), "kind": str(kind)},
        "python": list(_py_state_to_lists(random.getstate())),
    }


def _py_state_to_lists(state: tuple[Any, ...]) -> Iterator[Any]:
    version, internal, gauss = state
    yield version
    yield list(internal)
    yield gauss


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# -- the run directory ----------------------------------------------------------------------------
def _config_record(source: ArchSource, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "kind": RUN_KIND,
        "schema": SCHEMA,
        "arch_hash": source.arch.hash,
        "space": source.arch.space.name,
        "source": str(source.path),
        "source_kind": source.kind,
        "predicted_latency_ms": source.predicted_latency_ms,
        "config": asdict(cfg),
    }


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of what differs between two train configs (source path aside: same arch hash
    from another path is the same run)."""
    diffs = []
    if old.get("arch_hash") != new["arch_hash"]:
        diffs.append("architecture")
    old_cfg = old.get("config") or {}
    for k, v in new["config"].items():
        if old_cfg.get(k) != v:
            diffs.append(k)
    return diffs


def prepare_run_dir(out: Path, record: dict[str, Any], *, resume: bool, force: bool) -> bool:
    """Check `out` may take this run; return True when a checkpoint should be resumed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    has_files = out.is_dir() and any(out.iterdir())
    kind = run_kind(out) if out.is_dir() else None
    if force:
        if resume:
            raise UserError("--resume and --force contradict each other; pick one")
        return False
    if not has_files:
        if resume:
            raise UserError(f"{out}: holds no run to resume; drop --resume to start one")
        return False
    if kind is None:
        raise UserError(
            f"{out}: not empty and holds no hwnas run; choose an empty or new --out, or pass --force"
        )
    if kind != RUN_KIND:
        raise UserError(
            f"{out}: holds a '{kind}' run, not a train run; choose another --out (or --force to "
            "write a train run over it)"
        )
    old = _read_json(out / CONFIG)
    diffs = _same_run(old, record)
    if diffs:
        raise UserError(
            f"{out}: holds a train run with another configuration (differs in: {', '.join(diffs)}); "
            "choose another --out, or pass --force to start again there"
        )
    if not resume:
        state = "a finished" if (out / SUMMARY).is_file() else "an interrupted"
        raise UserError(
            f"{out}: already holds {state} train run with this configuration; pass --resume to "
            "continue it or --force to start again"
        )
    return True


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `train` (weights_only=True); a damaged file is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint; the run never finished an epoch (train it again)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise UserError(
            f"{path}: corrupted checkpoint ({exc.__class__.__name__}); delete it and train again "
            "(--force), or restore a copy"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("schema") != SCHEMA or "model" not in ckpt:
        raise UserError(f"{path}: not a train checkpoint of this hwnas version; train again (--force)")
    return ckpt


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class _Progress:
    """tqdm on a terminal; one line per epoch otherwise."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True)

    def step(self, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def epoch(self, row: dict[str, Any], epochs: int) -> None:
        if self.enabled and self.bar is None:
            print(
                f"   epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.3f}, train acc "
                f"{row['train_accuracy']:.3f}, test acc {row['test_accuracy']:.3f} ({row['seconds']:.1f} s)",
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- training ------------------------------------------------------------------------------------
def _load_data(cfg: TrainConfig, arch: Architecture) -> LoadedData:
    """Training data augmented on read (crop, flip where it makes sense, cutout) from torch's
    global RNG, which the checkpoint saves: a resumed run draws the same augmentations."""
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


BN_RECALIBRATION_IMAGES = 512


def recalibrate_bn(net: nn.Module, dataset: Any, n: int = BN_RECALIBRATION_IMAGES, batch_size: int = 256) -> None:
    """Set every BatchNorm's running statistics to the exact average over the first `n`
    training images (no augmentation) under the current weights.

    With a few dozen steps per epoch and a high learning rate, the exponential running
    averages lag the weights: measured on digits after 3 epochs, eval-mode accuracy 0.41
    against 0.88 with batch statistics. Recalibrated, eval mode matches the weights (as
    once-for-all and SPOS recalibrate). Deterministic (fixed images, fixed order), and it
    changes no weight, so training itself is unchanged.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    plain = dataset.with_augment(None) if hasattr(dataset, "with_augment") else dataset
    idx = list(range(min(n, len(plain))))
    momenta = [m.momentum for m in bns]
    was_training = net.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    net.train()
    try:
        with torch.no_grad():
            for i in range(0, len(idx), batch_size):
                net(torch.stack([plain[j][0] for j in idx[i : i + batch_size]]))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        net.train(was_training)


def evaluate(net: nn.Module, loader: Any) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a loader, eval mode."""
    net.eval()
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = net(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1)


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

    `stop_after` ends the call after that many epochs of this call (tests of resume);
    `recalibrate=False` keeps training's running BatchNorm averages (benchmarks only).
    """
    cfg.validate()
    arch = source.arch
    record = _config_record(source, cfg)
    resuming = prepare_run_dir(out, record, resume=resume, force=force)
    data = _load_data(cfg, arch)
    check_fits(arch, data, cfg.dataset)
    ckpt = load_checkpoint(out / CHECKPOINT) if resuming and (out / CHECKPOINT).is_file() else None
    if ckpt is not None and ckpt.get("arch_hash") != arch.hash:
        raise UserError(f"{out / CHECKPOINT}: belongs to another architecture; train again (--force)")

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    net = build_network(arch)
    input_shape = arch.space.input_shape
    aux: AuxiliaryHead | None = None
    if cfg.aux_weight > 0:
        aux = AuxiliaryHead(_anchor_channels(net, input_shape), arch.space.num_classes)
    params = list(net.parameters()) + (list(aux.parameters()) if aux is not None else [])
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.lr_min)
    rows: list[dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        try:
            net.load_state_dict(ckpt["model"])
            if aux is not None:
                aux.load_state_dict(ckpt["aux"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            _set_rng_state(ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise UserError(
                f"{out / CHECKPOINT}: does not match this run ({exc.__class__.__name__}); train again (--force)"
            ) from None
        rows = list(ckpt["log"])
        start = int(ckpt["epoch"])

    out.mkdir(parents=True, exist_ok=True)
    if ckpt is None:
        # a fresh start: clear what an earlier (forced-over) run left, so no stale file remains
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        save_architecture(arch, out / ARCHITECTURE)
        atomic_write_text(out / CONFIG, json.dumps(record, indent=2) + "\n")

    test_loader = torch.utils.data.DataLoader(data.test, batch_size=256, shuffle=False)
    n_train = len(data.train)
    batches = math.ceil(n_train / cfg.batch_size)
    tap = AuxTap(aux_anchor(net)) if aux is not None else None
    bar = _Progress(progress, cfg.epochs * batches, start * batches, f"train {arch.hash[:10]}")
    done_now = 0
    try:
        for epoch in range(start, cfg.epochs):
            if stop_after is not None and done_now >= stop_after:
                break
            t0 = time.perf_counter()
            drop_p = cfg.drop_path * epoch / cfg.epochs
            net.set_drop_path(drop_p)
            lr = optimizer.param_groups[0]["lr"]
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            net.train()
            if aux is not None:
                aux.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
                xs, ys = zip(*(data.train[i] for i in idx), strict=True)
                x = torch.stack(xs)
                y = torch.as_tensor(ys, dtype=torch.long)
                logits = net(x)
                loss = nn.functional.cross_entropy(logits, y)
                total = loss
                if aux is not None and tap is not None:
                    total = loss + cfg.aux_weight * nn.functional.cross_entropy(aux(tap.take()), y)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.step(loss=f"{loss_sum / seen:.3f}")
            scheduler.step()
            net.set_drop_path(0.0)
            if recalibrate:
                recalibrate_bn(net, data.train)
            test_loss, test_acc = evaluate(net, test_loader)
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "drop_path": drop_p,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "seconds": time.perf_counter() - t0,
            }
            rows.append(row)
            ckpt_out = {
                "schema": SCHEMA,
                "arch_hash": arch.hash,
                "epoch": epoch + 1,
                "model": net.state_dict(),
                "aux": aux.state_dict() if aux is not None else {},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "log": rows,
            }
            buf = io.BytesIO()
            torch.save(ckpt_out, buf)
            atomic_write_bytes(out / CHECKPOINT, buf.getvalue())
            _write_log(out / LOG, rows)
            bar.epoch(row, cfg.epochs)
            done_now += 1
            if on_epoch is not None:
                on_epoch(row)
    finally:
        bar.close()
        net.set_drop_path(0.0)
        if tap is not None:
            tap.handle.remove()

    net.eval()
    summary: dict[str, Any] = {}
    if rows and int(rows[-1]["epoch"]) == cfg.epochs:
        summary = {
            "kind": RUN_KIND,
            "arch_hash": arch.hash,
            "space": arch.space.name,
            "dataset": cfg.dataset,
            "test_accuracy": float(rows[-1]["test_accuracy"]),
            "train_accuracy": float(rows[-1]["train_accuracy"]),
            "params": count_params(net),
            "flops": count_macs(net, arch.space.input_shape),
            "flops_unit": "multiply-adds at batch 1 (Conv2d and Linear, counted by hooks)",
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "train_examples": n_train,
            "test_examples": len(data.test),
            "predicted_latency_ms": source.predicted_latency_ms,
            "seconds": float(sum(float(r["seconds"]) for r in rows)),
        }
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return TrainResult(net=net, summary=summary, resumed_from=start)


def load_trained(run: Path) -> tuple[Network, Architecture, dict[str, Any]]:
    """The trained network of a finished train run (eval mode), its architecture and summary."""
    kind = run_kind(run)
    if kind != RUN_KIND:
        what = "no hwnas run" if kind is None else f"a '{kind}' run"
        raise UserError(f"{run}: holds {what}, not a train run; give the --out of `hwnas train`")
    arch = load_architecture(run / ARCHITECTURE)
    ckpt = load_checkpoint(run / CHECKPOINT)
    if ckpt.get("arch_hash") != arch.hash:
        raise UserError(f"{run / CHECKPOINT}: belongs to another architecture than {run / ARCHITECTURE}")
    net = build_network(arch)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(
            f"{run / CHECKPOINT}: its weights do not fit the network of {run / ARCHITECTURE} "
            "(made by another network version?); train again"
        ) from None
    summary = _read_json(run / SUMMARY) if (run / SUMMARY).is_file() else {}
    return net.eval(), arch, summary


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
