"""Eager PyTorch backend: the baseline a user without an inference runtime would see.

It needs the model as a torch module (ModelArtifact.build_torch); the ONNX file only
supplies the input shapes, so both backends time the same workload. A target on a CUDA
device gets `targets.backends.torch_cuda.TorchCudaBackend` (GPU-timed, optionally one
CUDA graph); this module keeps the CPU path and what both share (module and inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.backends.base import Backend, ModelArtifact, Runner
from targets.basics import RuntimeMissing, UserError
from targets.fingerprint import base_fingerprint
from targets.spec import TORCH_CUDA_OPTIONS

if TYPE_CHECKING:
    import torch

    from targets.spec import TargetSpec

# ONNX TensorProto element types -> torch dtype names
_ONNX_TO_TORCH = {
    1: "float32",
    10: "float16",
    11: "float64",
    16: "bfloat16",
    7: "int64",
    6: "int32",
    5: "int16",
    3: "int8",
    2: "uint8",
    9: "bool",
}
# target precision -> the dtype the module and its float inputs are cast to (fp32: none)
TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise RuntimeMissing(f"torch is not installed ({exc}); pip install torch") from None
    return torch


def onnx_input_specs(path: Path, batch_size: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, static shape, ONNX elem type) of the graph's real inputs (not initializers)."""
    import onnx

    from targets.backends.onnxruntime import static_input_shape

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise UserError(f"{path}: not a readable ONNX model ({exc})") from None
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        ttype = inp.type.tensor_type
        dims: list[Any] = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in ttype.shape.dim
        ]
        shape = static_input_shape(inp.name, dims, batch_size, str(path))
        specs.append((inp.name, shape, ttype.elem_type))
    return specs


class _TorchRunner(Runner):
    """Runs the module; on CUDA, waits for the runner's own device (not the current one:
    with `cuda:1` the current device may be `cuda:0`, whose queue is empty)."""

    def __init__(
        self, module: torch.nn.Module, inputs: list[torch.Tensor], device: torch.device
    ) -> None:
        self._module = module
        self._inputs = inputs
        self._device = device if device.type == "cuda" else None

    def run(self) -> None:
        torch = _import_torch()
        with torch.inference_mode():
            self._module(*self._inputs)
        if self._device is not None:
            torch.cuda.synchronize(self._device)

    def close(self) -> None:
        self._module = None  # type: ignore[assignment]
        self._inputs = []


class TorchEagerBackend(Backend):
    """torch.nn.Module in inference_mode, `threads` intra-op threads, on the CPU.

    Specs on a CUDA device get TorchCudaBackend (the registry picks it by device), which
    reuses `prepare` from here.
    """

    name = "torch"

    def __init__(self, spec: TargetSpec) -> None:
        if type(self) is TorchEagerBackend and spec.device.startswith("cuda"):
            raise ValueError(
                f"target '{spec.name}' is on {spec.device}: create it with "
                "targets.registry.create_backend (TorchCudaBackend), not TorchEagerBackend"
            )
        super().__init__(spec)

    def check_available(self) -> None:
        _import_torch()

    def fingerprint(self) -> dict[str, Any]:
        torch = _import_torch()
        fp = base_fingerprint(self.spec)
        # GPU-only options cannot change a CPU latency: out, so CPU keys stay as they were
        fp["options"] = {k: v for k, v in fp["options"].items() if k not in TORCH_CUDA_OPTIONS}
        fp["runtime"] = {"torch": torch.__version__}
        return fp

    def compile(self, model: ModelArtifact) -> Runner:
        module, inputs, device = self.prepare(model, _import_torch().device(self.spec.device))
        return _TorchRunner(module, inputs, device)

    def prepare(
        self, model: ModelArtifact, device: torch.device
    ) -> tuple[torch.nn.Module, list[torch.Tensor], torch.device]:
        """The module in eval mode and its fixed inputs, on `device`, in the target's
        precision (module.to(dtype): see docs/targets.md, "Precision") and memory format."""
        torch = _import_torch()
        path = Path(model.onnx_path)
        if model.build_torch is None:
            raise UserError(
                f"target '{self.spec.name}' (eager torch) needs the network as a torch module, "
                f"not only its ONNX file {path}; measure an architecture JSON instead, or use "
                "an ONNX Runtime target such as ort-cpu"
            )
        specs = onnx_input_specs(path, self.spec.batch_size)
        if self.spec.threads > 0:
            torch.set_num_threads(self.spec.threads)
        else:
            from targets.fingerprint import available_cores

            torch.set_num_threads(available_cores())
        module = model.build_torch().eval().to(device)
        cast = TORCH_DTYPES.get(self.spec.precision)
        cast_to = getattr(torch, cast) if cast else None
        if cast_to is not None:
            module = module.to(cast_to)
        gen = torch.Generator().manual_seed(int(self.spec.option("input_seed")))
        inputs = []
        for _name, shape, elem in specs:
            dtype = getattr(torch, _ONNX_TO_TORCH.get(elem, "float32"))
            if dtype.is_floating_point:
                t = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
                if cast_to is not None:
                    t = t.to(cast_to)
            else:
                t = torch.randint(0, 10, shape, generator=gen).to(dtype)
            inputs.append(t.to(device))
        if self.spec.option("channels_last"):
            module = module.to(memory_format=torch.channels_last)
            inputs = [
                t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                for t in inputs
            ]
        return module, inputs, device
