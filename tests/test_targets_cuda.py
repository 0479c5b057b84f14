"""GPU targets (torch-cuda, torch-cuda-graph) without a GPU: the CUDA backend driven by a
fake GPU (tests/fake_cuda.py) whose clock moves only when work runs. Covers capture once +
replay N per window, the CUDA-event math, warm-up until settled, the drift rule, the
fingerprint, precision, the clock stored per row, and the bad-input paths. The real thing
runs in the `gpu`-marked tests at the end (skipped without CUDA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fake_cuda import CAPTURE_ERROR, ChargedModule, FakeGpu, fake_system

from targets.backends import torch_cuda
from targets.backends.base import DeviceTiming, ModelArtifact, Runner
from targets.backends.torch_cuda import CAPTURE_WARMUP, CudaRunner, TorchCudaBackend
from targets.backends.torch_eager import TorchEagerBackend
from targets.basics import RuntimeMissing, UserError
from targets.registry import backend_class, create_backend, load_target
from targets.spec import parse_target_text
from targets.timing import (
    Measurement,
    Protocol,
    check_reference_drift,
    fingerprint_key,
    measure_onnx,
    measure_runners,
    measurement_fingerprint,
    settle,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def onnx_file(path: Path) -> Path:
    """A conv net whose ONNX input (1x3x16x16) the torch backend reads its shapes from."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.RandomState(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def backend_for(target: str, gpu: FakeGpu, **kw: object) -> TorchCudaBackend:
    backend = TorchCudaBackend(load_target(target), system=fake_system(gpu, **kw))  # type: ignore[arg-type]
    backend.check_available()
    return backend


# -- the built-in targets ---------------------------------------------------------------


def test_builtin_gpu_targets_are_torch_on_cuda() -> None:
    eager, graph = load_target("torch-cuda"), load_target("torch-cuda-graph")
    for spec in (eager, graph):
        assert (spec.backend, spec.device, spec.precision) == ("torch", "cuda", "fp32")
        assert spec.option("cudnn_benchmark") is False  # H200: on, two processes differ 1.8 %
        assert spec.option("runs_per_sample") >= 5
        assert Protocol.for_target(spec).settle is not None
    assert eager.option("cuda_graph") is False and graph.option("cuda_graph") is True
    assert Protocol.for_target(graph).statistic == "median"
    # a CUDA spec gets the CUDA backend under the one backend name "torch"
    assert backend_class("torch", "cuda:1") is TorchCudaBackend
    assert backend_class("torch", "cpu") is backend_class("torch") is TorchEagerBackend
    with pytest.raises(ValueError, match="create_backend"):
        TorchEagerBackend(graph)


def test_cpu_only_options_and_precisions_are_refused_on_cpu() -> None:
    base = 'name = "x"\nbackend = "torch"\n'
    with pytest.raises(UserError, match="cuda_graph.*GPU targets"):
        parse_target_text(base + "[options]\ncuda_graph = true\n", "x.toml")
    with pytest.raises(UserError, match='"bf16".*device = "cuda"'):
        parse_target_text(base + 'precision = "bf16"\n', "x.toml")
    with pytest.raises(UserError, match="runs_per_sample.*>= 1"):
        parse_target_text(base + 'device = "cuda"\n[options]\nruns_per_sample = 0\n', "x.toml")
    ort = 'name = "x"\nbackend = "onnxruntime"\ndevice = "cuda"\nprecision = "bf16"\n'
    with pytest.raises(UserError, match="torch CUDA targets only"):
        parse_target_text(ort + '[options]\nprovider = "cuda"\n', "x.toml")
    spec = parse_target_text(base + 'device = "cuda:1"\nprecision = "bf16"\n', "x.toml")
    assert spec.precision == "bf16"


# -- capture once, replay N per window, event math --------------------------------------


