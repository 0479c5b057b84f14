"""Device placement without a GPU: `--device`/`--precision` refusals (the real no-CUDA state
of this machine, and a monkeypatched torch.cuda for several GPUs or one without bf16), the
three CUDA failures behind the old CPU pin (derive, repair, the collectives) caught with a
CUDA stand-in (tests/fakecuda.py), the GPU data path run on the CPU, resume across device
types refused, and the GPU checks themselves (`gpu`-marked: skipped without CUDA)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakecuda import CUDA, FakeCuda, OnCuda, on_cuda, params_on_cuda
from searchkit import make_predictor

from hwnas import devices
from hwnas.data.datasets import load_dataset
from hwnas.search import SearchConfig, Searcher, run_search
from hwnas.search import dist as D
from hwnas.search.derive import derive, expected_depth
from hwnas.search.latency import LatencyTerm
from hwnas.search.repair import repair_to_budget, score_cost
from hwnas.space import SpaceConfig, get_space, save_architecture
from hwnas.space.encoding import ArchParameters
from predictor import load_predictor
from targets.basics import UserError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = get_space("digits")
MICRO = SpaceConfig(
    name="micro", in_channels=1, input_size=8, num_classes=10, channels=4,
    depth_choices=(1, 2), nodes=2, stem_multiplier=2,
)  # fmt: skip
HAS_CUDA = torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the no-CUDA refusal cannot be seen")


@pytest.fixture
def two_old_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda says: 2 devices, compute capability 7.0 (no bf16)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after


# -- the resolver and its refusals ---------------------------------------------------------------
def test_auto_is_the_cpu_here_and_the_cpu_is_fp32() -> None:
    if not HAS_CUDA:
        assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve("cpu", None) == devices.Placement(torch.device("cpu"), "fp32")
    assert devices.resolve("cpu", None).record() == {"device": "cpu", "precision": "fp32"}
    with pytest.raises(UserError, match="bf16 on cpu"):
        devices.resolve("cpu", "bf16")
    with pytest.raises(UserError, match="--precision 'fp16'"):
        devices.resolve("cpu", "fp16")
    with pytest.raises(UserError, match="not a device"):
        devices.resolve_device("toaster")
    with pytest.raises(UserError, match="cpu or cuda only"):
        devices.resolve_device("mps")


def test_gpus_by_index_rank_and_capability(two_old_gpus: None) -> None:
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match=r"no cuda:3, this machine has 2 CUDA device\(s\): cuda:0, cuda:1"):
        devices.resolve_device("cuda:3")
    # no bf16 on compute capability 7.0: the default falls back to fp32, asking for it is refused
    assert devices.resolve_precision(None, torch.device("cuda", 1)) == "fp32"
    with pytest.raises(UserError, match="Tesla V100, compute capability 7.0"):
        devices.resolve_precision("bf16", torch.device("cuda", 1))


def test_bf16_is_the_default_on_a_gpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert devices.resolve_precision(None, torch.device("cuda", 0)) == "bf16"
    assert devices.resolve_precision("fp32", torch.device("cuda", 0)) == "fp32"


def _one_line_error(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for n in needles:
        assert n in lines[0], lines[0]


@needs_no_cuda
def test_cli_refuses_cuda_on_this_machine(cli, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    save_architecture(ArchParameters(DIGITS).derive(), arch)
    out = tmp_path / "run"
    calls = {
        "search": ("search", "--space", "digits", "--predictor", tmp_path / "p.pt", "--epochs", "1", "--out", out),
        "train": ("train", arch, "--epochs", "1", "--out", out),
        "predictor fit": ("predictor", "fit", "--db", tmp_path / "db.sqlite", "--target", "t", "--out", out),
    }
    for argv in calls.values():
        code, _, stderr = cli(*argv, "--device", "cuda")
        _one_line_error(code, stderr, "--device cuda", "sees no CUDA device")
        assert not out.exists()
    # the library refuses the same way, before anything is read or written
    with pytest.raises(UserError, match="sees no CUDA device"):
        run_search(SearchConfig(space="digits", epochs=1, device="cuda:0"), out)
    assert not out.exists()


def test_cli_refuses_a_missing_gpu_and_bf16_without_it(cli, tmp_path: Path, two_old_gpus: None) -> None:
    arch = tmp_path / "arch.json"
    save_architecture(ArchParameters(DIGITS).derive(), arch)
    pred = make_predictor(tmp_path, DIGITS)
    out = tmp_path / "run"
    search = ("search", "--space", "digits", "--predictor", pred, "--epochs", "1", "--out", out, "--no-progress")
    train = ("train", arch, "--epochs", "1", "--out", out, "--no-progress")
    for argv in (search, train):
        code, _, stderr = cli(*argv, "--device", "cuda:3")
        _one_line_error(code, stderr, "--device cuda:3", "cuda:0, cuda:1")
        code, _, stderr = cli(*argv, "--device", "cuda:1", "--precision", "bf16")
        _one_line_error(code, stderr, "--precision bf16 on cuda:1", "compute capability 7.0")
        assert not out.exists()
    code, _, stderr = cli("predictor", "fit", "--db", tmp_path / "db", "--target", "t", "--out", out, "--device", "cuda:2")
    _one_line_error(code, stderr, "--device cuda:2")


# -- the three CUDA failures, caught with the stand-in --------------------------------------------
def _alpha(seed: int = 1) -> ArchParameters:
    return ArchParameters(DIGITS, generator=torch.Generator().manual_seed(seed))


def test_derive_keeps_the_depth_choices_on_the_logits_device() -> None:
    alpha = _alpha()
    ref = expected_depth(alpha), derive(alpha)
    params_on_cuda(alpha)
    assert isinstance(alpha.depth[0], OnCuda) and alpha.depth[0].device == CUDA
    with FakeCuda():
        got = expected_depth(alpha), derive(alpha)
    assert got[0] == ref[0]  # same values, and no CPU tensor met a CUDA one
    assert got[1][0].hash == ref[1][0].hash and got[1][1] == ref[1][1]


def test_repair_and_score_cost_read_cuda_logits(tmp_path: Path) -> None:
    alpha = _alpha(2)
    term = LatencyTerm(load_predictor(make_predictor(tmp_path, DIGITS)), DIGITS)
    arch = alpha.derive()
    budget = term.derived_ms(arch) * 0.8
    ref = score_cost(arch, alpha), repair_to_budget(arch, alpha, term, budget)
    params_on_cuda(alpha)
    with FakeCuda():
        got = score_cost(arch, alpha), repair_to_budget(arch, alpha, term, budget)
    assert got[0] == ref[0]
    assert got[1][0].hash == ref[1][0].hash and got[1][1] == ref[1][1]


class _Collectives:
    """torch.distributed's collectives as used by hwnas.search.dist, one rank of two:
    every tensor must live on `device` (NCCL refuses CPU tensors) and be dense."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seen: list[str] = []

    def _check(self, name: str, t: torch.Tensor) -> None:
        assert t.device == self.device, f"{name}: a tensor on {t.device}, the collectives run on {self.device}"
        assert t.is_contiguous(), f"{name}: a non-contiguous tensor"
        self.seen.append(name)

    def all_reduce(self, t: torch.Tensor, op: object = None) -> None:
        self._check("all_reduce", t)
        if op is None:  # SUM over two ranks holding the same values
            t.mul_(2)

    def broadcast(self, t: torch.Tensor, src: int) -> None:
        self._check("broadcast", t)

    def barrier(self, device_ids: list[int] | None = None) -> None:
        assert (device_ids is not None) == (self.device.type == "cuda")
        self.seen.append("barrier")


