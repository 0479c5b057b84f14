"""The search step on a GPU (issue #16): one prepared run for an H200 session, <= 8 minutes.

    python bench/gpu_search_step.py --device cuda --out "$OUT"       # on the GPU machine
    python bench/gpu_search_step.py --quick                          # CPU smoke test (seconds)

Times the full-mode supernet step (architecture step + weight step, first order, latency
term on) of the `cifar` space at C=16, batch 64, 32x32, with the training images resident
on the device and augmented there (`augment_batch`), in four variants: fp32 / bf16 autocast
x channels_last / NCHW; and the plain DARTS reference (bench/search_step.py's `DartsNet`, 8
cells, same C, batch and input) in fp32 and bf16, channels_last. Per variant:

* `step_ms`: median wall time of one step, synchronised before and after it;
* `steps_per_s_async`: steps run back to back with one synchronisation at the end (what the
  host's launch rate allows when nothing waits);
* `kernels_per_step` and `gpu_busy_share` from torch.profiler over a few steps (kernel time
  summed / wall time; on the CPU: aten ops per step, no busy share);
* `peak_mem_mb` (torch.cuda.max_memory_allocated).

Writes `gpu_search_step.json` (environment, settings, one entry per variant) to `--out`
(default $OUT, else the current directory) and prints a markdown table. Each variant is cut
short after `--budget-s` seconds of timing so the whole run stays within its slot.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _hier(args: argparse.Namespace, device: torch.device, precision: str, channels_last: bool) -> Any:
    """A Searcher on the cifar space with resident, augmented data; returns step()."""
    from searchkit import make_predictor

    from hwnas.data.datasets import Augment, ImageTensorDataset
    from hwnas.search import SearchConfig, Searcher
    from hwnas.search.latency import LatencyTerm, WeightedLatency
    from hwnas.space import get_space
    from predictor import load_predictor

    space = get_space("cifar")
    if args.quick:  # the smoke test: a micro space of the same kind (cifar's full mixture takes seconds a step on a CPU)
        from hwnas.space import SpaceConfig

        space = SpaceConfig(name="micro3", in_channels=3, input_size=8, num_classes=10, channels=4,
                            depth_choices=(1, 2), nodes=2, stem_multiplier=2)  # fmt: skip
    size = args.resolution or space.input_size * space.upsample
    with tempfile.TemporaryDirectory() as tmp:
        pred = load_predictor(make_predictor(Path(tmp), space, n=120), device=device)
    term = LatencyTerm(pred, space)
    n = 2 * args.batch * 4
    g = torch.Generator().manual_seed(0)
    train = ImageTensorDataset(
        torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g), Augment(cutout=size // 2)
    )

    class Data:  # just enough of LoadedData
        def __init__(self) -> None:
            self.train = train

        def search_split(self, seed: int = 0) -> Any:
            from torch.utils.data import Subset

            return Subset(train, list(range(0, n, 2))), Subset(train, list(range(1, n, 2)))

    cfg = SearchConfig(
        space=space.name, mode="full", batch_size=args.batch, epochs=10, search_channels=args.channels,
        search_resolution=args.resolution, precision=precision,
    )  # fmt: skip
    s = Searcher(cfg, space, Data(), term, WeightedLatency(term, 0.5), device=device)
    if device.type == "cpu":  # the CPU keeps its per-image path; the GPU's is what is timed
        s.batched_data = True
        s._place_data()
    if channels_last != s.channels_last:
        s.channels_last = channels_last
        s.model.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    s.gumbel = torch.Generator().manual_seed(0)
    s.tau = 1.0
    s.augment_rng.manual_seed(0)
    idx = torch.arange(args.batch, device=device if s.batched_data else "cpu")

    def step() -> None:
        xv, yv = s._batch(s.a_half, idx)
        xt, yt = s._batch(s.w_half, idx)
        s.arch_step(xv, yv, xt, yt)
        s.weight_step(xt, yt)

    return step


def _darts(args: argparse.Namespace, device: torch.device, precision: str, channels_last: bool) -> Any:
    spec = importlib.util.spec_from_file_location("search_step", ROOT / "bench" / "search_step.py")
    assert spec is not None and spec.loader is not None
    ss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ss)
    torch.manual_seed(0)
    net = ss.DartsNet(args.channels, args.darts_cells).to(device)
    w_opt = torch.optim.SGD(net.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([net.alpha_normal, net.alpha_reduce], 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    res = args.resolution or 32
    x = torch.randn(args.batch, 3, res, res, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def amp() -> Any:
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> None:
        a_opt.zero_grad()
        with amp():
            out = net(x)
        F.cross_entropy(out.float(), y).backward(inputs=[net.alpha_normal, net.alpha_reduce])
        a_opt.step()
        w_opt.zero_grad()
        with amp():
            out = net(x)
        F.cross_entropy(out.float(), y).backward(inputs=net.weights())
        torch.nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()

    return step


def _profile(step: Any, device: torch.device, steps: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    wall_us = (time.perf_counter() - t) * 1e6
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type.name == "CUDA"]
        busy = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) for e in kernels)
        return {"kernels_per_step": len(kernels) / steps, "gpu_busy_share": min(1.0, busy / wall_us)}
    top = [e for e in events if e.name.startswith("aten::") and e.cpu_parent is None]
    return {"kernels_per_step": len(top) / steps, "gpu_busy_share": None, "note": "CPU: top-level aten ops per step"}


def _run(name: str, make: Any, args: argparse.Namespace, device: torch.device, **kw: Any) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = make(args, device, **kw)
    for _ in range(args.warmup):
        step()
    _sync(device)
    times: list[float] = []
    t_end = time.perf_counter() + args.budget_s
    for _ in range(args.steps):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
        if time.perf_counter() > t_end:
            break
    n_async = max(1, min(len(times), 10))
    t = time.perf_counter()
    for _ in range(n_async):
        step()
    _sync(device)
    async_s = time.perf_counter() - t
    row: dict[str, Any] = {
        "variant": name, **kw, "steps_timed": len(times), "step_ms": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times), "steps_per_s_async": n_async / async_s,
    }  # fmt: skip
    row.update(_profile(step, device, args.profile_steps))
    row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cuda if torch sees one, else cpu")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the JSON")
    ap.add_argument("--quick", action="store_true", help="a CPU-sized smoke test (a micro space, C=4, batch 4, 8x8)")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=None, help="supernet input size (default: the space's 32)")
    ap.add_argument("--darts-cells", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, caches)")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=20.0, help="timing seconds per variant at most")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = ap.parse_args(argv)
    if args.quick:
        args.channels, args.batch, args.resolution, args.darts_cells = 4, 4, 8, 5
        args.steps, args.warmup, args.profile_steps, args.budget_s = 1, 1, 1, 10.0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes, as `hwnas search` sets it on CUDA
    bf16 = device.type == "cuda"  # the CPU runs fp32 only (hwnas refuses bf16 there)
    variants: list[tuple[str, Any, dict[str, Any]]] = [("hwnas-full", _hier, {"precision": "fp32", "channels_last": True})]
    if not args.quick:
        variants.append(("hwnas-full", _hier, {"precision": "fp32", "channels_last": False}))
    if bf16:
        variants += [
            ("hwnas-full", _hier, {"precision": "bf16", "channels_last": True}),
            ("hwnas-full", _hier, {"precision": "bf16", "channels_last": False}),
        ]
    variants.append(("darts", _darts, {"precision": "fp32", "channels_last": True}))
    if bf16:
        variants.append(("darts", _darts, {"precision": "bf16", "channels_last": True}))
    t0 = time.perf_counter()
    results = [_run(name, make, args, device, **kw) for name, make, kw in variants]
    doc = {
        "bench": "gpu_search_step",
        "issue": 16,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_benchmark": device.type == "cuda",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - t0,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_search_step.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("| variant | precision | layout | step ms (median) | steps/s async | kernels/step | GPU busy | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        busy = f"{r['gpu_busy_share']:.0%}" if r["gpu_busy_share"] is not None else "-"
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "-"
        print(
            f"| {r['variant']} | {r['precision']} | {'NHWC' if r['channels_last'] else 'NCHW'} | {r['step_ms']:.1f} | "
            f"{r['steps_per_s_async']:.2f} | {r['kernels_per_step']:.0f} | {busy} | {mem} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
