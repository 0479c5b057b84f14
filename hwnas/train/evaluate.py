"""What a trained network is worth: accuracy, parameters, multiply-adds, exact BN statistics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _device_of(net: nn.Module) -> torch.device:
    """Where the network's weights live (inputs go there); CPU for a parameterless one."""
    return next(net.parameters(), torch.empty(0)).device


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
            net(torch.zeros(1, *input_shape, device=_device_of(net)))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return int(total)


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
    dev = _device_of(net)
    try:
        with torch.no_grad():
            for i in range(0, len(idx), batch_size):
                net(torch.stack([plain[j][0] for j in idx[i : i + batch_size]]).to(dev))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        net.train(was_training)


def evaluate(net: nn.Module, loader: Any) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a loader, eval mode."""
    net.eval()
    dev = _device_of(net)
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)  # no-ops on the CPU
            logits = net(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    return loss_sum / max(n, 1), correct / max(n, 1)
