"""The backend interface every target runtime implements (see docs/architecture.md)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from targets.spec import TargetSpec

GPU_EXTRA = "pip install 'hwnas[gpu]'"


@dataclass(frozen=True)
class ModelArtifact:
    """A network to run: its ONNX file, and for eager torch a way to build the module."""

    onnx_path: Path
    build_torch: Callable[[], torch.nn.Module] | None = None  # torch (eager) backend only


@dataclass(frozen=True)
class DeviceTiming:
    """One timed window of a device-timed runner: milliseconds per run as the device
    measured them (CUDA events around many runs), and the device's clock meanwhile."""

    ms_per_run: float
    clock_mhz: float | None = None  # e.g. the GPU's SM clock read while the window ran


class Runner(ABC):
    """A compiled model with its fixed input; `run` is what the timing protocol times."""

    @abstractmethod
    def run(self) -> None:
        """One synchronous forward pass on the fixed input (returns after the device is done)."""

    #: compiled instances behind this runner (see RotatingRunner)
    instances: int = 1

    #: True when `timed_run` is timed by the device itself; the protocol then takes its
    #: samples from `timed_run` instead of reading the host clock around `run`. Why: a
    #: GPU at batch 1 finishes a network in ~1-3 ms, and a host clock around one
    #: synchronised pass adds launch and synchronisation jitter of the same order.
    device_timed: bool = False

    def timed_run(self) -> DeviceTiming:
        """One sample: per-run time over one window. Device-timed runners override this
        (many runs between one pair of device events); the fallback times one `run` with
        the host clock, so any runner can be asked."""
        t0 = time.perf_counter_ns()
        self.run()
        return DeviceTiming((time.perf_counter_ns() - t0) / 1e6)

    def next_turn(self) -> None:  # noqa: B027 - optional hook
        """Called by the timing protocol before each turn of a runner."""

    def close(self) -> None:  # noqa: B027 - optional hook, most runners free on GC
        """Release sessions, engines and device buffers."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RotatingRunner(Runner):
    """K compiled instances (sessions) of one model, a different one each turn.

    Why: the same model in two ONNX Runtime sessions can differ by ~5 % in its minimum
    latency (memory placement), even in one process; a figure over several sessions
    repeats across processes far better (docs/benchmarks.md).
    """

    def __init__(self, runners: list[Runner]) -> None:
        if not runners:
            raise ValueError("RotatingRunner needs at least one runner")
        self._runners = runners
        self._current = 0
        self.instances = len(runners)
        self.device_timed = all(r.device_timed for r in runners)

    def run(self) -> None:
        self._runners[self._current].run()

    def timed_run(self) -> DeviceTiming:
        return self._runners[self._current].timed_run()

    def next_turn(self) -> None:
        self._current = (self._current + 1) % len(self._runners)

    def close(self) -> None:
        for r in self._runners:
            r.close()


def compile_instances(backend: Backend, model: ModelArtifact, instances: int) -> Runner:
    """`instances` compiled copies of a model behind one runner (1: the plain runner)."""
    if instances <= 1:
        return backend.compile(model)
    runners: list[Runner] = []
    try:
        for _ in range(instances):
            runners.append(backend.compile(model))
    except BaseException:
        for r in runners:
            r.close()
        raise
    return RotatingRunner(runners)


class Backend(ABC):
    """Compiles models for one TargetSpec and describes the platform (fingerprint)."""

    name: str = ""

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec

    @abstractmethod
    def check_available(self) -> None:
        """Raise RuntimeMissing (one line naming the pip extra) when the runtime is absent."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description of everything that can change a latency on this target."""

    @abstractmethod
    def compile(self, model: ModelArtifact) -> Runner:
        """Load/build the model for this target; UserError if the file is not a usable model."""
