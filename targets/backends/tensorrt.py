"""Native TensorRT 10 backend: an engine built on the target from the ONNX file.

TensorRT 10 API only (named tensors, `build_serialized_network`, `execute_async_v3`).
Engines are cached by (ONNX sha256, fingerprint key) and the builder's timing cache is
persisted, because building is slow (seconds to minutes) and a profile run rebuilds
many networks that share layer shapes. Device memory comes from torch CUDA tensors
(the simplest allocator a torch user already has); one CUDA stream per runner.

Everything that touches tensorrt or CUDA is imported inside functions: TensorRT wheels
come from NVIDIA's index, so it is an optional extra (`pip install 'hwnas[gpu]'`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.backends.base import GPU_EXTRA, Backend, ModelArtifact, Runner
from targets.basics import RuntimeMissing, UserError, atomic_write_bytes
from targets.cache import cache_dir
from targets.fingerprint import base_fingerprint, cuda_index, fingerprint_key, gpu_description

if TYPE_CHECKING:
    import torch

    from targets.spec import TargetSpec

log = logging.getLogger(__name__)
MIN_MAJOR = 10


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - the PyPI placeholder fails in odd ways
        raise RuntimeMissing(
            f"TensorRT is not installed ({type(exc).__name__}: {exc}); {GPU_EXTRA} "
            "(TensorRT 10 wheels come from NVIDIA's package index)"
        ) from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < MIN_MAJOR:
        raise RuntimeMissing(
            f"TensorRT {trt.__version__} is too old (need >= {MIN_MAJOR}); {GPU_EXTRA}"
        )
    return trt


def _import_torch_cuda(target: str) -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeMissing(
            f"target '{target}' allocates device memory with torch, which is not installed; "
            f"install a CUDA build of torch and {GPU_EXTRA}"
        ) from None
    if not torch.cuda.is_available():
        raise RuntimeMissing(
            f"target '{target}' needs a CUDA GPU but torch {torch.__version__} sees none; "
            f"install a CUDA build of torch and {GPU_EXTRA}"
        )
    return torch


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {}
    for trt_name, torch_name in (
        ("float32", "float32"),
        ("float16", "float16"),
        ("bfloat16", "bfloat16"),
        ("int8", "int8"),
        ("uint8", "uint8"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("bool", "bool"),
    ):
        if hasattr(trt, trt_name):
            table[getattr(trt, trt_name)] = getattr(torch, torch_name)
    if dtype not in table:
        raise UserError(f"TensorRT tensor dtype {dtype} is not supported by hwnas")
    return table[dtype]


class _TrtRunner(Runner):
    """One execution context, fixed device buffers, one stream; `run` waits for the GPU."""

    def __init__(
        self, engine: Any, context: Any, buffers: dict[str, torch.Tensor], stream: Any
    ) -> None:
        self._engine = engine
        self._context = context
        self._buffers = buffers  # kept alive: the context holds their raw addresses
        self._stream = stream
        self._handle = stream.cuda_stream

    def run(self) -> None:
        if not self._context.execute_async_v3(self._handle):
            raise RuntimeError("TensorRT execute_async_v3 returned False (see the TensorRT log)")
        self._stream.synchronize()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._context = None
        self._engine = None
        self._buffers = {}
        self._stream = None


class TensorRTBackend(Backend):
    """Builds (or reuses) a serialized engine per ONNX file and runs it on `device`."""

    name = "tensorrt"

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        self._fingerprint: dict[str, Any] | None = None
        self._logger: Any = None
        self._runtime: Any = None

    # -- availability & identity ----------------------------------------------------
    def check_available(self) -> None:
        _import_trt()
        torch = _import_torch_cuda(self.spec.name)
        index = cuda_index(self.spec.device)
        if index >= torch.cuda.device_count():
            raise UserError(
                f"target '{self.spec.name}' asks for {self.spec.device} but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible"
            )

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            trt = _import_trt()
            import torch

            fp = base_fingerprint(self.spec)
            fp["runtime"] = {
                "tensorrt": trt.__version__,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
            }
            fp.update(gpu_description(self.spec.device))
            self._fingerprint = fp
        return dict(self._fingerprint)

    # -- build ----------------------------------------------------------------------
    def _trt_logger(self, trt: Any) -> Any:
        if self._logger is None:
            self._logger = trt.Logger(trt.Logger.WARNING)
        return self._logger

    def _cache_root(self) -> Path:
        return cache_dir(self.spec.option("cache_dir")) / "tensorrt"

    def _timing_cache_path(self, fp_key: str) -> Path:
        return self._cache_root() / f"timing-{fp_key[:16]}.cache"

    def build_engine(self, onnx_bytes: bytes, source: Path, fp_key: str) -> bytes:
        """Parse the ONNX file and build a serialized engine (timing cache in and out)."""
        trt = _import_trt()
        logger = self._trt_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes, str(source)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise UserError(f"{source}: TensorRT's ONNX parser rejected the model: {errors}")

        config = builder.create_builder_config()
        workspace = self.spec.option("workspace_mb")
        if workspace:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace) << 20)
        level = self.spec.option("builder_optimization_level")
        if level is not None:
            config.builder_optimization_level = int(level)
        if self.spec.precision == "fp16":
            if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.x
                log.warning("%s: this GPU has no fast fp16; building anyway", self.spec.name)
            config.set_flag(trt.BuilderFlag.FP16)

        # Symbolic dimensions need an optimization profile; pin them to the one shape we
        # time (batch = the target's batch size), so the engine is tuned for exactly it.
        from targets.backends.onnxruntime import static_input_shape

        profile = None
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)
            if any(d < 0 for d in dims):
                shape = static_input_shape(
                    tensor.name,
                    [d if d >= 0 else None for d in dims],
                    self.spec.batch_size,
                    str(source),
                )
                profile = profile or builder.create_optimization_profile()
                profile.set_shape(tensor.name, shape, shape, shape)
            else:
                static_input_shape(tensor.name, dims, self.spec.batch_size, str(source))
        if profile is not None:
            config.add_optimization_profile(profile)

        use_timing_cache = bool(self.spec.option("timing_cache"))
        cache_path = self._timing_cache_path(fp_key)
        if use_timing_cache:
            previous = cache_path.read_bytes() if cache_path.is_file() else b""
            timing_cache = config.create_timing_cache(previous)
            config.set_timing_cache(timing_cache, False)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(
                f"{source}: TensorRT could not build an engine for target "
                f"'{self.spec.name}' (see the TensorRT log above)"
            )
        if use_timing_cache:
            self._save_timing_cache(config, cache_path)
        return bytes(serialized)

    def _save_timing_cache(self, config: Any, path: Path) -> None:
        """Merge with what other workers saved meanwhile, then replace the file atomically."""
        ours = config.get_timing_cache()
        if path.is_file():
            try:
                theirs = config.create_timing_cache(path.read_bytes())
                ours.combine(theirs, False)
            except Exception as exc:  # noqa: BLE001 - a stale cache must not fail a build
                log.warning("could not merge TensorRT timing cache %s: %s", path, exc)
        atomic_write_bytes(path, bytes(ours.serialize()))

    def engine_bytes(self, path: Path) -> bytes:
        """The serialized engine for an ONNX file: from the cache, or built and cached."""
        onnx_bytes = path.read_bytes()
        fp_key = fingerprint_key(self.fingerprint())
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        engine_path = self._cache_root() / "engines" / f"{digest[:32]}-{fp_key[:16]}.engine"
        if self.spec.option("engine_cache") and engine_path.is_file():
            return engine_path.read_bytes()
        data = self.build_engine(onnx_bytes, path, fp_key)
        if self.spec.option("engine_cache"):
            atomic_write_bytes(engine_path, data)
        return data

    # -- run ------------------------------------------------------------------------
    def compile(self, model: ModelArtifact) -> Runner:
        trt = _import_trt()
        torch = _import_torch_cuda(self.spec.name)
        path = Path(model.onnx_path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        device = torch.device(self.spec.device)
        with torch.cuda.device(device):
            if self._runtime is None:
                self._runtime = trt.Runtime(self._trt_logger(trt))
            engine = self._runtime.deserialize_cuda_engine(self.engine_bytes(path))
            if engine is None:
                raise UserError(
                    f"{path}: TensorRT could not load the engine built for it; delete the "
                    f"engine cache under {self._cache_root()} and retry"
                )
            context = engine.create_execution_context()
            gen = torch.Generator(device="cpu").manual_seed(int(self.spec.option("input_seed")))
            buffers: dict[str, torch.Tensor] = {}
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            for name in inputs:
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    # the optimization profile pinned min = opt = max to one shape
                    shape = tuple(engine.get_tensor_profile_shape(name, 0)[1])
                    context.set_input_shape(name, shape)
                dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
                if dtype.is_floating_point:
                    host = torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)
                else:
                    host = torch.randint(0, 10, shape, generator=gen).to(dtype)
                buffers[name] = host.to(device).contiguous()
            for name in outputs:
                shape = tuple(context.get_tensor_shape(name))
                dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(name))
                buffers[name] = torch.empty(shape, dtype=dtype, device=device)
            for name, tensor in buffers.items():
                if not context.set_tensor_address(name, tensor.data_ptr()):
                    raise RuntimeError(f"TensorRT refused the buffer of tensor '{name}'")
            stream = torch.cuda.Stream(device=device)
            torch.cuda.synchronize(device)
        return _TrtRunner(engine, context, buffers, stream)
