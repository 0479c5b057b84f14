"""ONNX Runtime backend: CPU execution provider; CUDA and TensorRT EPs with onnxruntime-gpu."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.backends.base import GPU_EXTRA, Backend, ModelArtifact, Runner
from targets.basics import RuntimeMissing, UserError
from targets.fingerprint import (
    base_fingerprint,
    cuda_index,
    gpu_description,
    package_version,
)

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort

    from targets.spec import TargetSpec

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# What a provider needs besides onnxruntime-gpu, for the error when it did not load.
_PROVIDER_LIBRARIES = {
    "CUDAExecutionProvider": "the CUDA 12 runtime and cuDNN 9 libraries (libcudart, libcublas, "
    "libcudnn: pip install nvidia-cudnn-cu12 nvidia-cublas-cu12 nvidia-cuda-runtime-cu12, or a "
    "CUDA toolkit on LD_LIBRARY_PATH)",
    "TensorrtExecutionProvider": "TensorRT 10 (libnvinfer: pip install tensorrt-cu12, or a "
    "TensorRT install on LD_LIBRARY_PATH) besides the CUDA libraries",
}
_NUMPY_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissing(
            f"onnxruntime is not installed ({exc}); pip install onnxruntime "
            f"(or {GPU_EXTRA} for the CUDA/TensorRT providers)"
        ) from None
    return onnxruntime


def static_input_shape(
    name: str, shape: list[Any], batch_size: int, source: str
) -> tuple[int, ...]:
    """A model input's shape with a symbolic batch dimension set to the target's batch.

    Any other symbolic dimension has no value we could pick honestly, and a static batch
    that differs from the target's would time a different workload than the label says.
    """
    out: list[int] = []
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            if i == 0 and len(shape) >= 2 and dim != batch_size:
                raise UserError(
                    f"{source}: input '{name}' has batch size {dim} but the target has "
                    f"batch_size {batch_size}; re-export the model with batch {batch_size} "
                    "(or a dynamic batch), or pick a target with that batch size"
                )
            out.append(dim)
        elif i == 0:
            out.append(batch_size)
        else:
            raise UserError(
                f"{source}: input '{name}' has a dynamic dimension {i} ({dim!r}); export the "
                "model with static shapes except the batch dimension"
            )
    return tuple(out)


def check_session_providers(session: Any, wanted: str, target: str, path: Path) -> None:
    """RuntimeMissing unless `wanted` is the provider the session actually runs on first.

    ONNX Runtime falls back to the next provider in the list (down to the CPU) when a GPU
    provider's libraries cannot load, and says so only in a log line: without this check a
    GPU target would store CPU timings under its GPU fingerprint.
    """
    got = list(session.get_providers())
    if got and got[0] == wanted:
        return
    need = _PROVIDER_LIBRARIES.get(wanted, "its runtime libraries")
    raise RuntimeMissing(
        f"target '{target}': ONNX Runtime did not load {wanted} for {path.name} (the session "
        f"runs on {', '.join(got) or 'nothing'}): it needs {need}; refusing to time on another "
        f"provider. {GPU_EXTRA} installs onnxruntime-gpu"
    )


def fixed_inputs(
    inputs: list[tuple[str, tuple[int, ...], str]], seed: int
) -> dict[str, np.ndarray]:
    """Deterministic random input arrays (normal floats, small non-negative ints)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for name, shape, dtype in inputs:
        if dtype.startswith("float"):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 10, size=shape).astype(dtype)
    return feeds


class _OrtRunner(Runner):
    """`session.run` on fixed numpy inputs (CPU); outputs are fetched every run, as a
    deployment would."""

    def __init__(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
        self._session = session
        self._feeds = feeds
        self._outputs = [o.name for o in session.get_outputs()]

    def run(self) -> None:
        self._session.run(self._outputs, self._feeds)

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]
        self._feeds = {}


