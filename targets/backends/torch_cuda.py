"""PyTorch on a CUDA GPU, timed by the GPU: eager (`torch-cuda`) or one captured CUDA graph
(`torch-cuda-graph`, options.cuda_graph).

Why it is built this way (H200 probes, torch 2.11 + CUDA 13, docs/targets.md):

* Timed by CUDA events on the runner's own stream, `runs_per_sample` runs between one
  event pair, one sample = their mean. A host clock around one synchronised pass of a
  ~2 ms network adds launch and wake-up jitter of the same order: eager timed that way
  had medians 30-75 % above its minimum and re-measured within ±5 % only half the time.
* A CUDA graph, captured once and replayed, takes Python and the launch path out of the
  figure: 10 rounds in one process spread 1.6-1.9 %, two processes agreed within 0.15 %.
* cuDNN benchmark mode off by default (options.cudnn_benchmark): with it on, each process
  picks its own kernels by timing them and two processes differed by up to 1.8 %.
* The backend sets torch's cuDNN benchmark and TF32 flags to the target's options at
  every compile, so the fingerprint (which records the options) is what ran. It never
  changes clocks or any other GPU setting; it reads the SM clock (nvidia-ml-py, when
  installed) while timing and stores it beside each figure, not in the fingerprint.

Everything CUDA goes through a `CudaSystem` (torch.cuda, the cuDNN flags, NVML), so tests
without a GPU drive the same code with a fake (tests/fake_cuda.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.backends.base import DeviceTiming, ModelArtifact, Runner
from targets.backends.torch_eager import TorchEagerBackend, _import_torch
from targets.basics import RuntimeMissing, UserError
from targets.fingerprint import base_fingerprint, cuda_index, nvidia_driver_version

if TYPE_CHECKING:
    from targets.spec import TargetSpec

# Eager passes on a side stream before capture (cuDNN/cuBLAS pick kernels and allocate
# workspaces lazily; none of that may happen inside a capture).
CAPTURE_WARMUP = 3


@dataclass
class CudaSystem:
    """What the CUDA backend touches, in one place: the real one is torch's; tests pass a
    fake with the same calls. `clock_reader(index)` gives a function that reads the SM
    clock in MHz (None when it cannot)."""

    cuda: Any  # torch.cuda: is_available, device_count, get_device_properties, Stream, Event,
    #            CUDAGraph, graph, stream, device, current_stream, is_bf16_supported
    torch_version: str
    cuda_version: str | None  # torch.version.cuda (None: a CPU-only build of torch)
    cudnn_version: Callable[[], int | None]
    configure: Callable[[bool, bool], None]  # (cudnn_benchmark, tf32) -> set torch's flags
    driver_version: Callable[[], str | None]
    clock_reader: Callable[[int], Callable[[], float | None]]
    place: Callable[[str], Any]  # "cuda:1" -> the torch.device tensors go to

    def no_grad(self) -> Any:
        return _import_torch().inference_mode()


def _configure(benchmark: bool, tf32: bool) -> None:
    torch = _import_torch()
    torch.backends.cudnn.benchmark = bool(benchmark)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
    except Exception:  # noqa: BLE001 - optional: no NVML, no reading
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _driver_version() -> str | None:
    """/proc first (no extra package), NVML where /proc says nothing (some containers)."""
    return nvidia_driver_version() or _nvml_driver()


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """The NVML handle of torch's cuda:`index` (NVML numbers all GPUs; CUDA only the
    visible ones, so match by UUID or PCI bus, by index only without CUDA_VISIBLE_DEVICES)."""
    torch = _import_torch()
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    for candidate in [uuid, f"GPU-{uuid}"] if uuid else []:
        with contextlib.suppress(Exception):
            return pynvml.nvmlDeviceGetHandleByUUID(candidate)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain = int(getattr(props, "pci_domain_id", 0) or 0)
        dev = int(getattr(props, "pci_device_id", 0) or 0)
        with contextlib.suppress(Exception):
            return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{int(bus):02x}:{dev:02x}.0")
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    return None


def nvml_clock_reader(index: int) -> Callable[[], float | None]:
    """A function reading cuda:`index`'s SM clock (MHz) via NVML; one returning None when
    nvidia-ml-py is not installed or the GPU cannot be matched. Reads only, never sets."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml, index)
    except Exception:  # noqa: BLE001 - a clock reading is optional
        handle = None
    if handle is None:
        return lambda: None

    def read() -> float | None:
        try:
            return float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
        except Exception:  # noqa: BLE001
            return None

    return read


def cuda_system() -> CudaSystem:
    """The real CudaSystem (imports torch)."""
    torch = _import_torch()
    return CudaSystem(
        cuda=torch.cuda,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        cudnn_version=torch.backends.cudnn.version,
        configure=_configure,
        driver_version=_driver_version,
        clock_reader=nvml_clock_reader,
        place=torch.device,
    )


class CudaRunner(Runner):
    """`step` (an eager forward pass, or one graph replay) on the runner's own stream.

    `run` is one step then a wait for the stream; `timed_run` is `runs` steps between one
    pair of CUDA events on that stream and reports their mean, with the SM clock read
    while the GPU works through them. Steps are issued back to back, as a serving loop
    issues them: the figure is the network's time on the GPU, not the host's wake-up.
    """

    device_timed = True

    def __init__(
        self,
        step: Callable[[], Any],
        cuda: Any,
        stream: Any,
        runs: int,
        clock: Callable[[], float | None] | None = None,
        keep: tuple[Any, ...] = (),
    ) -> None:
        if runs < 1:
            raise ValueError("runs must be >= 1")
        self._step = step
        self._cuda = cuda
        self._stream = stream
        self._runs = runs
        self._clock = clock or (lambda: None)
        self._keep = keep  # module, inputs, graph, outputs: alive as long as the runner
        self._start = cuda.Event(enable_timing=True)
        self._end = cuda.Event(enable_timing=True)

    def run(self) -> None:
        with self._cuda.stream(self._stream):
            self._step()
        self._stream.synchronize()

    def timed_run(self) -> DeviceTiming:
        step = self._step
        with self._cuda.stream(self._stream):
            self._start.record(self._stream)
            for _ in range(self._runs):
                step()
            self._end.record(self._stream)
        clock = self._clock()  # the GPU is still busy with the window
        self._end.synchronize()
        return DeviceTiming(self._start.elapsed_time(self._end) / self._runs, clock)

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.synchronize()
        self._step = lambda: None
        self._keep = ()
        self._stream = None


