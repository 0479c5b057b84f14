"""A fake GPU for CI (no CUDA here): torch.cuda's calls that the CUDA backend makes, with a
device clock that moves only when work "runs", so GPU timing is tested exactly and never
depends on this machine's speed.

Work is charged by `ChargedModule` (a real torch module that also adds device time); a CUDA
graph captured from it costs what its capture charged, and each replay adds that cost
(times `FakeGpu.speed`, to model a GPU that warms up).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from targets.backends.torch_cuda import CudaSystem

CAPTURE_ERROR = "operation not permitted when stream is capturing"


class FakeStream:
    def __init__(self, gpu: FakeGpu, name: str) -> None:
        self.gpu = gpu
        self.name = name
        self.waited: list[FakeStream] = []

    def synchronize(self) -> None:
        self.gpu.log.append(f"sync {self.name}")

    def wait_stream(self, other: FakeStream) -> None:
        self.waited.append(other)


class FakeEvent:
    def __init__(self, gpu: FakeGpu, enable_timing: bool = False) -> None:
        self.gpu = gpu
        self.enable_timing = enable_timing
        self.t: float | None = None
        self.stream: FakeStream | None = None
        self.synced = False

    def record(self, stream: FakeStream | None = None) -> None:
        self.t = self.gpu.now
        self.stream = stream or self.gpu.current
        self.synced = False

    def synchronize(self) -> None:
        self.synced = True

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.enable_timing and end.enable_timing, "events made without enable_timing"
        assert self.t is not None and end.t is not None, "event not recorded"
        return end.t - self.t


class FakeGraph:
    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu
        self.cost = 0.0  # device ms one replay takes (what its capture charged)
        self.captured = False
        self.replays = 0

    def replay(self) -> None:
        assert self.captured, "replay of a graph that was never captured"
        self.replays += 1
        self.gpu.replays += 1
        self.gpu.now += self.cost * next(self.gpu.speed)


class FakeGpu:
    """The `cuda` of a CudaSystem: what torch.cuda offers, for `count` fake GPUs."""

    def __init__(
        self,
        *,
        name: str = "NVIDIA H200",
        memory_mb: int = 143771,
        count: int = 1,
        available: bool = True,
        bf16: bool = True,
        speed: Iterable[float] | None = None,
    ) -> None:
        self.name, self.memory_mb, self.count = name, memory_mb, count
        self.available, self.bf16 = available, bf16
        self.now = 0.0  # device milliseconds
        self.speed: Iterator[float] = iter(speed) if speed is not None else itertools.repeat(1.0)
        self.default = FakeStream(self, "default")
        self.current = self.default
        self.capturing: FakeGraph | None = None
        self.graphs: list[FakeGraph] = []
        self.replays = 0
        self.log: list[str] = []

    # -- what modules call --------------------------------------------------------------
    def work(self, ms: float) -> None:
        if self.capturing is not None:
            self.capturing.cost += ms
        else:
            self.now += ms * next(self.speed)

    def host_sync(self) -> None:
        """What `.item()` or a data-dependent shape does: fails inside a capture."""
        if self.capturing is not None:
            raise RuntimeError(f"CUDA error: {CAPTURE_ERROR}\nsecond line of the error")

    # -- torch.cuda's API -----------------------------------------------------------------
    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return self.count if self.available else 0

    def is_bf16_supported(self) -> bool:
        return self.bf16

    def get_device_properties(self, index: int) -> SimpleNamespace:
        assert 0 <= index < self.count
        return SimpleNamespace(
            name=self.name, total_memory=self.memory_mb << 20, major=9, minor=0, uuid=f"u{index}"
        )

    def Stream(self, device: Any = None) -> FakeStream:  # noqa: N802 - torch's name
        return FakeStream(self, f"side{len(self.log)}")

    def current_stream(self, device: Any = None) -> FakeStream:
        return self.current

    @contextlib.contextmanager
    def stream(self, s: FakeStream) -> Iterator[None]:
        before, self.current = self.current, s
        try:
            yield
        finally:
            self.current = before

    @contextlib.contextmanager
    def device(self, index: int) -> Iterator[None]:
        self.log.append(f"device {index}")
        yield

    def Event(self, enable_timing: bool = False) -> FakeEvent:  # noqa: N802 - torch's name
        return FakeEvent(self, enable_timing)

    def CUDAGraph(self) -> FakeGraph:  # noqa: N802 - torch's name
        g = FakeGraph(self)
        self.graphs.append(g)
        return g

    @contextlib.contextmanager
    def graph(self, g: FakeGraph, stream: FakeStream | None = None, **_: Any) -> Iterator[None]:
        self.capturing = g
        try:
            with self.stream(stream or FakeStream(self, "capture")):
                yield
            g.captured = True
        finally:
            self.capturing = None

    def synchronize(self, device: Any = None) -> None:
        self.log.append("synchronize")


class ChargedModule(nn.Module):
    """A real (CPU) module that charges `ms` of fake device time per forward pass; with
    `sync` it also waits for the host, which a CUDA graph capture refuses."""

    def __init__(self, gpu: FakeGpu, ms: float = 2.0, sync: bool = False) -> None:
        super().__init__()
        self.gpu, self.ms, self.sync = gpu, ms, sync
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.gpu.work(self.ms)
        if self.sync:
            self.gpu.host_sync()
        return self.conv(x.to(self.conv.weight.dtype))


def fake_system(
    gpu: FakeGpu,
    *,
    clocks: Iterable[float | None] | None = None,
    driver: str = "580.65.06",
    cuda_version: str | None = "13.0",
    configured: list[tuple[bool, bool]] | None = None,
) -> CudaSystem:
    """A CudaSystem over `gpu`: tensors stay on the CPU, clocks come from `clocks`."""
    readings = itertools.cycle(list(clocks)) if clocks is not None else itertools.repeat(None)
    log = configured if configured is not None else []

    def reader(index: int) -> Callable[[], float | None]:
        return lambda: next(readings)

    return CudaSystem(
        cuda=gpu,
        torch_version="2.11.0+cu130",
        cuda_version=cuda_version,
        cudnn_version=lambda: 91300,
        configure=lambda benchmark, tf32: log.append((benchmark, tf32)),
        driver_version=lambda: driver,
        clock_reader=reader,
        place=lambda device: torch.device("cpu"),
    )
