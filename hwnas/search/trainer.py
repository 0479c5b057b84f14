"""The latency-aware bilevel search: config, run directory, epochs, checkpoints, resume.

DARTS/H-DAS's alternation, one architecture step then one weight step per batch, the
training set split 50/50 between them (`LoadedData.search_split`):

* architecture step (Adam lr 3e-4, betas (0.5, 0.999), wd 1e-3) on the architecture half:
  loss = CE + latency penalty(predictor(alpha.encode())) + depth_penalty * sum over stages of
  E[cells] (H-DAS's distribution search: 0.4). First-order by default: the gradient of that
  loss at the CURRENT weights (the same modules the weight step trains, no copy). With
  `second_order`, DARTS's unrolled step: w' = w - lr (momentum + grad + wd w), the loss at
  w', and the finite-difference Hessian-vector correction.
* weight step (SGD lr 0.025 cosine to 0.001, momentum 0.9, wd 3e-4, grad clip 5) on the
  weight half, with a fresh relaxation (a fresh sample in sampled mode).

Every epoch's randomness (batch order, augmentation, Gumbel noise) is drawn from generators
seeded by (seed, epoch), and the checkpoint written at the end of each epoch holds every
other state (weights, BatchNorm statistics, logits, both optimisers, the schedule, the
latency penalty, the log): a run killed at any moment and resumed ends with exactly the
architecture of the uninterrupted run (same seed, CPU).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call
from tqdm import tqdm

from hwnas.encoding import ArchParameters
from hwnas.search import dist as D
from hwnas.search.derive import DEFAULT_MAX_PARAM_FREE, derive, expected_depth, param_free_share
from hwnas.search.relax import relax
from hwnas.search.supernet import SearchModel
from hwnas.space import Architecture, SpaceConfig, atomic_write_bytes, atomic_write_text, get_space
from targets.basics import UserError

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_FILE = "checkpoint.pt"
ARCH_FILE = "architecture.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FORMAT = "hwnas.search-checkpoint/1"
MODES = ("full", "sampled")
#: The usual proxy width when --search-channels is not given (DARTS/H-DAS search CIFAR at C=16).
PROXY_CHANNELS = {"cifar": 16}


def search_channels(cfg: SearchConfig, space: SpaceConfig) -> int:
    """The supernet's width C: --search-channels, else the space's usual proxy, else its own."""
    return cfg.search_channels or PROXY_CHANNELS.get(space.name, space.channels)


def search_resolution(cfg: SearchConfig, space: SpaceConfig) -> int:
    """The supernet's input size: --search-resolution, else the deploy network's (input x upsample)."""
    return cfg.search_resolution or space.input_size * space.upsample


@dataclass
class SearchConfig:
    """Everything that decides a search's result (config.json's `search` section)."""

    space: str
    dataset: str = "digits"
    predictor: str | None = None  # a predictor file; None: no latency term (tests, ablations)
    latency_weight: float | None = None
    latency_budget_ms: float | None = None
    mode: str = "full"  # measured: sampled paths do not train the supernet in CPU-sized budgets
    samples: int = 1  # K sub-graphs per step in sampled mode (1 = GDAS's single path)
    search_channels: int | None = None  # proxy width C of the supernet (None: the space's)
    search_resolution: int | None = None  # proxy input size of the supernet (None: the deploy network's)
    epochs: int = 10
    seed: int = 0
    subset: int | None = None
    batch_size: int = 32
    second_order: bool = False
    depth_penalty: float = 0.4  # H-DAS: 0.4 x expected cells per stage, summed over stages
    max_param_free: int | None = DEFAULT_MAX_PARAM_FREE  # collapse guard (None: off)
    target: str | None = None  # if set, the predictor must be fitted for this target
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    tau_max: float = 10.0  # Gumbel temperature, linear from tau_max to tau_min (GDAS)
    tau_min: float = 0.1
    sample_inputs: bool = True  # sampled mode: draw 2 inputs per node (False: GDAS, every input, ops drawn)

    def check(self) -> None:
        """UserError for contradictory or out-of-range settings (before anything is read)."""
        if self.latency_weight is not None and self.latency_budget_ms is not None:
            raise UserError(
                "--latency-weight and --latency-budget both given: choose one (a weight prices "
                "latency; a budget is a hard target the weight adapts to)"
            )
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name, low in (("epochs", 1), ("batch_size", 2), ("samples", 1)):
            if int(getattr(self, name)) < low:
                raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.search_channels is not None and (self.search_channels < 2 or self.search_channels % 2):
            raise UserError(f"--search-channels must be an even number >= 2, got {self.search_channels}")
        if self.search_resolution is not None and self.search_resolution < 4:
            raise UserError(
                f"--search-resolution must be >= 4 (two reductions halve it twice), got {self.search_resolution}"
            )
        if not math.isfinite(self.depth_penalty) or self.depth_penalty < 0:
            raise UserError(f"--depth-penalty must be a finite number >= 0, got {self.depth_penalty}")
        if self.max_param_free is not None and self.max_param_free < 0:
            raise UserError(f"--max-param-free must be >= 0, got {self.max_param_free}")
        if (self.latency_weight is not None or self.latency_budget_ms is not None) and self.predictor is None:
            raise UserError("a latency weight or budget needs --predictor FILE (a fitted latency predictor)")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["a_betas"] = list(self.a_betas)
        return d


@dataclass
class SearchResult:
    """What `run_search` returns (also written to the run directory)."""

    architecture: Architecture
    summary: dict[str, Any]
    log: list[dict[str, Any]]
    run_dir: Path | None
    alpha: ArchParameters = field(repr=False)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _seeded(*key: int) -> torch.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class Searcher:
    """One search in memory: model, optimisers, data, latency penalty (no files)."""

    def __init__(
        self,
        cfg: SearchConfig,
        space: SpaceConfig,
        data: Any,
        term: Any = None,
        penalty: Any = None,
        info: D.DistInfo | None = None,
        device: torch.device | None = None,
    ):
        self.cfg = cfg
        self.space = space
        self.data = data
        self.term = term
        self.penalty = penalty
        self.info = info or D.DistInfo()
        self.device = device or torch.device("cpu")
        torch.manual_seed(cfg.seed)
        alpha = ArchParameters(space, generator=_seeded(cfg.seed, 0xA1FA))
        res = search_resolution(cfg, space)
        self.model = SearchModel(
            alpha, search_channels(cfg, space), None if res == space.input_size * space.upsample else res
        ).to(self.device)
        # channels_last on CPU: pooling and convolutions ~18 % faster per step (digits supernet
        # at 8x8, C = 8; docs/benchmarks.md); one process only (collectives want contiguous).
        self.channels_last = self.device.type == "cpu" and self.info.world == 1
        if self.channels_last:
            self.model.net.to(memory_format=torch.channels_last)
        self.alpha = self.model.alpha
        D.broadcast_(self.model.weights() + self.model.arch_parameters(), self.info)
        self.w_optim = torch.optim.SGD(
            self.model.weights(), cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
        )
        self.a_optim = torch.optim.Adam(
            self.model.arch_parameters(), cfg.a_lr, betas=tuple(cfg.a_betas), weight_decay=cfg.a_weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optim, cfg.epochs, eta_min=cfg.w_lr_min)
        self.w_half, self.a_half = data.search_split(cfg.seed)
        n = min(len(self.w_half), len(self.a_half))
        self.batch_size = min(cfg.batch_size, n)
        if self.batch_size < max(2, 2 * self.info.world):
            raise UserError(
                f"dataset {cfg.dataset!r}: {len(data.train)} training images leave {n} per half of the "
                "search split, too few for a batch; use more data (--subset) or a smaller --batch-size"
            )
        self.steps_per_epoch = n // self.batch_size
        self.epoch = 0
        self.rows: list[dict[str, Any]] = []
        self.gumbel: torch.Generator | None = None
        self.tau = cfg.tau_max

    # -- one step ----------------------------------------------------------------------------
    def relaxed(self) -> Any:
        return relax(
            self.alpha, self.cfg.mode, k=self.cfg.samples, tau=self.tau, generator=self.gumbel,
            sample_inputs=self.cfg.sample_inputs,
        )

    def depth_loss(self) -> torch.Tensor:
        choices = torch.tensor(self.space.depth_choices, dtype=torch.float32, device=self.device)
        e = sum((self.alpha.depth_probs(s) * choices).sum() for s in range(len(self.alpha.depth)))
        return self.cfg.depth_penalty * e  # type: ignore[return-value]

    def arch_loss(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE + latency penalty + depth penalty (the last two do not depend on the weights)."""
        ce = F.cross_entropy(logits, y)
        loss = ce + self.depth_loss()
        parts = {"ce": float(ce.detach())}
        if self.term is not None:
            ms = self.term.predicted_ms(self.alpha)
            lat = self.penalty.loss(ms)
            loss = loss + lat
            parts.update(relaxed_ms=float(ms.detach()), latency_loss=float(lat.detach()))
        return loss, parts

    def arch_gradient(
        self, xv: torch.Tensor, yv: torch.Tensor, xt: torch.Tensor | None = None, yt: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor, dict[str, float]]:
        """Gradients of the architecture loss for every logit (order: arch_parameters()),
        the validation logits, and the loss parts. First-order: at the current weights."""
        params = self.model.arch_parameters()
        r = self.relaxed()
        if not self.cfg.second_order:
            logits = self.model.net(xv, r)
            loss, parts = self.arch_loss(logits, yv)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)], logits, parts
        assert xt is not None and yt is not None
        return self._unrolled_gradient(xt, yt, xv, yv, r)

    def _unrolled_gradient(self, xt, yt, xv, yv, r):  # type: ignore[no-untyped-def]
        """DARTS's second-order step (arXiv:1806.09055, eq. 7-8) with torch.func."""
        net = self.model.net
        names = [n for n, _ in net.named_parameters()]
        weights = [p for _, p in net.named_parameters()]
        buffers = dict(net.named_buffers())
        alphas = self.model.arch_parameters()
        lr = self.scheduler.get_last_lr()[0]
        r_w = _detached(r)
        loss_t = F.cross_entropy(net(xt, r_w), yt)
        g = torch.autograd.grad(loss_t, weights)
        with torch.no_grad():
            unrolled = []
            for p, gp in zip(weights, g, strict=True):
                buf = self.w_optim.state.get(p, {}).get("momentum_buffer")
                m = buf * self.cfg.w_momentum if buf is not None else 0.0
                unrolled.append((p - lr * (m + gp + self.cfg.w_weight_decay * p)).detach().requires_grad_())
        logits = functional_call(net, {**dict(zip(names, unrolled, strict=True)), **buffers}, (xv, r))
        loss, parts = self.arch_loss(logits, yv)
        grads = torch.autograd.grad(loss, alphas + unrolled, allow_unused=True, retain_graph=True)
        dalpha = [gr if gr is not None else torch.zeros_like(a) for gr, a in zip(grads[: len(alphas)], alphas, strict=True)]
        dw = [gr if gr is not None else torch.zeros_like(w) for gr, w in zip(grads[len(alphas) :], unrolled, strict=True)]
        eps = 0.01 / (torch.cat([d.reshape(-1) for d in dw]).norm() + 1e-12)

        def alpha_grad_at(sign: float) -> list[torch.Tensor]:
            shifted = {n: (w + sign * eps * d).detach() for n, w, d in zip(names, weights, dw, strict=True)}
            lt = F.cross_entropy(functional_call(net, {**shifted, **buffers}, (xt, r)), yt)
            gs = torch.autograd.grad(lt, alphas, allow_unused=True, retain_graph=True)
            return [gg if gg is not None else torch.zeros_like(a) for gg, a in zip(gs, alphas, strict=True)]

        pos, neg = alpha_grad_at(1.0), alpha_grad_at(-1.0)
        out = [da - lr * (gp - gn) / (2 * eps) for da, gp, gn in zip(dalpha, pos, neg, strict=True)]
        return out, logits.detach(), parts

    def arch_step(self, xv, yv, xt=None, yt=None) -> tuple[torch.Tensor, dict[str, float]]:  # type: ignore[no-untyped-def]
        grads, logits, parts = self.arch_gradient(xv, yv, xt, yt)
        params = self.model.arch_parameters()
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        D.average_grads(params, self.info)
        self.a_optim.step()
        self.a_optim.zero_grad(set_to_none=True)
        if self.term is not None:
            with torch.no_grad():
                relaxed_ms = float(self.term.predicted_ms(self.alpha))
            derived_ms = self.term.derived_ms(self.alpha.derive())
            self.penalty.update(relaxed_ms, derived_ms)
        return logits, parts

    def weight_step(self, xt: torch.Tensor, yt: torch.Tensor) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            r = self.relaxed()
        logits = self.model.net(xt, r)
        loss = F.cross_entropy(logits, yt)
        weights = self.model.weights()
        self.w_optim.zero_grad(set_to_none=True)
        loss.backward(inputs=weights)
        D.average_grads(weights, self.info)
        torch.nn.utils.clip_grad_norm_(weights, self.cfg.w_grad_clip)
        self.w_optim.step()
        return logits.detach(), float(loss.detach())

    # -- one epoch ---------------------------------------------------------------------------
    def _batch(self, ds: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx[self.info.rank :: self.info.world]
        items = [ds[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items]).to(self.device)
        y = torch.stack([torch.as_tensor(it[1]) for it in items]).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def run_epoch(self, on_step: Callable[[Searcher, int], None] | None = None, bar: Any = None) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch
        t0 = time.perf_counter()
        span = max(1, cfg.epochs - 1)
        self.tau = cfg.tau_max - (cfg.tau_max - cfg.tau_min) * e / span
        order = _seeded(cfg.seed, e, 1)
        w_perm = torch.randperm(len(self.w_half), generator=order)
        a_perm = torch.randperm(len(self.a_half), generator=order)
        self.gumbel = _seeded(cfg.seed, e, 2)
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=_seeded(cfg.seed, e, 3))))  # augmentation
        self.model.train()
        sums = {"w_loss": 0.0, "a_loss": 0.0, "ce_val": 0.0, "latency_loss": 0.0, "n": 0.0, "t_ok": 0.0, "v_ok": 0.0, "t_n": 0.0, "v_n": 0.0}
        B = self.batch_size
        for step in range(self.steps_per_epoch):
            xv, yv = self._batch(self.a_half, a_perm[step * B : (step + 1) * B])
            xt, yt = self._batch(self.w_half, w_perm[step * B : (step + 1) * B])
            v_logits, parts = self.arch_step(xv, yv, xt, yt)
            t_logits, w_loss = self.weight_step(xt, yt)
            sums["w_loss"] += w_loss
            sums["ce_val"] += parts["ce"]
            sums["latency_loss"] += parts.get("latency_loss", 0.0)
            sums["n"] += 1
            sums["t_ok"] += float((t_logits.argmax(1) == yt).sum())
            sums["v_ok"] += float((v_logits.argmax(1) == yv).sum())
            sums["t_n"] += len(yt)
            sums["v_n"] += len(yv)
            if on_step is not None:
                on_step(self, step)
            if bar is not None:
                bar.update(1)
        self.scheduler.step()
        D.assert_same(self.model.arch_parameters(), self.info, "architecture logits")
        keys = list(sums)
        tot = dict(zip(keys, D.all_sum([sums[k] for k in keys], self.info), strict=True))
        world = self.info.world
        arch, _ = derive(self.alpha, cfg.max_param_free)
        raw = self.alpha.derive()
        depths = expected_depth(self.alpha)
        row: dict[str, Any] = {
            "epoch": e + 1,
            "w_loss": tot["w_loss"] / max(1.0, tot["n"]),
            "ce_val": tot["ce_val"] / max(1.0, tot["n"]),
            "latency_loss": tot["latency_loss"] / max(1.0, tot["n"]),
            "depth_loss": float(self.depth_loss().detach()),
            "train_acc": tot["t_ok"] / max(1.0, tot["t_n"]),
            "val_acc": tot["v_ok"] / max(1.0, tot["v_n"]),
            "relaxed_ms": math.nan,
            "derived_ms": math.nan,
            "latency_weight": math.nan,
        }
        row["a_loss"] = row["ce_val"] + row["latency_loss"] + row["depth_loss"]
        if self.term is not None:
            with torch.no_grad():
                row["relaxed_ms"] = float(self.term.predicted_ms(self.alpha))
            row["derived_ms"] = self.term.derived_ms(arch)
            row["latency_weight"] = float(self.penalty.weight)
        for s, d in enumerate(depths):
            row[f"depth_stage{s}"] = d
        row["param_free_share"] = param_free_share(arch)
        row["param_free_share_unguarded"] = param_free_share(raw)
        row["tau"] = self.tau
        row["lr"] = self.scheduler.get_last_lr()[0]
        row["seconds"] = time.perf_counter() - t0
        row["ranks"] = world
        self.rows.append(row)
        self.epoch += 1
        return row

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "net": self.model.net.state_dict(),
            "alpha": self.alpha.state_dict(),
            "w_optim": self.w_optim.state_dict(),
            "a_optim": self.a_optim.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "penalty": self.penalty.state_dict() if self.penalty is not None else None,
            "rows": [dict(r) for r in self.rows],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.net.load_state_dict(st["net"])
        self.alpha.load_state_dict(st["alpha"])
        self.w_optim.load_state_dict(st["w_optim"])
        self.a_optim.load_state_dict(st["a_optim"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.penalty is not None and st.get("penalty") is not None:
            self.penalty.load_state_dict(st["penalty"])
        self.rows = [dict(r) for r in st["rows"]]
        self.epoch = int(st["epoch"])
        torch.set_rng_state(st["torch_rng"])


def _detached(r: Any) -> Any:
    """A copy of a relaxation without its graph (for the weight-only virtual step)."""
    from hwnas.search.relax import Block, Relaxed

    return Relaxed(
        [[Block(b.weights.detach(), b.active) for b in c] for c in r.cells],
        [[Block(b.weights.detach(), b.active) for b in s] for s in r.slots],
        [e.detach() for e in r.exits],
        r.active_exits,
        r.run_depth,
    )


# -- the run directory ---------------------------------------------------------------------------
def _resolve(cfg: SearchConfig) -> tuple[SpaceConfig, Any, Any, Any, dict[str, Any]]:
    """Space, latency term and penalty, data, and the resolved config; UserError on bad input.
    Reads only (the run directory is not touched)."""
    from hwnas.data import load_dataset

    cfg.check()
    space = get_space(cfg.space)
    term = penalty = None
    resolved: dict[str, Any] = {
        "space": space.to_dict(),
        "search_channels": search_channels(cfg, space),
        "search_resolution": search_resolution(cfg, space),
    }
    if cfg.predictor is not None:
        from hwnas.latency import check_predictor_for_search
        from hwnas.search.latency import BudgetLatency, LatencyTerm, WeightedLatency
        from predictor import load_predictor

        path = Path(cfg.predictor)
        if not path.is_file():
            raise UserError(f"--predictor {path}: no such file; fit one with `hwnas predictor fit`")
        pred = load_predictor(path)
        deploy = check_predictor_for_search(pred, space)
        target = str(pred.header.get("target_name", "?"))
        if cfg.target is not None and cfg.target != target:
            raise UserError(
                f"--predictor {path} was fitted for target '{target}', not '{cfg.target}'; "
                f"fit a predictor on profiles of '{cfg.target}' or drop --target"
            )
        term = LatencyTerm(pred, deploy)
        if cfg.latency_budget_ms is not None:
            penalty = BudgetLatency(term, cfg.latency_budget_ms, seed=cfg.seed)
        else:
            penalty = WeightedLatency(term, cfg.latency_weight or 0.0)
        resolved.update(
            predictor_sha256=_file_sha256(path), target=target, latency=penalty.describe(),
            deploy_space=deploy.to_dict(),
        )
    data = load_dataset(cfg.dataset, space, subset=cfg.subset, seed=cfg.seed)
    resolved["data"] = data.describe()
    return space, term, penalty, data, resolved


def _config_doc(cfg: SearchConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    search = cfg.to_json()
    if search["predictor"] is not None:
        search["predictor"] = str(Path(search["predictor"]).resolve())
    return {"schema": "hwnas.search-config/1", "search": search, "resolved": resolved}


def _check_run_dir(out: Path, doc: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start); UserError if `out` cannot take this run."""
    cfg_path = out / CONFIG_FILE
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if cfg_path.exists():
                raise UserError(
                    f"{out} already holds a search run; continue it with --resume, or choose another --out"
                )
            raise UserError(f"{out} exists and is not an empty directory; choose another --out")
        return None
    if not cfg_path.exists():
        raise UserError(f"--resume: {out} holds no search run ({CONFIG_FILE} missing); start one without --resume")
    try:
        old = json.loads(cfg_path.read_text())
        old_search = old["search"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--resume: {cfg_path} is unreadable or corrupted ({exc.__class__.__name__}); start a new run") from None
    new_search = doc["search"]
    diff = [
        f"{k}: run has {old_search.get(k)!r}, now {new_search.get(k)!r}"
        for k in sorted(set(old_search) | set(new_search))
        if old_search.get(k) != new_search.get(k)
    ]
    old_sha = old.get("resolved", {}).get("predictor_sha256")
    if old_sha != doc["resolved"].get("predictor_sha256"):
        diff.append("the predictor file's content changed")
    if diff:
        raise UserError(
            f"--resume: {out} is a run of another config ({'; '.join(diff)}); resume with the run's "
            f"own settings (see {cfg_path}) or start a new run with another --out"
        )
    ck = out / CHECKPOINT_FILE
    if not ck.exists():
        return None
    try:
        st = torch.load(ck, map_location="cpu", weights_only=True)
        if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a search checkpoint")
    except Exception as exc:  # noqa: BLE001 (any unpickling failure means a damaged file)
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise UserError(
            f"--resume: {ck} is corrupted ({first}); restore it, or delete it to restart the run from epoch 0"
        ) from None
    return st


def _write_log(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / LOG_FILE, buf.getvalue())


def _save_checkpoint(out: Path, st: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(st, buf)
    atomic_write_bytes(out / CHECKPOINT_FILE, buf.getvalue())


def run_search(
    cfg: SearchConfig,
    out: str | Path | None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
    on_step: Callable[[Searcher, int], None] | None = None,
    on_epoch: Callable[[Searcher, dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search; write the run directory `out` (None: nothing written).

    `progress`: a tqdm bar (None: when stderr is a terminal; otherwise one line per epoch).
    `on_step(searcher, step)` / `on_epoch(searcher, row)` are hooks for tests and tools.
    Bad input raises UserError before anything in `out` changes. Under torchrun every rank
    calls this; rank 0 writes the run directory.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    out_path = Path(out) if out is not None else None
    space, term, penalty, data, resolved = _resolve(cfg)
    device = torch.device("cpu")
    info = D.init_from_env(device)
    resolved["ranks"] = info.world
    doc = _config_doc(cfg, resolved)
    state = _check_run_dir(out_path, doc, resume) if out_path is not None else None
    D.barrier(info)  # every rank has checked the run directory before rank 0 writes to it
    searcher = Searcher(cfg, space, data, term, penalty, info, device)
    if state is not None:
        try:
            searcher.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise UserError(
                f"--resume: {out_path / CHECKPOINT_FILE} does not fit this run ({str(exc).splitlines()[0][:160]}); "
                "delete it to restart from epoch 0"
            ) from None
    if out_path is not None and info.main:
        out_path.mkdir(parents=True, exist_ok=True)
        if state is None:
            atomic_write_text(out_path / CONFIG_FILE, json.dumps(doc, indent=2) + "\n")
    show = sys.stderr.isatty() if progress is None else progress
    total = cfg.epochs * searcher.steps_per_epoch
    bar = tqdm(
        total=total, initial=searcher.epoch * searcher.steps_per_epoch, unit="step",
        desc="search", disable=not (show and info.main), dynamic_ncols=True,
    )
    t_start = time.perf_counter()
    try:
        while searcher.epoch < cfg.epochs:
            row = searcher.run_epoch(on_step, bar if show else None)
            if out_path is not None and info.main:
                _write_log(out_path, searcher.rows)
                _save_checkpoint(out_path, searcher.state_dict())
            if info.main and not show:
                print(
                    f"search: epoch {row['epoch']}/{cfg.epochs} train acc {row['train_acc']:.3f} "
                    f"val acc {row['val_acc']:.3f} relaxed {row['relaxed_ms']:.4g} ms derived "
                    f"{row['derived_ms']:.4g} ms weight {row['latency_weight']:.3g} {row['seconds']:.1f} s",
                    file=sys.stderr,
                )
            if on_epoch is not None:
                on_epoch(searcher, row)
    finally:
        bar.close()
    arch, guard_log = derive(searcher.alpha, cfg.max_param_free)
    repair_log: list[str] = []
    if penalty is not None and cfg.latency_budget_ms is not None:
        from hwnas.search.latency import repair_to_budget

        arch, repair_log = repair_to_budget(
            arch, searcher.alpha, term, cfg.latency_budget_ms, tol=penalty.tol, max_param_free=cfg.max_param_free
        )
    arch = Architecture.from_dict(arch.to_dict(), where="derived architecture")  # validates
    last = searcher.rows[-1] if searcher.rows else {}
    summary: dict[str, Any] = {
        "architecture_hash": arch.hash,
        "predicted_latency_ms": term.derived_ms(arch) if term is not None else None,
        "relaxed_latency_ms": last.get("relaxed_ms"),
        "latency0_ms": term.latency0_ms if term is not None else None,
        "val_accuracy": last.get("val_acc"),
        "train_accuracy": last.get("train_acc"),
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "samples": cfg.samples,
        "second_order": cfg.second_order,
        "search_channels": resolved["search_channels"],
        "param_free_share": param_free_share(arch),
        "collapse_guard": guard_log,
        "repair": repair_log,
        "ranks": info.world,
        "seconds_this_process": time.perf_counter() - t_start,
        "seconds_total": float(sum(r["seconds"] for r in searcher.rows)),
    }
    if cfg.latency_budget_ms is not None:
        summary["latency_budget_ms"] = cfg.latency_budget_ms
        summary["final_latency_weight"] = penalty.weight if penalty is not None else None
    else:
        summary["latency_weight"] = cfg.latency_weight or 0.0
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    if out_path is not None and info.main:
        atomic_write_text(out_path / ARCH_FILE, arch.to_json() + "\n")
        atomic_write_text(out_path / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return SearchResult(arch, summary, searcher.rows, out_path, searcher.alpha)


__all__ = ["SearchConfig", "SearchResult", "Searcher", "run_search"]