def capture_graph(system: CudaSystem, forward: Callable[[], Any], stream: Any) -> tuple[Any, Any]:
    """Capture `forward` once as a CUDA graph on `stream` (after eager warm-up passes on
    it, as torch's documentation prescribes); returns (graph, its static output)."""
    cuda = system.cuda
    stream.wait_stream(cuda.current_stream())
    with cuda.stream(stream):
        for _ in range(CAPTURE_WARMUP):
            forward()
    stream.synchronize()
    graph = cuda.CUDAGraph()
    with cuda.graph(graph, stream=stream):
        out = forward()
    stream.synchronize()
    return graph, out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TorchCudaBackend(TorchEagerBackend):
    """Eager torch or one CUDA graph per network on `cuda[:N]`, timed by CUDA events."""

    name = "torch"

    def __init__(self, spec: TargetSpec, system: CudaSystem | None = None) -> None:
        super().__init__(spec)
        self._system = system
        self._clock: Callable[[], float | None] | None = None  # NVML set up once per backend

    @property
    def system(self) -> CudaSystem:
        if self._system is None:
            self._system = cuda_system()
        return self._system

    @property
    def index(self) -> int:
        return cuda_index(self.spec.device)

    def check_available(self) -> None:
        system, spec = self.system, self.spec
        if not system.cuda.is_available():
            if system.cuda_version is None:
                why = f"torch {system.torch_version} is a CPU-only build"
                fix = "install a CUDA build of torch (pytorch.org/get-started) on a GPU machine"
            else:
                why = (
                    f"torch {system.torch_version} (CUDA {system.cuda_version}) sees no GPU "
                    "(no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
                )
                fix = "run it on a machine with an NVIDIA GPU"
            raise RuntimeMissing(
                f"target '{spec.name}' needs a CUDA GPU, but {why}; {fix}, or pick a CPU "
                "target (hwnas targets list)"
            )
        count = int(system.cuda.device_count())
        if self.index >= count:
            last = f"cuda:{count - 1}"
            raise UserError(
                f"{spec.source or spec.name}: device '{spec.device}' does not exist here: this "
                f"machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0"
                f'{".." + last if count > 1 else ""}); set device = "{last}" or run on a '
                "machine with more GPUs"
            )
        if spec.precision == "bf16" and not system.cuda.is_bf16_supported():
            gpu = system.cuda.get_device_properties(self.index).name
            raise UserError(
                f'{spec.source or spec.name}: precision "bf16" but {gpu} has no bf16 support '
                '(compute capability < 8.0); use precision = "fp16"'
            )

    def fingerprint(self) -> dict[str, Any]:
        """GPU model and memory, driver, CUDA, cuDNN, torch, precision and the backend
        options (cuda_graph, runs_per_sample, cudnn_benchmark, tf32): nothing that differs
        between two processes (no clock, no free memory, no UUID)."""
        system = self.system
        props = system.cuda.get_device_properties(self.index)
        fp = base_fingerprint(self.spec)
        fp["device"] = f"cuda:{self.index}"  # "cuda" and "cuda:0" are one device, one key
        fp["runtime"] = {
            "torch": system.torch_version,
            "cuda": system.cuda_version,
            "cudnn": system.cudnn_version(),
        }
        fp["gpu"] = str(props.name)
        fp["gpu_memory_mb"] = int(props.total_memory) >> 20
        fp["compute_capability"] = f"{props.major}.{props.minor}"
        fp["nvidia_driver"] = system.driver_version()
        return fp

    def compile(self, model: ModelArtifact) -> Runner:
        system, spec = self.system, self.spec
        cuda = system.cuda
        system.configure(bool(spec.option("cudnn_benchmark")), bool(spec.option("tf32")))
        index = self.index
        with cuda.device(index):
            module, inputs, _device = self.prepare(model, system.place(f"cuda:{index}"))
            stream = cuda.Stream()
            stream.wait_stream(cuda.current_stream())  # inputs were copied on the default one

            def forward() -> Any:
                with system.no_grad():
                    return module(*inputs)

            runs = int(spec.option("runs_per_sample"))
            if self._clock is None:
                self._clock = system.clock_reader(index)
            clock = self._clock
            if not spec.option("cuda_graph"):
                return CudaRunner(forward, cuda, stream, runs, clock, keep=(module, inputs))
            try:
                graph, out = capture_graph(system, forward, stream)
            except Exception as exc:  # noqa: BLE001 - any capture error: the network's fault
                with contextlib.suppress(Exception):
                    stream.synchronize()
                raise UserError(
                    f"network {Path(model.onnx_path).name} cannot be captured as a CUDA graph "
                    f"on target '{spec.name}' ({_first_line(exc)}); it has an op that waits "
                    "for the host or changes shape: time it on the eager target torch-cuda"
                ) from None
            return CudaRunner(
                graph.replay, cuda, stream, runs, clock, keep=(module, inputs, graph, out)
            )
