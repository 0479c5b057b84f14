"""DARTS's auxiliary head, attached to the deploy network with a forward hook.

The hook keeps `hwnas.nets.network` the one definition that also writes the ONNX file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hwnas.nets.network import Network


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


def anchor_channels(net: Network, input_shape: tuple[int, ...]) -> int:
    seen: list[int] = []
    h = aux_anchor(net).register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, *input_shape))
    h.remove()
    net.train()
    return seen[-1]
