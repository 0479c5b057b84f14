"""Training augmentation for the search and training: per sample on the CPU, or per batch
on the batch's device.

Random crop after zero padding (input_size // 8 pixels, 4 at 32x32), horizontal flip (off
for `digits`: a mirrored digit is another glyph), optional cutout; the draws come from the
dataset's `generator` (the search and training seed it; torch's global one when none is
set). `augment_batch` does the same to a batch on its device in one call per kind (a GPU's
path: the search and training keep `augment_image` on the CPU, so CPU figures do not change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Augment:
    """Training augmentation. `crop_padding` None = input_size // 8 (4 at 32x32)."""

    crop: bool = True
    crop_padding: int | None = None
    flip: bool = True
    cutout: int = 0  # side of the square cut out (0 = off); DARTS uses 16 at 32x32

    def to_dict(self) -> dict[str, Any]:
        return {
            "crop": self.crop,
            "crop_padding": self.crop_padding,
            "flip": self.flip,
            "cutout": self.cutout,
        }


class ImageTensorDataset(Dataset):
    """Normalised images [N, C, H, W] (float32) and labels [N] (int64), augmented on read
    when `augment` is given, drawing from `generator` (None: torch's global one; the search
    and training set their own, so no library code reseeds the process). Kept in memory:
    these data sets are small."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: Augment | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment
        self.generator = generator

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index]
        if self.augment is not None:
            x = augment_image(x, self.augment, self.generator)
        return x, self.labels[index]

    def with_augment(self, augment: Augment | None) -> ImageTensorDataset:
        """The same tensors (shared, not copied) with another augmentation."""
        return ImageTensorDataset(self.images, self.labels, augment, self.generator)


def augment_image(
    x: torch.Tensor, aug: Augment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip, cutout: one image [C, H, W]."""
    g = generator
    _, h, w = x.shape
    if aug.crop:
        pad = aug.crop_padding if aug.crop_padding is not None else max(1, h // 8)
        if pad > 0:
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            i = int(torch.randint(0, 2 * pad + 1, (), generator=g))
            j = int(torch.randint(0, 2 * pad + 1, (), generator=g))
            x = padded[:, i : i + h, j : j + w]
    if aug.flip and bool(torch.rand((), generator=g) < 0.5):
        x = x.flip(-1)
    if aug.cutout > 0:
        cy = int(torch.randint(0, h, (), generator=g))
        cx = int(torch.randint(0, w, (), generator=g))
        half = aug.cutout // 2
        x = x.clone()
        x[
            :,
            max(0, cy - half) : min(h, cy + half + aug.cutout % 2),
            max(0, cx - half) : min(w, cx + half + aug.cutout % 2),
        ] = 0.0
    return x.contiguous()


def augment_batch(
    x: torch.Tensor, aug: Augment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`augment_image` for a batch [B, C, H, W], drawn and applied on the batch's device.

    The same augmentation per image (crop offsets uniform in [0, 2 pad] after zero padding,
    a flip with probability 1/2, a cutout square centred uniformly, clipped at the border),
    drawn in one call per kind for the whole batch, so a GPU never waits on the host: the
    draws differ from `augment_image`'s (the CPU search and training keep that one).
    `generator` must live on x's device (None: torch's global one there).
    """
    b, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if aug.crop:
        pad = aug.crop_padding if aug.crop_padding is not None else max(1, h // 8)
        if pad > 0:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            rows = rows + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
            cols = cols + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    if aug.flip:
        flip = torch.rand((b, 1), generator=generator, device=dev) < 0.5
        cols = torch.where(flip, cols.flip(-1), cols)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))
    x = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    if aug.cutout > 0:
        cy = torch.randint(0, h, (b, 1), generator=generator, device=dev)
        cx = torch.randint(0, w, (b, 1), generator=generator, device=dev)
        half, odd = aug.cutout // 2, aug.cutout % 2
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_y = (ys >= cy - half) & (ys < cy + half + odd)  # [B, H]
        in_x = (xs >= cx - half) & (xs < cx + half + odd)  # [B, W]
        x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
    return x
