"""TEMPORARY stand-in for `hwnas.data.load_dataset` (digits only) until the data module lands.

Delete once `hwnas/data.py` exists; written against its announced interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hwnas.space import SpaceConfig
from targets.errors import UserError


class _Tensors(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment: bool) -> None:
        self.x, self.y, self.augment = x, y, augment

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i]
        if self.augment:
            padded = torch.nn.functional.pad(img, (1, 1, 1, 1))
            dy, dx = torch.randint(0, 3, (2,)).tolist()
            img = padded[:, dy : dy + img.shape[1], dx : dx + img.shape[2]]
        return img, int(self.y[i])


@dataclass
class DataSplits:
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: int


def load_dataset(spec: str, space: SpaceConfig, *, subset: int | None = None, seed: int = 0, **_: Any) -> DataSplits:
    if spec != "digits":
        raise UserError(f"unknown dataset {spec!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 - 0.3) / 0.4
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    if subset:
        xtr, ytr = xtr[:subset], ytr[:subset]
        xte, yte = xte[: max(subset // 4, 10)], yte[: max(subset // 4, 10)]
    if space.in_channels != 1 or space.input_size != 8:
        raise UserError(f"dataset digits (1x8x8) does not fit space {space.name!r}")
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1)  # noqa: E731
    return DataSplits(
        _Tensors(t(xtr), torch.from_numpy(ytr), True),
        _Tensors(t(xte), torch.from_numpy(yte), False),
        10,
        1,
        8,
    )