@pytest.mark.parametrize("on_gpu", [False, True])
def test_collectives_see_only_tensors_on_the_search_device(monkeypatch: pytest.MonkeyPatch, on_gpu: bool) -> None:
    device = CUDA if on_gpu else torch.device("cpu")
    fake = _Collectives(device)
    for name in ("all_reduce", "broadcast", "barrier"):
        monkeypatch.setattr(D.dist, name, getattr(fake, name))
    info = D.DistInfo(rank=0, world=2, device=str(device))
    place = on_cuda if on_gpu else (lambda t: t)
    params = [torch.nn.Parameter(place(torch.randn(3, 2))), torch.nn.Parameter(place(torch.randn(4)))]
    for p in params:
        p.grad = place(torch.ones_like(p))
    with FakeCuda():
        assert D.all_sum([1.0, 2.5], info) == [2.0, 5.0]
        D.average_grads(params, info)
        D.broadcast_(params, info)
        D.assert_same(params, info, "logits")
        D.barrier(info)
    assert all(torch.equal(p.grad, torch.ones_like(p.grad)) for p in params)  # (1 + 1) / 2
    assert {"all_reduce", "broadcast", "barrier"} <= set(fake.seen)


# -- the GPU's data path, run on the CPU ----------------------------------------------------------
def _searcher(seed: int = 0, batched: bool = True) -> Searcher:
    cfg = SearchConfig(space="micro", mode="full", batch_size=8, epochs=2, seed=seed)
    s = Searcher(cfg, MICRO, load_dataset("digits", MICRO, subset=48, seed=0))
    if batched:  # what a CUDA device gets: images resident, batches augmented at once
        s.batched_data = True
        s._place_data()
    return s


