"""A CUDA stand-in for device-placement tests on a machine without a GPU.

`OnCuda` tensors hold CPU values but report `cuda:0` and refuse what CUDA tensors refuse:
`.numpy()`, and any op that mixes them with a CPU tensor of one or more dimensions (CPU
scalars, 0-d, are allowed, as on CUDA). `FakeCuda()` also maps factory calls and `.to()`
with a CUDA device to `OnCuda`, so code that places tensors "on the device" runs on the
CPU with the same values, and a forgotten host tensor fails as it would on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

CUDA = torch.device("cuda", 0)


class OnCuda(torch.Tensor):
    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    def numpy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise TypeError(
            "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first."
        )

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_cpu(args[1:], kwargs)):
            with torch._C.DisableTorchFunctionSubclass():
                return args[0].clone()  # a plain CPU tensor
        leaves = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if any(isinstance(a, OnCuda) for a in leaves) and any(
            not isinstance(a, OnCuda) and a.dim() > 0 for a in leaves
        ):
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                f"({getattr(func, '__name__', func)})"
            )
        return super().__torch_function__(func, types, args, kwargs)


def _is_cuda(v: Any) -> bool:
    return isinstance(v, str | torch.device) and torch.device(v).type == "cuda"


def _to_cpu(args: Any, kwargs: dict[str, Any]) -> bool:
    devs = [v for v in (*args, kwargs.get("device")) if isinstance(v, str | torch.device)]
    return bool(devs) and torch.device(devs[0]).type == "cpu"


def on_cuda(t: torch.Tensor) -> torch.Tensor:
    """`t`'s values as an OnCuda tensor (a Parameter stays a Parameter)."""
    if isinstance(t, torch.nn.Parameter):
        return torch.nn.Parameter(t.detach().clone().as_subclass(OnCuda), requires_grad=t.requires_grad)
    return t.detach().clone().as_subclass(OnCuda)


class FakeCuda(TorchFunctionMode):
    """Factories and `.to()` aimed at a CUDA device produce OnCuda tensors (values on the CPU)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        wrap = False
        if _is_cuda(kwargs.get("device")):
            kwargs["device"], wrap = "cpu", True
        if func is torch.Tensor.to or func is torch.Tensor.cuda:
            new = []
            for v in args:
                if _is_cuda(v):
                    v, wrap = "cpu", True
                new.append(v)
            args = tuple(new)
            if func is torch.Tensor.cuda:
                func, wrap = torch.Tensor.clone, True
        out = func(*args, **kwargs)
        if wrap and isinstance(out, torch.Tensor) and not isinstance(out, OnCuda):
            out = out.as_subclass(OnCuda)
        return out


def params_on_cuda(module: torch.nn.Module) -> None:
    """Every parameter of `module` replaced by an OnCuda copy (same values)."""
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[name] = on_cuda(p)  # type: ignore[assignment]