def test_graph_is_captured_once_and_replayed_runs_per_sample_times(tmp_path: Path) -> None:
    gpu = FakeGpu()
    configured: list[tuple[bool, bool]] = []
    backend = backend_for("torch-cuda-graph", gpu, clocks=[1980.0], configured=configured)
    module = ChargedModule(gpu, ms=2.5)
    runner = backend.compile(ModelArtifact(onnx_file(tmp_path / "m.onnx"), lambda: module))
    assert configured == [(False, True)]  # cudnn.benchmark off, tf32 as the target says
    assert module.calls == CAPTURE_WARMUP + 1  # eager warm-up, then one capture
    assert len(gpu.graphs) == 1 and gpu.graphs[0].cost == pytest.approx(2.5)
    assert runner.device_timed

    t = runner.timed_run()
    assert isinstance(t, DeviceTiming)
    assert gpu.replays == 10  # runs_per_sample replays between one event pair
    assert t.ms_per_run == pytest.approx(2.5) and t.clock_mhz == 1980.0
    runner.run()
    assert gpu.replays == 11 and module.calls == CAPTURE_WARMUP + 1  # never eager again

    protocol = Protocol.for_target(backend.spec).with_(settle=None, warmup=2)
    before = gpu.replays
    m = measure_runners({"n": runner}, protocol, clock=_no_host_clock)["n"]
    per_round = protocol.round_warmup + protocol.runs_per_round * 10
    assert gpu.replays - before == protocol.warmup + m.rounds * per_round
    assert m.repetitions == m.rounds * protocol.runs_per_round  # samples = event windows
    assert m.latency_ms == pytest.approx(2.5) and m.spread == pytest.approx(0.0)
    assert m.clock_mhz == 1980.0
    runner.close()


def _no_host_clock() -> int:
    raise AssertionError("a device-timed runner must not be timed with the host clock")


def test_event_pair_reports_the_mean_and_reads_the_clock_while_busy() -> None:
    gpu = FakeGpu()
    costs = iter([1.0, 2.0, 6.0] * 10)
    pending: list[bool] = []

    def step() -> None:
        gpu.work(next(costs))

    stream = gpu.Stream()
    runner = CudaRunner(step, gpu, stream, runs=3, clock=lambda: pending.append(True) or 1400.0)
    original_sync = runner._end.synchronize

    def sync() -> None:  # the clock must have been read before the host waits
        assert pending, "clock read after the window finished"
        original_sync()

    runner._end.synchronize = sync  # type: ignore[method-assign]
    t = runner.timed_run()
    assert t == DeviceTiming(3.0, 1400.0)  # (1 + 2 + 6) / 3 between one event pair
    assert runner._start.stream is stream and runner._end.stream is stream  # own stream
    assert gpu.current is gpu.default  # the stream context was left
    with pytest.raises(ValueError):
        CudaRunner(step, gpu, stream, runs=0)


def test_eager_target_times_forward_passes_with_events(tmp_path: Path) -> None:
    gpu = FakeGpu()
    backend = backend_for("torch-cuda", gpu, clocks=[1755.0, 1785.0])
    module = ChargedModule(gpu, ms=0.4)
    runner = backend.compile(ModelArtifact(onnx_file(tmp_path / "m.onnx"), lambda: module))
    assert module.calls == 0 and not gpu.graphs  # nothing captured
    t = runner.timed_run()
    assert module.calls == 10 and t.ms_per_run == pytest.approx(0.4)
    m = measure_runners({"e": runner}, Protocol.for_target(backend.spec), clock=_no_host_clock)
    assert m["e"].latency_ms == pytest.approx(0.4)
    assert m["e"].clock_mhz == pytest.approx(1770.0)  # median of the readings


# -- warm-up until settled --------------------------------------------------------------


class Windows(Runner):
    """A device-timed runner whose windows take the given ms per run, in turn."""

    device_timed = True

    def __init__(self, ms: list[float]) -> None:
        self.ms, self.i, self.runs = ms, 0, 0

    def run(self) -> None:
        self.runs += 1

    def timed_run(self) -> DeviceTiming:
        value = self.ms[min(self.i, len(self.ms) - 1)]
        self.i += 1
        return DeviceTiming(value)


