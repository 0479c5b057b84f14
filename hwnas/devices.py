"""Where a search, a training or a predictor fit runs: one resolver for `--device` and
`--precision`, so every command refuses a device that is not there the same way.

* `--device auto` (default): the first CUDA device when torch sees one, else the CPU; under
  torchrun `auto` and `cuda` mean this rank's GPU (`cuda:LOCAL_RANK`).
* `--precision`: `None` = bf16 on a CUDA device that has it (compute capability >= 8.0),
  fp32 elsewhere. bf16 is autocast for the weights' work (convolutions, BatchNorm, the
  classifier); parameters, the architecture logits, their gradients, the latency predictor
  and the losses stay fp32. bf16 on the CPU is refused: the CPU path is the exact one.

Bad input is a one-line `UserError` naming the device asked for and what this machine has;
nothing here touches process-wide state (`tune_backends` is for entry points).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from targets.basics import UserError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
PRECISIONS = ("bf16", "fp32")


def _visible() -> str:
    """What this machine has, for error messages."""
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device here (CUDA build: {torch.version.cuda or 'none'})"
    n = torch.cuda.device_count()
    return f"this machine has {n} CUDA device(s): " + ", ".join(f"cuda:{i}" for i in range(n))


def resolve_device(spec: str | None = "auto", *, local_rank: int | None = None, flag: str = "--device") -> torch.device:
    """The torch device `spec` names on this machine; UserError when it is not there.

    `local_rank` (torchrun's LOCAL_RANK) picks the GPU for `auto` and a bare `cuda`.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        text = "cuda"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {spec!r}: not a device; use {DEVICE_CHOICES}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise UserError(f"{flag} {spec}: hwnas runs on cpu or cuda only; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise UserError(f"{flag} {spec}: {_visible()}; use --device cpu (or auto)")
    index = dev.index if dev.index is not None else (local_rank or 0)
    n = torch.cuda.device_count()
    if index >= n:
        raise UserError(f"{flag} {spec}: no cuda:{index}, {_visible()}; pick one of them")
    return torch.device("cuda", index)


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """(bf16 usable, what the device is) for error messages."""
    if device.type != "cuda":
        return False, f"{device.type} (hwnas runs bf16 on CUDA only; the CPU path is the exact fp32 one)"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    return major >= 8, f"{device} is a {name}, compute capability {major}.{minor} (bf16 needs 8.0 or newer)"


def resolve_precision(precision: str | None, device: torch.device, *, flag: str = "--precision") -> str:
    """'bf16' or 'fp32' for `device`; None = bf16 where the device has it, else fp32."""
    if precision is None:
        return "bf16" if bf16_support(device)[0] else "fp32"
    text = str(precision).strip().lower()
    if text not in PRECISIONS:
        raise UserError(f"{flag} {precision!r}: use one of {', '.join(PRECISIONS)}")
    if text == "bf16":
        ok, what = bf16_support(device)
        if not ok:
            raise UserError(f"{flag} bf16 on {device}: {what}; use --precision fp32")
    return text


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision (what a run records: the device *type*)."""

    device: torch.device
    precision: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """bf16 autocast for the weights' work; nothing at fp32 (the CPU path unchanged)."""
        if self.autocast_dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            yield

    def record(self) -> dict[str, str]:
        """For config.json: the device type (not its index: a run resumes on any GPU)."""
        return {"device": self.device.type, "precision": self.precision}


def resolve(device: str | None, precision: str | None, *, local_rank: int | None = None) -> Placement:
    """Device then precision, both checked (UserError before anything is read or written)."""
    dev = resolve_device(device, local_rank=local_rank)
    return Placement(dev, resolve_precision(precision, dev))


def tune_backends(device: torch.device) -> None:
    """Entry points only (process-wide): cuDNN autotuning on CUDA, where a search or a
    training feeds the same shapes every step; see docs/search.md's determinism policy."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
