"""One search step (architecture step + weight step), hwnas's hierarchical supernet versus a
plain single-level DARTS supernet of the same width, cells and batch, written here.

    .venv/bin/python bench/search_step.py --channels 8 --batch 32 --rounds 3 --threads 2
    .venv/bin/python bench/search_step.py --device cuda --cells 8 --channels 16 --batch 64 --configs darts,full

`--device cuda` times on a GPU (synchronised around each step; no peak-RSS processes, the
peak GPU memory instead), `--precision bf16` autocasts both supernets' weights' work,
`--cells N` sets the cell count (DARTS's search: 8; hwnas's space gets (N - 2) / 3 cells
per stage, so N = 5, 8, 11, ...).

Configurations, built in one process and timed in interleaved rounds (one step of each per
round) so host drift hits all alike; each one's peak RSS comes from a separate process that
builds it and runs two steps:

* `darts`: DARTS (Liu et al. 2019) first-order: 5 cells (reductions at 1/3 and 2/3), 8 ops
  with `none`, alphas shared by all normal / all reduction cells, the full mixture;
* `hier-full`: hwnas's supernet on a space with the same cells (depth 1 per stage: 3 normal
  cells + 2 reductions), the stage connections and exits mixed too, the latency term and the
  depth penalty in the architecture loss; full mixture;
* `hier-sampled`: the same, Gumbel-TopK sampled with K = 1 (GDAS's single path) and K = 2.

Same op modules (hwnas.nets.ops, BatchNorm without affine), same threads, same input (3x32x32),
same memory format (`--channels-last` for both). The generic speed-ups live in those shared
modules, so the reference gets them too (`PoolBN` pools in NHWC: torch's NCHW CPU pooling
kernels are several times slower). hwnas's supernet also takes shortcuts that exist only in
the hierarchy (`hwnas.search.supernet`): H-DAS feeds a cell or stage one tensor as both inputs,
so its two 1x1 preprocessing ops run as one convolution + BatchNorm, whose output (states 0
and 1 side by side) the stage connections pool and normalise in one call per op; a stage
with one depth choice skips the exit mixture. A plain DARTS cell's two inputs are different
tensors and it has no stage level, so it has no counterpart of these.

Each step's wall time (`step_s`) and this process's CPU time (`step_cpu_s`: less sensitive
to other jobs on a shared host) are recorded; the ratios per round are printed for both.
Also: the latency term's own time (relaxed encode -> predictor -> gradient, plus the
per-step relaxed/derived predictions the budget mode reads) as a share of the step, and
each configuration's peak RSS. Prints a JSON line per configuration and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CHANNELS_LAST = False  # --channels-last: both supernets and the input in NHWC
DEVICE = torch.device("cpu")  # --device
PRECISION = "fp32"  # --precision: bf16 autocasts the weights' work (DARTS reference and hwnas alike)
CELLS = 5  # --cells


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _autocast() -> Any:
    import contextlib

    if PRECISION == "bf16":
        return torch.autocast(DEVICE.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
SHARED = True  # --no-shared: neither supernet shares a state's ReLU and pooling among its ops
DARTS_OPS = ("none",) + (
    "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)


# -- the plain DARTS reference ---------------------------------------------------------------------
class DartsMixed(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        from hwnas.nets.ops import make_cell_op

        self.ops = nn.ModuleList(make_cell_op(o, c, stride, affine=False) for o in DARTS_OPS)

    def forward(self, x: torch.Tensor, w: torch.Tensor, memo: dict | None = None, key: int = 0) -> torch.Tensor:
        from hwnas.nets.ops import forward_shared

        if memo is None:
            return sum(wi * op(x) for wi, op in zip(w, self.ops, strict=True))  # type: ignore[return-value]
        return sum(wi * forward_shared(op, x, memo, key) for wi, op in zip(w, self.ops, strict=True))  # type: ignore[return-value]


class DartsCell(nn.Module):
    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, nodes: int = 4):
        super().__init__()
        from hwnas.nets.ops import FactorizedReduce, ReLUConvBN

        self.pre0 = FactorizedReduce(c_pp, c, affine=False) if reduction_prev else ReLUConvBN(c_pp, c, affine=False)
        self.pre1 = ReLUConvBN(c_p, c, affine=False)
        self.nodes = nodes
        self.edges = nn.ModuleList(
            DartsMixed(c, 2 if reduction and j < 2 else 1) for i in range(nodes) for j in range(2 + i)
        )
        self.reduction = reduction

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        memo: dict | None = {} if SHARED else None  # ReLU and pooling of a state shared by its edges
        e = 0
        for i in range(self.nodes):
            out = 0
            for j in range(2 + i):
                out = out + self.edges[e](states[j], w[e], memo, j)
                e += 1
            states.append(out)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)


class DartsNet(nn.Module):
    def __init__(self, c: int, layers: int, classes: int = 10, stem: int = 3):
        super().__init__()
        cs = stem * c
        self.stem = nn.Sequential(nn.Conv2d(3, cs, 3, padding=1, bias=False), nn.BatchNorm2d(cs))
        c_pp, c_p, cc = cs, cs, c
        self.cells = nn.ModuleList()
        red_prev = False
        for i in range(layers):
            red = i in (layers // 3, 2 * layers // 3)
            if red:
                cc *= 2
            cell = DartsCell(c_pp, c_p, cc, red, red_prev)
            red_prev = red
            self.cells.append(cell)
            c_pp, c_p = c_p, 4 * cc
        self.classifier = nn.Linear(c_p, classes)
        n_edges = 14
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(DARTS_OPS)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(DARTS_OPS)))

    def weights(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alpha")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        wn, wr = F.softmax(self.alpha_normal, -1), F.softmax(self.alpha_reduce, -1)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduction else wn)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


def _darts_stepper(c: int, batch: int) -> Any:
    torch.manual_seed(0)
    net = DartsNet(c, CELLS).to(DEVICE)
    w_opt = torch.optim.SGD(net.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam([net.alpha_normal, net.alpha_reduce], 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    x, y = torch.randn(batch, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (batch,), device=DEVICE)
    if CHANNELS_LAST:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> dict[str, float]:
        _sync()
        t, c = time.perf_counter(), time.process_time()
        a_opt.zero_grad()
        with _autocast():
            out = net(x)
        F.cross_entropy(out.float(), y).backward(inputs=[net.alpha_normal, net.alpha_reduce])
        a_opt.step()
        w_opt.zero_grad()
        with _autocast():
            out = net(x)
        F.cross_entropy(out.float(), y).backward(inputs=net.weights())
        nn.utils.clip_grad_norm_(net.weights(), 5.0)
        w_opt.step()
        _sync()
        return {"step_s": time.perf_counter() - t, "step_cpu_s": time.process_time() - c}

    return step


# -- hwnas's supernet --------------------------------------------------------------------------
class _Data:
    """Just enough of LoadedData for a Searcher (the step is timed on fixed batches)."""

    def __init__(self, n: int):
        from torch.utils.data import TensorDataset

        self.train = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))

    def search_split(self, seed: int = 0) -> tuple[Any, Any]:
        return self.train, self.train


def _hier_stepper(c: int, batch: int, mode: str, k: int) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from searchkit import make_predictor

    from hwnas.search import SearchConfig, Searcher
    from hwnas.search.latency import LatencyTerm, WeightedLatency
    from hwnas.space import SpaceConfig
    from predictor import load_predictor

    if (CELLS - 2) % 3 or CELLS < 5:
        raise SystemExit(f"--cells {CELLS}: hwnas's space has 3 stages of equal depth and 2 reductions (5, 8, 11, ...)")
    space = SpaceConfig(name="bench5", in_channels=3, input_size=32, num_classes=10, channels=c,
                        depth_choices=((CELLS - 2) // 3,), window=2)
    with tempfile.TemporaryDirectory() as tmp:
        pred = load_predictor(make_predictor(Path(tmp), space, n=120), device=DEVICE)
    term = LatencyTerm(pred, space)
    penalty = WeightedLatency(term, 0.5)
    cfg = SearchConfig(space="bench5", mode=mode, samples=k, batch_size=batch, epochs=10, precision=PRECISION)
    s = Searcher(cfg, space, _Data(batch), term, penalty, device=DEVICE)
    s.gumbel = torch.Generator().manual_seed(0)
    s.tau = 1.0
    x, y = torch.randn(batch, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (batch,), device=DEVICE)
    if CHANNELS_LAST:
        s.model.net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif DEVICE.type == "cuda":  # the Searcher makes it channels_last on CUDA: undo for a plain comparison
        s.model.net.to(memory_format=torch.contiguous_format)
        s.channels_last = False

    def step() -> dict[str, float]:
        _sync()
        t, c = time.perf_counter(), time.process_time()
        s.arch_step(x, y)
        s.weight_step(x, y)
        _sync()
        out = {"step_s": time.perf_counter() - t, "step_cpu_s": time.process_time() - c}
        # the latency term alone: what the arch step spends on it (gradient through the
        # predictor, then the relaxed and derived predictions read after the step)
        t = time.perf_counter()
        loss = penalty.loss(term.predicted_ms(s.alpha))
        torch.autograd.grad(loss, s.model.arch_parameters(), allow_unused=True)
        with torch.no_grad():
            float(term.predicted_ms(s.alpha))
        term.derived_ms(s.alpha.derive())
        out["latency_term_s"] = time.perf_counter() - t
        return out

    return step


def _stepper(cfg: str, c: int, batch: int) -> Any:
    if cfg == "darts":
        return _darts_stepper(c, batch)
    mode, _, k = cfg.partition(":")
    return _hier_stepper(c, batch, mode, int(k or 1))


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child
    inherits from the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    step = _stepper(args.config, args.channels, args.batch)
    built = _hwm_mb()  # imports, predictor fit, model
    step()
    step()
    peak = _hwm_mb()
    print(json.dumps({"config": args.config, "peak_rss_mb": peak, "rss_before_steps_mb": built}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per configuration (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="darts,full,sampled:1,sampled:2")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-RSS processes")
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format for both supernets")
    ap.add_argument("--no-shared", action="store_true",
                    help="neither supernet shares a state's ReLU and pooling among the ops reading it")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (on CUDA: no peak-RSS processes)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast the weights' work")
    ap.add_argument("--cells", type=int, default=5, help="cells of both supernets (DARTS's search: 8)")
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global CHANNELS_LAST, SHARED, DEVICE, PRECISION, CELLS
    CHANNELS_LAST = args.channels_last
    DEVICE, PRECISION, CELLS = torch.device(args.device), args.precision, args.cells
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: as the search commands do
    SHARED = not args.no_shared
    import hwnas.search.supernet as supernet

    supernet.SHARE_STATE_WORK = SHARED
    if args.config:
        _memory(args)
        return
    configs = args.configs.split(",")
    torch.set_num_threads(args.threads)
    steppers = {} if args.memory_only else {cfg: _stepper(cfg, args.channels, args.batch) for cfg in configs}
    results: dict[str, dict[str, list[float]]] = {cfg: {} for cfg in configs}
    for r in range(0 if args.memory_only else args.rounds + 1):  # round 0 warms up
        for cfg in configs:
            out = steppers[cfg]()
            if r:
                for k, v in out.items():
                    results[cfg].setdefault(k, []).append(v)
            print(f"round {r} {cfg}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()), file=sys.stderr, flush=True)
    del steppers
    for cfg in configs:
        if DEVICE.type != "cpu":  # peak GPU memory of all configurations so far (RSS says nothing here)
            results[cfg].update(peak_rss_mb=torch.cuda.max_memory_allocated(DEVICE) / 2**20, rss_before_steps_mb=0.0)
            print(json.dumps({"config": cfg, **results[cfg]}), flush=True)
            continue
        mem = subprocess.run(
            [sys.executable, __file__, "--config", cfg, "--channels", str(args.channels), "--batch", str(args.batch),
             "--threads", str(args.threads), "--cells", str(args.cells), "--precision", args.precision]
            + (["--channels-last"] if args.channels_last else [])
            + (["--no-shared"] if args.no_shared else []),
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        results[cfg].update(json.loads(mem))
        del results[cfg]["config"]
        print(json.dumps({"config": cfg, **results[cfg]}), flush=True)
    if args.memory_only:
        return
    if "darts" in results:  # per round: both configurations timed within the same round
        for cfg, r in results.items():
            if cfg == "darts":
                continue
            for key in ("step_s", "step_cpu_s"):
                per = [a / b for a, b in zip(r[key], results["darts"][key], strict=True)]
                print(f"{cfg} / darts, {key}: per round " + ", ".join(f"{v:.3f}" for v in per)
                      + f"; median of ratios {statistics.median(per):.3f}; ratio of medians "
                      f"{statistics.median(r[key]) / statistics.median(results['darts'][key]):.3f}")
    ref = statistics.median(results["darts"]["step_s"]) if "darts" in results else None
    cref = statistics.median(results["darts"]["step_cpu_s"]) if "darts" in results else None
    print("\n| configuration | step s (median) | min-max | vs plain DARTS | CPU s (median) | CPU vs plain DARTS "
          "| latency term share | peak RSS MB (before steps) |")
    print("|---|---|---|---|---|---|---|---|")
    for cfg, r in results.items():
        med = statistics.median(r["step_s"])
        share = f"{statistics.median(r['latency_term_s']) / med:.2%}" if "latency_term_s" in r else "-"
        ratio = f"{med / ref:.2f}x" if ref else "-"
        cmed = statistics.median(r["step_cpu_s"])
        cratio = f"{cmed / cref:.2f}x" if cref else "-"
        print(
            f"| {cfg} | {med:.2f} | {min(r['step_s']):.2f}-{max(r['step_s']):.2f} | {ratio} | {cmed:.2f} | {cratio} | {share} | "
            f"{r['peak_rss_mb']:.0f} ({r['rss_before_steps_mb']:.0f}) |"
        )


if __name__ == "__main__":
    main()