def test_warmup_goes_on_until_two_windows_agree() -> None:
    protocol = Protocol(settle=0.01, settle_max=30)
    # a GPU reaching its clocks: 3.0, 2.5, 2.2, 2.1, 2.09 (-0.5 %): settled at window 5
    assert settle("w", Windows([3.0, 2.5, 2.2, 2.1, 2.09, 2.09]), protocol) == 5
    assert settle("w", Windows([3.0, 2.0] * 50), protocol.with_(settle_max=7)) == 7  # capped
    assert settle("w", Windows([3.0]), Protocol()) == 0  # no settle: the fixed warmup only
    # the host-clock path (CPU runners) times runs_per_round runs per window
    from test_timing import FakeClock, Tick

    clock = FakeClock()
    tick = Tick(clock, [500, 400, 300, 300])
    assert settle("t", tick, Protocol(settle=0.01, runs_per_round=1), clock) == 4
    # the windows of settling are not samples: the figure comes from the settled GPU
    runner = Windows([3.0, 2.5, 2.2, 2.1, 2.09] + [2.0] * 200)
    m = measure_runners({"w": runner}, protocol.with_(warmup=0), clock=_no_host_clock)["w"]
    assert m.latency_ms == pytest.approx(2.0) and m.min_ms == pytest.approx(2.0)


def test_settle_is_in_the_protocol_identity_only_when_set() -> None:
    plain = Protocol()
    assert "settle" not in plain.identity() and "settle_max" not in plain.identity()
    assert plain.with_(drift_spread=2.0).identity() == plain.identity()  # stable flag only
    gpu = Protocol(settle=0.01)
    assert gpu.identity()["settle"] == 0.01 and gpu.identity()["settle_max"] == 30
    with pytest.raises(UserError, match="settle"):
        Protocol.from_overrides({"settle": 0})


# -- the drift rule -----------------------------------------------------------------------


def _m(ref: float, spread: float | None) -> Measurement:
    return Measurement(2.0, "median", 2.0, 2.0, 2.0, 0.01, 20, 4, ref, True, None, spread)


def test_drift_is_judged_against_the_references_own_spread(tmp_path: Path) -> None:
    protocol = Protocol.for_target(load_target("torch-cuda-graph"))
    assert protocol.drift_tolerance == 0.03 and protocol.drift_spread == 1.0
    key = "k" * 64

    def check(ref: float, spread: float | None, proto: Protocol = protocol) -> bool:
        out = check_reference_drift({"a": _m(ref, spread)}, key, proto, tmp_path)
        return out["a"].stable

    assert all(check(2.00, 0.018) for _ in range(4))  # the first figures: the baseline
    assert check(2.05, 0.018)  # +2.5 %: within 3 % (H200 graph rounds spread 1.6-1.9 %)
    assert not check(2.10, 0.018)  # +5 %: a slower GPU (second process, lower clock)
    assert check(2.10, 0.06)  # a reference scattering by 6 % this time: +5 % is noise
    assert not check(2.10, 0.06, protocol.with_(drift_spread=None))  # tolerance alone
    assert not check(2.20, 0.06)  # +10 %: beyond its own spread too


# -- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_has_the_gpu_stack_and_not_the_moment() -> None:
    fp = backend_for("torch-cuda-graph", FakeGpu(), clocks=[1980.0]).fingerprint()
    assert fp["gpu"] == "NVIDIA H200" and fp["gpu_memory_mb"] == 143771
    assert fp["compute_capability"] == "9.0" and fp["nvidia_driver"] == "580.65.06"
    assert fp["runtime"] == {"torch": "2.11.0+cu130", "cuda": "13.0", "cudnn": 91300}
    assert fp["precision"] == "fp32" and fp["device"] == "cuda:0"
    assert fp["options"] == {
        "channels_last": False,
        "cuda_graph": True,
        "cudnn_benchmark": False,
        "runs_per_sample": 10,
        "tf32": True,
    }
    text = json.dumps(fp)
    assert "1980" not in text and "clock" not in text and "u0" not in text  # no per-moment data


def test_fingerprint_key_is_the_same_in_two_processes() -> None:
    script = (
        "import sys; sys.path.insert(0, 'tests');"
        "from fake_cuda import FakeGpu, fake_system;"
        "from targets.backends.torch_cuda import TorchCudaBackend;"
        "from targets.registry import load_target;"
        "from targets.timing import fingerprint_key;"
        "gpu = FakeGpu(); gpu.now = float(sys.argv[1]);"  # a GPU busy for another while
        "b = TorchCudaBackend(load_target('torch-cuda-graph'), fake_system(gpu, clocks=[float(sys.argv[1])]));"
        "print(fingerprint_key(b.fingerprint()))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script, str(clock)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        for clock in (1410.0, 1980.0)
    }
    here = fingerprint_key(backend_for("torch-cuda-graph", FakeGpu()).fingerprint())
    assert keys == {here}


