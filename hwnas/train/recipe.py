"""The training recipe as plain data: light to import (the CLI builds its flags from it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from targets.basics import UserError, check_range


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. Defaults are DARTS's, scaled down for a CPU where noted (DARTS's in brackets)."""

    dataset: str | None = None  # None: the source run's, else the space's default (digits); train.runs.resolve_dataset
    epochs: int = 10  # [600]
    batch_size: int = 64  # [96]
    lr: float = 0.05  # [0.025 at batch 96]
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    cutout: int = -1  # side of the cutout square in input pixels; -1: a quarter of the input side [16 on 32]
    drop_path: float = 0.0  # final drop-path probability [0.2]; 0 suits short CPU training
    aux_weight: float = 0.0  # auxiliary head loss weight [0.4]; 0 builds no head
    subset: int | None = None  # training examples (stratified); None: all
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (hwnas.devices); config.json records the resolved type
    precision: str | None = None  # bf16 | fp32; None: bf16 on a CUDA device that has it, else fp32

    def validate(self) -> None:
        def bad(field: str, why: str) -> UserError:
            return UserError(f"--{field.replace('_', '-')}: {why}")

        if self.epochs < 1:
            raise bad("epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", f"must be a positive number, got {self.lr}")
        if not 0 <= self.lr_min <= self.lr:
            raise bad("lr_min", f"must lie in [0, lr={self.lr}], got {self.lr_min}")
        if not 0.0 <= self.drop_path < 1.0:
            raise bad("drop_path", f"must lie in [0, 1), got {self.drop_path}")
        check_range("--aux-weight", self.aux_weight, 0)
        check_range("--weight-decay", self.weight_decay, 0)
        check_range("--seed", self.seed, 0)
        check_range("TrainConfig.momentum", self.momentum, 0, 1, below=True)
        check_range("TrainConfig.grad_clip", self.grad_clip, 0, above=True)
        if self.cutout < -1:
            raise bad("cutout", f"must be -1 (auto), 0 (off) or a side in pixels, got {self.cutout}")
        if self.subset is not None and self.subset < 1:
            raise bad("subset", f"must be >= 1, got {self.subset}")

    def cutout_size(self, input_size: int) -> int:
        return max(1, input_size // 4) if self.cutout < 0 else self.cutout

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
