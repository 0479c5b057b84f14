"""Backends: ORT CPU, debug and eager torch really run; GPU ones fail with the extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_timing import tiny_onnx

from targets.backends.base import ModelArtifact
from targets.basics import RuntimeMissing, UserError
from targets.fingerprint import fingerprint_key
from targets.registry import backend_class, create_backend, load_target
from targets.timing import Protocol, measure_onnx

TINY = Protocol(warmup=1, min_rounds=2, rounds=2, runs_per_round=3, reference=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def test_ort_cpu_compiles_and_runs(tmp_path: Path) -> None:
    spec = load_target("ort-cpu")
    backend = create_backend(spec)
    with backend.compile(ModelArtifact(tiny_onnx(tmp_path / "m.onnx"))) as runner:
        for _ in range(3):
            runner.run()
    fp = backend.fingerprint()
    assert fp["backend"] == "onnxruntime" and fp["threads"] == 1
    assert fp["runtime"]["onnxruntime"]
    assert fp["cpu"]
    assert "trt_engine_cache" not in fp["options"]  # options of unused providers left out
    json.dumps(fp)  # JSON-able


def test_ort_dynamic_batch_uses_target_batch(tmp_path: Path, monkeypatch) -> None:
    import targets.backends.onnxruntime as ort_backend

    seen: list[dict[str, tuple[int, ...]]] = []
    make_inputs = ort_backend.fixed_inputs

    def spy(inputs, seed):  # the arrays the runner feeds the session on every timed run
        feeds = make_inputs(inputs, seed)
        seen.append({name: a.shape for name, a in feeds.items()})
        return feeds

    monkeypatch.setattr(ort_backend, "fixed_inputs", spy)
    spec = replace(load_target("ort-cpu"), batch_size=3)
    path = tiny_onnx(tmp_path / "dyn.onnx", batch="N")
    [m] = measure_onnx([path], spec, TINY)
    assert seen == [{"x": (3, 3, 16, 16)}]  # the symbolic batch N became the target's 3
    assert m.latency_ms > 0 and m.repetitions == TINY.rounds * TINY.runs_per_round


def test_ort_static_batch_mismatch_is_a_user_error(tmp_path: Path) -> None:
    spec = replace(load_target("ort-cpu"), batch_size=4)
    with pytest.raises(UserError, match="batch"):
        create_backend(spec).compile(ModelArtifact(tiny_onnx(tmp_path / "b1.onnx", batch=1)))


def test_ort_rejects_a_non_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(UserError, match="bad.onnx"):
        create_backend(load_target("ort-cpu")).compile(ModelArtifact(bad))


def test_debug_backend_is_real_and_host_independent(tmp_path: Path) -> None:
    backend = create_backend(load_target("debug"))
    fp = backend.fingerprint()
    assert fp["device"] == "debug"
    assert "cpu" not in fp  # nothing of the host
    [m] = measure_onnx([tiny_onnx(tmp_path / "m.onnx")], load_target("debug"), TINY)
    assert m.latency_ms > 0.0


def test_torch_backend_needs_a_builder_and_runs_with_one(tmp_path: Path) -> None:
    from targets.reference import build_reference_torch, reference_onnx_path

    spec = load_target("torch-cpu")
    backend = create_backend(spec)
    with pytest.raises(UserError, match="torch module"):
        backend.compile(ModelArtifact(tiny_onnx(tmp_path / "m.onnx")))
    runner = backend.compile(
        ModelArtifact(reference_onnx_path(1), build_torch=build_reference_torch)
    )
    runner.run()
    runner.close()
    assert backend.fingerprint()["runtime"]["torch"]


def test_reference_network_is_deterministic() -> None:
    from targets.reference import build_reference_torch, reference_onnx_bytes

    assert reference_onnx_bytes(1) == reference_onnx_bytes.__wrapped__(1)
    assert reference_onnx_bytes(1) != reference_onnx_bytes(2)
    # ONNX and torch versions compute the same function
    import onnxruntime as ort
    import torch

    x = np.random.RandomState(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(reference_onnx_bytes(1), providers=["CPUExecutionProvider"])
    [y] = sess.run(None, {"input": x})
    with torch.inference_mode():
        yt = build_reference_torch()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, yt, rtol=1e-4, atol=1e-4)


FP_SCRIPT = """
import sys
from targets.registry import create_backend, load_target
from targets.timing import fingerprint_key
print(fingerprint_key(create_backend(load_target(sys.argv[1])).fingerprint()))
"""


@pytest.mark.parametrize("target", ["ort-cpu", "debug"])
def test_fingerprint_stable_across_processes(target: str) -> None:
    keys = {
        subprocess.run(
            [sys.executable, "-c", FP_SCRIPT, target], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    keys.add(fingerprint_key(create_backend(load_target(target)).fingerprint()))
    assert len(keys) == 1
    assert len(next(iter(keys))) == 64


def test_fingerprint_tracks_what_changes_latency() -> None:
    base = load_target("ort-cpu")
    key = fingerprint_key(create_backend(base).fingerprint())
    for changed in (
        replace(base, threads=2),
        replace(base, batch_size=2),
        replace(base, options={**base.options, "graph_optimization_level": "basic"}),
    ):
        assert fingerprint_key(create_backend(changed).fingerprint()) != key
    # the name, the input seed and an explicit default do not change it
    same = replace(
        base, name="other", options={**base.options, "input_seed": 7, "inter_op_threads": 1}
    )
    assert fingerprint_key(create_backend(same).fingerprint()) == key


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _ort_has(provider: str) -> bool:
    import onnxruntime as ort

    return provider in ort.get_available_providers()


@pytest.mark.skipif(_has_tensorrt() and _has_cuda(), reason="TensorRT and CUDA are installed")
@pytest.mark.parametrize("target", ["trt-fp32", "trt-fp16"])
def test_tensorrt_missing_names_the_extra(target: str) -> None:
    backend = backend_class("tensorrt")(load_target(target))
    with pytest.raises(RuntimeMissing) as info:
        backend.check_available()
    assert "pip install 'hwnas[gpu]'" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("target", "provider"),
    [("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")],
)
def test_ort_gpu_missing_names_the_extra(target: str, provider: str) -> None:
    if _ort_has(provider):
        pytest.skip(f"{provider} is available here")
    with pytest.raises(RuntimeMissing) as info:
        create_backend(load_target(target))
    assert "pip install 'hwnas[gpu]'" in str(info.value)
    assert provider in str(info.value)


def test_gpu_modules_import_without_gpu_runtimes() -> None:
    code = (
        "import sys, targets.backends.tensorrt, targets.backends.onnxruntime, "
        "targets.backends.torch_eager, targets.registry;"
        "print('tensorrt' in sys.modules, 'onnxruntime' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device visible to torch")
@pytest.mark.parametrize("target", ["ort-cuda", "ort-trt", "trt-fp32", "trt-fp16"])
def test_gpu_target_really_runs(tmp_path: Path, target: str) -> None:
    spec = load_target(target)
    try:
        backend = create_backend(spec)
    except RuntimeMissing as exc:
        pytest.skip(f"{target}: {exc}")
    path = tiny_onnx(tmp_path / "m.onnx", channels=16)
    protocol = Protocol(warmup=2, min_rounds=2, rounds=3, runs_per_round=5)
    a, b = measure_onnx([path, path], spec, protocol)
    assert 0 < a.min_ms <= a.p10_ms <= a.median_ms
    assert a.reference_ms is not None and a.reference_ms > 0
    fp = backend.fingerprint()
    assert fp.get("gpu")
    if spec.backend == "tensorrt":  # second compile reuses the cached engine
        engines = list((tmp_path / "cache" / "tensorrt" / "engines").glob("*.engine"))
        assert engines
        assert list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))