def test_fingerprint_tracks_precision_and_kernel_choice() -> None:
    base = load_target("torch-cuda-graph")

    def key(spec: object) -> str:
        system = fake_system(FakeGpu(count=2))
        return fingerprint_key(TorchCudaBackend(spec, system).fingerprint())  # type: ignore[arg-type]

    keys = {
        key(base),
        key(replace(base, precision="fp16")),
        key(replace(base, precision="bf16")),
        key(replace(base, options={**base.options, "cudnn_benchmark": True})),
        key(replace(base, options={**base.options, "cuda_graph": False})),
        key(replace(base, device="cuda:1")),
    }
    assert len(keys) == 6
    assert key(replace(base, name="mine", options={**base.options, "input_seed": 3})) == key(base)
    assert key(replace(base, device="cuda:0")) == key(base)  # "cuda" is cuda:0
    other_gpu = TorchCudaBackend(base, fake_system(FakeGpu(name="NVIDIA H100 80GB HBM3")))
    assert fingerprint_key(other_gpu.fingerprint()) != key(base)
    # and the protocol is in a stored row's key: eager and graph never share rows
    fp = TorchCudaBackend(base, fake_system(FakeGpu())).fingerprint()
    assert measurement_fingerprint(fp, Protocol.for_target(base))["protocol"]["settle"] == 0.01


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "bfloat16"), ("fp16", "float16")])
def test_precision_casts_the_module_and_its_inputs(
    tmp_path: Path, precision: str, dtype: str
) -> None:
    import torch

    gpu = FakeGpu()
    spec = replace(load_target("torch-cuda"), precision=precision)
    backend = TorchCudaBackend(spec, fake_system(gpu))
    backend.check_available()
    module = ChargedModule(gpu)
    runner = backend.compile(ModelArtifact(onnx_file(tmp_path / "m.onnx"), lambda: module))
    keep = runner._keep  # type: ignore[attr-defined]
    assert module.conv.weight.dtype == getattr(torch, dtype)
    assert keep[1][0].dtype == getattr(torch, dtype)
    assert backend.fingerprint()["precision"] == precision


# -- bad input ------------------------------------------------------------------------------


def test_no_cuda_is_one_line_naming_the_fix() -> None:
    for version, words in ((None, "CPU-only build"), ("13.0", "sees no GPU")):
        backend = TorchCudaBackend(
            load_target("torch-cuda"), fake_system(FakeGpu(available=False), cuda_version=version)
        )
        with pytest.raises(RuntimeMissing) as info:
            backend.check_available()
        assert words in str(info.value) and "\n" not in str(info.value)


def test_a_gpu_index_this_machine_lacks(tmp_path: Path) -> None:
    spec = replace(load_target("torch-cuda-graph"), device="cuda:3", source="my.toml")
    with pytest.raises(UserError) as info:
        TorchCudaBackend(spec, fake_system(FakeGpu(count=2))).check_available()
    msg = str(info.value)
    assert "cuda:3" in msg and "2 CUDA devices (cuda:0..cuda:1)" in msg and "\n" not in msg
    assert msg.startswith("my.toml:")
    with pytest.raises(UserError, match="no bf16 support"):
        TorchCudaBackend(
            replace(spec, device="cuda:0", precision="bf16"), fake_system(FakeGpu(bf16=False))
        ).check_available()