def test_resident_batches_are_gathered_and_augmented_in_one_go() -> None:
    s = _searcher()
    x, y = s._batch(s.w_half, torch.arange(8))
    base = s.w_half.dataset
    rows = torch.as_tensor(s.w_half.indices[:8])
    assert torch.equal(y, base.labels[rows])
    assert x.shape == (8, 1, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    # each image is its source shifted by at most the crop padding (digits: no flip, no cutout)
    pad = max(1, 8 // 8)
    for img, src in zip(x, base.images[rows], strict=True):
        padded = torch.nn.functional.pad(src, (pad,) * 4)
        assert any(
            torch.equal(img, padded[:, i : i + 8, j : j + 8]) for i in range(2 * pad + 1) for j in range(2 * pad + 1)
        )


def test_an_epoch_on_the_resident_path_is_seeded() -> None:
    rows = []
    for _ in range(2):
        s = _searcher(seed=4)
        s.run_epoch()
        rows.append({k: v for k, v in s.rows[-1].items() if k != "seconds"})
        assert 0.0 <= rows[-1]["train_acc"] <= 1.0 and rows[-1]["w_loss"] > 0
    assert rows[0] == rows[1]


def _device_train_epoch(seed: int, precision: str = "fp32") -> tuple[dict[str, float], list[torch.Tensor]]:
    from hwnas.train.aux_head import AuxTap, aux_anchor
    from hwnas.train.loop import _build, _load_data, _train_epoch_on_device
    from hwnas.train.recipe import TrainConfig
    from targets.progress import Progress

    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=16, subset=48, drop_path=0.2, aux_weight=0.4, cutout=3, seed=seed)
    arch = ArchParameters(DIGITS, generator=torch.Generator().manual_seed(0)).derive()
    data = _load_data(cfg, arch)
    run = _build(arch, cfg)
    run.dev_rng = torch.Generator()  # what a GPU run gets (there: on the device)
    run.placement = devices.Placement(torch.device("cpu"), precision)  # bf16: the CPU's autocast stands in
    tap = AuxTap(aux_anchor(run.net))
    run.net.set_drop_path(0.1, run.dev_rng)
    with Progress(6, "t", enabled=False) as bar:
        sums = _train_epoch_on_device(run, data, cfg, 0, tap, bar, (data.train.images, data.train.labels))
    tap.handle.remove()
    return sums, [p.detach().clone() for p in run.net.parameters()]


def test_the_gpu_training_epoch_runs_on_the_cpu_and_is_seeded() -> None:
    """hwnas.train.loop's GPU epoch (resident images, batched augmentation, drop-path and
    augmentation from the device generator, sums read once) on the CPU: same seed, same run."""
    a, wa = _device_train_epoch(5)
    b, wb = _device_train_epoch(5)
    assert a == b and all(torch.equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert a["train_loss"] > 0 and 0.0 <= a["train_accuracy"] <= 1.0
    c, _ = _device_train_epoch(6)
    assert c != a
    d, wd = _device_train_epoch(5, "bf16")
    assert d != a and d["train_loss"] > 0 and all(w.dtype == torch.float32 for w in wd)


def test_bf16_autocast_keeps_logits_gradients_and_losses_fp32() -> None:
    """The bf16 step's dtypes, on the CPU's autocast (hwnas refuses bf16 on the CPU for real
    runs; here it only exercises the GPU's code path): the supernet's convolutions in bf16,
    the logits handed to the losses, the architecture logits and their gradients fp32."""
    s = _searcher()
    s.placement = devices.Placement(torch.device("cpu"), "bf16")
    seen: list[torch.dtype] = []
    conv = next(m for m in s.model.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    xv, yv = s._batch(s.a_half, torch.arange(8))
    xt, yt = s._batch(s.w_half, torch.arange(8, 16))
    grads, logits, parts = s.arch_gradient(xv, yv)
    assert torch.bfloat16 in seen and logits.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads) and all(p.dtype == torch.float32 for p in s.model.arch_parameters())
    s.arch_step(xv, yv)
    t_logits, w_loss = s.weight_step(xt, yt)
    assert t_logits.dtype == w_loss.dtype == torch.float32 and torch.isfinite(w_loss)
    assert all(p.dtype == torch.float32 for p in s.model.weights())
    s.cfg = dataclasses.replace(s.cfg, second_order=True)  # DARTS's unrolled step under autocast too
    grads, logits, _ = s.arch_gradient(xv, yv, xt, yt)
    assert logits.dtype == torch.float32 and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


# -- resume on another device type ------------------------------------------------------------------
def test_search_resume_on_another_device_type_is_refused(cli, tmp_path: Path) -> None:
    pred = make_predictor(tmp_path, DIGITS)
    out = tmp_path / "run"
    argv = ("search", "--space", "digits", "--predictor", pred, "--epochs", "1", "--out", out, "--subset", "48",
            "--batch-size", "16", "--search-channels", "4", "--search-resolution", "8", "--mode", "sampled",
            "--no-progress")  # fmt: skip
    assert cli(*argv)[0] == 0
    doc = json.loads((out / "config.json").read_text())
    assert doc["resolved"]["device"] == "cpu" and doc["resolved"]["precision"] == "fp32"
    assert doc["search"]["device"] == "auto" and doc["search"]["precision"] is None
    doc["resolved"].update(device="cuda", precision="bf16")  # as if it had run on a GPU
    (out / "config.json").write_text(json.dumps(doc))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, _, stderr = cli(*argv, "--resume")
    _one_line_error(code, stderr, "searched on cuda (bf16), this one would on cpu (fp32)", "--device cuda --precision bf16")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_train_resume_on_another_device_type_is_refused(cli, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    save_architecture(ArchParameters(DIGITS).derive(), arch)
    out = tmp_path / "run"
    argv = ("train", arch, "--epochs", "2", "--out", out, "--subset", "32", "--batch-size", "16", "--no-progress")
    doc_path = out / "config.json"
    assert cli(*argv, "--device", "cpu")[0] == 0
    doc = json.loads(doc_path.read_text())
    assert (doc["device"], doc["precision"]) == ("cpu", "fp32")
    doc.update(device="cuda", precision="bf16")
    doc_path.write_text(json.dumps(doc))
    code, _, stderr = cli(*argv, "--resume")
    _one_line_error(code, stderr, "trained on cuda (bf16), this one would on cpu (fp32)")


# -- on a GPU (bench/gpu_checks.sh) -----------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_search_epoch_bf16_and_resume(tmp_path: Path) -> None:
    pred = make_predictor(tmp_path, DIGITS)
    cfg = SearchConfig(space="digits", predictor=str(pred), latency_budget_ms=None, latency_weight=0.5,
                       search_channels=8, subset=256, batch_size=32, epochs=2, device="cuda")  # fmt: skip
    res = run_search(cfg, tmp_path / "run", progress=False)
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["resolved"]["device"] == "cuda" and doc["resolved"]["precision"] == "bf16"
    assert all(p.device.type == "cuda" for p in res.alpha.parameters())
    assert res.log[-1]["w_loss"] > 0 and 0 <= res.log[-1]["val_acc"] <= 1
    # interrupted after epoch one (its checkpoint written), then resumed on the GPU
    def stop(searcher: Searcher, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run2", progress=False, on_epoch=stop)
    resumed = run_search(cfg, tmp_path / "run2", resume=True, progress=False)
    assert [r["epoch"] for r in resumed.log] == [1, 2]
    assert "torch_rng" in torch.load(tmp_path / "run2" / "checkpoint.pt", weights_only=True)


@pytest.mark.gpu
def test_gpu_train_one_epoch_bf16(cli, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    save_architecture(ArchParameters(DIGITS).derive(), arch)
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", arch, "--epochs", "1", "--out", out, "--subset", "256", "--device", "cuda",
                               "--precision", "bf16", "--drop-path", "0.2", "--aux-weight", "0.4", "--json",
                               "--no-progress")  # fmt: skip
    assert code == 0, stderr
    s = json.loads(stdout)
    assert 0.0 <= s["test_accuracy"] <= 1.0
    assert json.loads((out / "config.json").read_text())["device"] == "cuda"
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "device" in ck["rng"]  # the CUDA generator's state is kept
    code, _, stderr = cli("train", arch, "--epochs", "2", "--out", out, "--subset", "256", "--device", "cuda",
                          "--precision", "bf16", "--drop-path", "0.2", "--aux-weight", "0.4", "--no-progress")  # fmt: skip
    assert code == 2  # another epoch count: refused, not mixed


@pytest.mark.gpu
def test_gpu_augment_batch_is_seeded_on_the_device() -> None:
    from hwnas.data.datasets import Augment, augment_batch

    x = torch.randn(64, 3, 32, 32, device="cuda")
    a = augment_batch(x, Augment(cutout=16), torch.Generator(device="cuda").manual_seed(3))
    b = augment_batch(x, Augment(cutout=16), torch.Generator(device="cuda").manual_seed(3))
    assert a.device.type == "cuda" and torch.equal(a, b)


@pytest.mark.gpu
def test_gpu_step_benchmark_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_search_step.py"), "--quick", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "gpu_search_step.json").read_text())["results"]


@pytest.mark.slow
def test_gpu_step_benchmark_runs_quick_on_the_cpu(tmp_path: Path) -> None:
    """bench/gpu_search_step.py's smoke test: the H200 session's script must not fail on arrival."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_search_step", ROOT / "bench" / "gpu_search_step.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "gpu_search_step.json").read_text())
    assert [r["variant"] for r in doc["results"]] == ["hwnas-full", "darts"]
    assert all(r["step_ms"] > 0 and r["kernels_per_step"] > 0 for r in doc["results"])


@pytest.mark.gpu
def test_gpu_predictor_fit_comes_back_on_the_cpu_and_ranks_like_the_cpu_fit(tmp_path: Path) -> None:
    import numpy as np
    from searchkit import synthetic_ms

    from hwnas.space import sample_architectures
    from hwnas.space.encoding import encode, encoding_layout
    from predictor import MLPConfig, fit_predictor
    from predictor import load_dataset as load_profiles
    from predictor.synthetic import write_store

    layout = encoding_layout(DIGITS)
    archs = sample_architectures(DIGITS, 0, 160)
    X = np.stack([encode(a) for a in archs])
    y = synthetic_ms(X, layout)
    rows = [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)]
    db = tmp_path / "d.db"
    write_store(db, rows, space_name=DIGITS.name, space_key=DIGITS.key, space_config=DIGITS.to_dict(), layout=layout)
    ds = load_profiles(db, "ort-cpu")
    cfg = MLPConfig(members=1, max_epochs=60)
    cpu = fit_predictor(ds, cfg=cfg, baselines=(), seed=0).model.predict_ms(X)
    gpu_model = fit_predictor(ds, cfg=cfg, baselines=(), seed=0, device=torch.device("cuda")).model
    assert gpu_model.device.type == "cpu"
    gpu = gpu_model.predict_ms(X)
    assert np.isfinite(gpu).all()
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(cpu), rank(gpu))[0, 1] > 0.9