class _OrtIoBindingRunner(Runner):
    """Inputs copied to the device once and outputs left there: times the network, not
    host<->device copies. `run_with_iobinding` returns after the device has finished."""

    def __init__(
        self, session: ort.InferenceSession, feeds: dict[str, np.ndarray], device_id: int
    ) -> None:
        ort = _import_ort()
        self._session = session
        self._binding = session.io_binding()
        self._values = []
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", device_id)
            self._values.append(value)  # keep device buffers alive
            self._binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs():
            self._binding.bind_output(out.name, "cuda", device_id)

    def run(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def close(self) -> None:
        self._binding = None
        self._values = []
        self._session = None  # type: ignore[assignment]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with the provider named in options.provider (cpu | cuda | tensorrt)."""

    name = "onnxruntime"

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self.provider: str = spec.option("provider")

    def check_available(self) -> None:
        ort = _import_ort()
        wanted = _PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise RuntimeMissing(
                f"target '{self.spec.name}' needs ONNX Runtime's {wanted}, which this "
                f"onnxruntime {ort.__version__} lacks (has: {', '.join(available)}); "
                f"{GPU_EXTRA} (onnxruntime-gpu replaces onnxruntime)"
            )

    def fingerprint(self) -> dict[str, Any]:
        ort = _import_ort()
        fp = base_fingerprint(self.spec)
        # options of a provider not in use cannot change a latency: leave them out so
        # that, e.g., a CPU target's key does not depend on TensorRT EP defaults
        fp["options"] = {
            k: v
            for k, v in fp["options"].items()
            if not (k.startswith("trt_") and self.provider != "tensorrt")
            and not (k == "io_binding" and self.provider == "cpu")
        }
        if self.provider != "cpu":
            fp["options"]["io_binding"] = self.uses_io_binding()
        fp["runtime"] = {"onnxruntime": ort.__version__}
        if self.provider != "cpu":
            fp.update(gpu_description(self.spec.device))
            if self.provider == "tensorrt":
                fp["runtime"]["tensorrt"] = package_version("tensorrt") or package_version(
                    "tensorrt-cu12"
                )
        return fp

    # -- session --------------------------------------------------------------------
    def session_options(self) -> ort.SessionOptions:
        ort = _import_ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.spec.threads  # 0 = ORT default (all cores)
        opts.inter_op_num_threads = self.spec.option("inter_op_threads")
        opts.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.spec.option("execution_mode") == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        level = self.spec.option("graph_optimization_level")
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        opts.log_severity_level = 3  # errors only: warnings would flood a profile log
        return opts

    def providers(self) -> list[Any]:
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        device_id = cuda_index(self.spec.device)
        cuda = ("CUDAExecutionProvider", {"device_id": device_id})
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        from targets.cache import cache_dir

        trt_dir = cache_dir(self.spec.option("cache_dir")) / "ort-trt"
        trt_opts: dict[str, Any] = {
            "device_id": device_id,
            "trt_fp16_enable": self.spec.precision == "fp16",
        }
        if self.spec.option("trt_engine_cache"):
            trt_opts["trt_engine_cache_enable"] = True
            trt_opts["trt_engine_cache_path"] = str(trt_dir)
        if self.spec.option("trt_timing_cache"):
            trt_opts["trt_timing_cache_enable"] = True
            trt_opts["trt_timing_cache_path"] = str(trt_dir)
        workspace = self.spec.option("trt_workspace_mb")
        if workspace:
            trt_opts["trt_max_workspace_size"] = int(workspace) << 20
        return [("TensorrtExecutionProvider", trt_opts), cuda, "CPUExecutionProvider"]

    def create_session(self, path: Path) -> ort.InferenceSession:
        ort = _import_ort()
        try:
            return ort.InferenceSession(
                str(path), sess_options=self.session_options(), providers=self.providers()
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"{path}: ONNX Runtime cannot load this model ({first}); check it is a valid "
                "ONNX file (python -m onnx.checker) exported with a supported opset"
            ) from None

    def uses_io_binding(self) -> bool:
        """IO binding on GPU providers unless the target turns it off (no-op on CPU)."""
        if self.provider == "cpu":
            return False
        flag = self.spec.option("io_binding")
        return True if flag is None else bool(flag)

    def compile(self, model: ModelArtifact) -> Runner:
        path = Path(model.onnx_path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        session = self.create_session(path)
        check_session_providers(session, _PROVIDERS[self.provider], self.spec.name, path)
        inputs = []
        for inp in session.get_inputs():
            dtype = _NUMPY_DTYPES.get(inp.type)
            if dtype is None:
                raise UserError(f"{path}: input '{inp.name}' has unsupported type {inp.type}")
            shape = static_input_shape(inp.name, list(inp.shape), self.spec.batch_size, str(path))
            inputs.append((inp.name, shape, dtype))
        feeds = fixed_inputs(inputs, self.spec.option("input_seed"))
        if self.uses_io_binding():
            return _OrtIoBindingRunner(session, feeds, cuda_index(self.spec.device))
        return _OrtRunner(session, feeds)