def test_cli_check_of_a_gpu_target_without_cuda_exits_2_with_one_line(cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for target in ("torch-cuda", "torch-cuda-graph"):
        code, out, err = cli("targets", "check", target)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "needs a CUDA GPU" in err


def test_cli_check_in_a_fresh_process_exits_2() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = subprocess.run(
        [sys.executable, "-m", "hwnas", "targets", "check", "torch-cuda"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "torch-cuda" in out.stderr and "CUDA" in out.stderr


def test_cli_check_of_a_missing_gpu_index(cli, tmp_path: Path, monkeypatch) -> None:
    toml = tmp_path / "far.toml"
    toml.write_text('name = "far"\nbackend = "torch"\ndevice = "cuda:3"\n')
    monkeypatch.setattr(torch_cuda, "cuda_system", lambda: fake_system(FakeGpu(count=1)))
    code, out, err = cli("targets", "check", toml)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cuda:3" in err and "1 CUDA device (cuda:0)" in err


def test_cli_check_of_ort_cuda_without_its_provider_exits_2(cli) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    code, _out, err = cli("targets", "check", "ort-cuda")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "CUDAExecutionProvider" in err and "hwnas[gpu]" in err


def test_a_network_that_cannot_be_captured_is_named(tmp_path: Path) -> None:
    gpu = FakeGpu()
    backend = backend_for("torch-cuda-graph", gpu)
    path = onnx_file(tmp_path / "0123abcd.onnx")
    with pytest.raises(UserError) as info:
        backend.compile(ModelArtifact(path, lambda: ChargedModule(gpu, sync=True)))
    msg = str(info.value)
    assert "0123abcd.onnx" in msg and "cannot be captured as a CUDA graph" in msg
    assert CAPTURE_ERROR in msg and "torch-cuda" in msg and "\n" not in msg
    assert gpu.capturing is None  # the capture was ended
    # the eager target runs the same network
    backend_for("torch-cuda", gpu).compile(
        ModelArtifact(path, lambda: ChargedModule(gpu, sync=True))
    )
    # measure_onnx (hwnas measure) names the user's file, not the temporary ONNX
    with pytest.raises(UserError, match=r"^arch\.json: network 0123abcd\.onnx cannot be captured"):
        measure_onnx(
            [ModelArtifact(path, lambda: ChargedModule(gpu, sync=True))],
            backend.spec,
            backend=backend,
            names=["arch.json"],
        )


# -- profiling: failed capture is a failed row, the clock is stored with each row -----------


def test_profile_on_a_fake_gpu_stores_clocks_and_fails_uncapturable_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from profiling.synthetic import SyntheticCandidates

    gpu = FakeGpu()
    monkeypatch.setattr(torch_cuda, "cuda_system", lambda: fake_system(gpu, clocks=[1980.0]))

    def bad(arch_json: str) -> bool:
        return hashlib.sha256(arch_json.encode()).hexdigest()[0] in "01234"

    class OnFakeGpu(SyntheticCandidates):
        def build_torch(self, arch_json: str):  # type: ignore[no-untyped-def]
            inner = super().build_torch(arch_json)
            ms = 0.5 + 0.1 * len(json.loads(arch_json)["layers"])
            return _Charged(gpu, inner, ms, sync=bad(arch_json))

    spec = load_target("torch-cuda-graph")
    protocol = Protocol.for_target(spec).with_(min_rounds=2, rounds=2)
    with ProfileStore(tmp_path / "p.db") as store:
        summary = run_profile(
            OnFakeGpu(), spec, store, samples=12, settings=ProfileSettings(progress=False, protocol=protocol)
        )
        rows = store.select()
    assert summary.written == 12 and len(rows) == 12
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert failed and ok  # the seed gives both kinds
    assert all(bad(r["arch_json"]) for r in failed) and not any(bad(r["arch_json"]) for r in ok)
    for r in failed:
        assert "cannot be captured as a CUDA graph" in r["error"] and r["latency_ms"] is None
        assert r["clock_mhz"] is None
    for r in ok:
        layers = len(json.loads(r["arch_json"])["layers"])
        assert r["latency_ms"] == pytest.approx(0.5 + 0.1 * layers)
        assert r["clock_mhz"] == 1980.0 and r["stable"] == 1
    assert "clock" not in rows[0]["fingerprint"]


class _Charged(__import__("torch").nn.Module):
    """Wraps a real module: charges fake device time, optionally syncs with the host."""

    def __init__(self, gpu: FakeGpu, inner: object, ms: float, sync: bool) -> None:
        super().__init__()
        self.gpu, self.inner, self.ms, self.sync = gpu, inner, ms, sync

    def forward(self, x):  # type: ignore[no-untyped-def]
        self.gpu.work(self.ms)
        if self.sync:
            self.gpu.host_sync()
        return self.inner(x)


# -- on a real GPU (skipped here) -------------------------------------------------------------


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device visible to torch")
def test_real_graph_target_measures_cifar_networks_and_repeats(tmp_path: Path) -> None:
    """torch-cuda-graph on a few cifar architectures, measured in two processes: figures
    agree within ±2 % (H200 probes: 0.15 %), with a clock reading where NVML is installed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    hw = [sys.executable, "-m", "hwnas"]
    subprocess.run(
        [*hw, "arch", "sample", "--space", "cifar", "-n", "3", "--seed", "5", "--out", tmp_path],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    archs = sorted(str(p) for p in tmp_path.glob("*.json"))
    assert len(archs) == 3
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [*hw, "measure", *archs, "--target", "torch-cuda-graph", "--json"],
            check=True, env=env, cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        runs.append(json.loads(out.stdout))
    for a, b in zip(*runs, strict=True):
        assert a["latency_ms"] > 0 and a["reference_ms"] > 0
        assert abs(a["latency_ms"] / b["latency_ms"] - 1) <= 0.02, (a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device visible to torch")
@pytest.mark.parametrize("target", ["torch-cuda", "torch-cuda-graph"])
def test_real_gpu_targets_run_and_fingerprint_stays(tmp_path: Path, target: str) -> None:
    spec = load_target(target)
    backend = create_backend(spec)
    path = onnx_file(tmp_path / "m.onnx")

    def build():  # type: ignore[no-untyped-def]
        import torch

        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())

    protocol = Protocol.for_target(spec).with_(min_rounds=2, rounds=3)
    (m,) = measure_onnx([ModelArtifact(path, build)], spec, protocol, backend=backend)
    assert 0 < m.min_ms <= m.median_ms and m.reference_ms and m.reference_ms > 0
    fp = backend.fingerprint()
    assert fp["gpu"] and fp["gpu_memory_mb"] > 0 and fp["runtime"]["cuda"]
    script = (
        "import sys; from targets.registry import create_backend, load_target;"
        "from targets.timing import fingerprint_key;"
        "print(fingerprint_key(create_backend(load_target(sys.argv[1])).fingerprint()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, target], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.strip()
    assert other == fingerprint_key(fp)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA device visible to torch")
def test_real_capture_failure_is_a_user_error(tmp_path: Path) -> None:
    import torch

    class Syncs(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x * float(x.sum().item())  # .item() waits for the host: not capturable

    spec = load_target("torch-cuda-graph")
    backend = create_backend(spec)
    with pytest.raises(UserError, match="cannot be captured as a CUDA graph"):
        backend.compile(ModelArtifact(onnx_file(tmp_path / "m.onnx"), Syncs))
    # the GPU is still usable afterwards
    backend.compile(ModelArtifact(onnx_file(tmp_path / "n.onnx"), lambda: torch.nn.ReLU())).run()


def test_cuda_module_imports_without_torch() -> None:
    code = (
        "import sys, targets.backends.torch_cuda, targets.registry;"
        "print('torch' in sys.modules, 'pynvml' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "False"]


class _FakeNvml:
    """pynvml's calls the clock reader makes; any setter fails the test."""

    NVML_CLOCK_SM = 1

    def __init__(self, clocks: list[float]) -> None:
        self.clocks = iter(clocks)
        self.handles: list[str] = []

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
        if not uuid.startswith("GPU-"):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        self.handles.append(uuid)
        return uuid

    def nvmlDeviceGetClockInfo(self, handle: str, kind: int) -> int:  # noqa: N802
        assert kind == self.NVML_CLOCK_SM
        value = next(self.clocks)
        if value < 0:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return int(value)

    def __getattr__(self, name: str) -> object:
        if "Set" in name or "Reset" in name:
            raise AssertionError(f"hwnas must never change GPU settings ({name})")
        raise AttributeError(name)


def test_sm_clock_is_read_through_nvml_and_absent_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import torch

    nvml = _FakeNvml([1980, 1965, -1])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    props = types.SimpleNamespace(uuid="8f1c-uuid", name="NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    read = torch_cuda.nvml_clock_reader(0)
    assert nvml.handles == ["GPU-8f1c-uuid"]  # matched by UUID, not by index
    assert read() == 1980.0 and read() == 1965.0
    assert read() is None  # a failed reading is no reading
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    assert torch_cuda.nvml_clock_reader(0)() is None
