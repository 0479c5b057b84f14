"""The latency MLP: a small ensemble in torch, differentiable in its input encoding.

`LatencyPredictor.forward` maps a raw encoding tensor [..., D] (one-hot or relaxed)
straight to milliseconds [...]: the feature map (predictor.features), the feature
standardisation and the target scale all live in buffers, which is the contract the
search relies on. Each member is an MLP plus a linear term on the features (the linear
term is a per-op lookup table; the MLP supplies what a table cannot, such as a stage's
depth multiplying its cell's cost). Members predict latency relative to the training
mean and are fitted on squared relative error, the quantity MAPE and "within ±10 %"
judge. Averaging a few members cuts variance, which is what ~1,000 samples need; they
are trained together as one batched network, so an ensemble costs little more than one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from predictor.features import FeatureLayout

ACTIVATIONS: dict[str, Any] = {
    "silu": nn.functional.silu,
    "gelu": nn.functional.gelu,
    "relu": nn.functional.relu,
    "tanh": torch.tanh,
}


@dataclass(frozen=True)
class MLPConfig:
    """Hyperparameters of the MLP ensemble and its training (saved in the predictor header)."""

    hidden: tuple[int, ...] = (128, 128)
    members: int = 4
    activation: str = "silu"
    linear_skip: bool = True
    lr: float = 3e-3
    weight_decay: float = 3.0  # decoupled (AdamW), on the MLP layers; the linear term is free
    batch_size: int = 128
    max_epochs: int = 300  # cosine learning-rate schedule over this many epochs
    patience: int = 80  # stop a member after this many epochs without a better validation loss
    min_epochs: int = 20
    # On relative error: "huber" (quadratic up to huber_delta, then linear: robust to a timing
    # outlier from a load spike) or "mse".
    loss: str = "huber"
    huber_delta: float = 0.05

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if self.loss not in ("mse", "huber"):
            raise ValueError("loss must be 'mse' or 'huber'")
        if self.members < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError("members and hidden sizes must be positive")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MLPConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "hidden" in known:
            known["hidden"] = tuple(int(h) for h in known["hidden"])
        return cls(**known)


class LatencyPredictor(nn.Module):
    """Encoding tensor [..., D] -> latency in ms [...]; differentiable, works on relaxed encodings.

    `header` (a dict) holds a saved predictor's metadata (space, fingerprint, metrics).
    """

    def __init__(self, features: FeatureLayout, cfg: MLPConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MLPConfig()
        self.features = features
        self.dim = features.encoding_dim
        k = self.cfg.members
        dims = [features.dim, *self.cfg.hidden, 1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(k, a, b)) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(k, b)) for b in dims[1:])
        self.skip = nn.Parameter(torch.zeros(k, features.dim, 1)) if self.cfg.linear_skip else None
        self.register_buffer("feature_matrix", torch.as_tensor(features.matrix()))
        self.register_buffer("x_mean", torch.zeros(features.dim))
        self.register_buffer("x_std", torch.ones(features.dim))
        self.register_buffer("y_mean", torch.ones(()))  # mean training latency, ms
        # Relaxed-encoding correction (predictor.relax.fit_relaxed_correction): relative
        # latency added per unit of each feature group's spread sum x(1-x), which is 0 on
        # every one-hot encoding, so discrete predictions never change. Zero = uncalibrated.
        self.register_buffer("relax_w", torch.zeros(features.dim))
        self.header: dict[str, Any] = {}
        self._act = ACTIVATIONS[self.cfg.activation]

    # -- the differentiable path ------------------------------------------------------------
    def featurise(self, encoding: torch.Tensor) -> torch.Tensor:
        """Standardised features [N, F] of encodings [..., D] (flattened)."""
        if encoding.shape[-1] != self.dim:
            raise ValueError(
                f"encoding has {encoding.shape[-1]} entries, the predictor expects {self.dim}"
            )
        x = encoding.reshape(-1, self.dim).to(self.feature_matrix)
        return (x @ self.feature_matrix - self.x_mean) / self.x_std

    def members_output(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's latency / mean latency: standardised features [K or 1, N, F] -> [K, N]."""
        k = self.cfg.members
        if x.dim() == 2 or x.shape[0] == 1:
            x = x.reshape(1, *x.shape[-2:]).expand(k, -1, -1)
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = self._act(h)
        if self.skip is not None:
            h = h + torch.bmm(x, self.skip)
        return h.squeeze(-1)

    def spread_features(self, encoding: torch.Tensor) -> torch.Tensor:
        """Per feature group, sum of x(1-x) over its entries [N, F]: 0 at a vertex of the
        simplex, largest at its centre; about the variance of the group's count under
        sampling, which is what separates E[f(draws)] from f(E[draws]) (Jensen)."""
        x = encoding.reshape(-1, self.dim).to(self.feature_matrix)
        return (x * (1.0 - x)) @ self.feature_matrix

    def relative(self, encoding: torch.Tensor) -> torch.Tensor:
        """Latency / y_mean before the positive floor [N]: the ensemble plus the relaxed term."""
        rel = self.members_output(self.featurise(encoding)).mean(0)
        if bool(self.relax_w.any()):
            rel = rel + self.spread_features(encoding) @ self.relax_w
        return rel

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        rel = self.relative(encoding)
        # A smooth floor keeps latency positive on odd (relaxed) inputs; identity above ~0.2x mean.
        ms = nn.functional.softplus(rel, beta=20.0) * self.y_mean
        return ms.reshape(encoding.shape[:-1])

    @property
    def device(self) -> torch.device:
        return self.feature_matrix.device

    @torch.no_grad()
    def predict_ms(self, X: np.ndarray) -> np.ndarray:
        """NumPy convenience for evaluation: [N, D] -> [N] ms (on the model's device, back on CPU)."""
        x = torch.as_tensor(np.asarray(X), dtype=torch.float32, device=self.device)
        return self(x).double().cpu().numpy()

    def set_normalisation(self, x_mean: np.ndarray, x_std: np.ndarray, y_mean: float) -> None:
        self.x_mean.copy_(torch.as_tensor(x_mean, dtype=torch.float32))
        self.x_std.copy_(torch.as_tensor(x_std, dtype=torch.float32))
        self.y_mean.fill_(float(y_mean))

    def normalisation_json(self) -> dict[str, Any]:
        return {
            "features": "standardised: (encoding @ feature_matrix - x_mean) / x_std",
            "x_mean": [round(float(v), 7) for v in self.x_mean],
            "x_std": [round(float(v), 7) for v in self.x_std],
            "target": "latency_ms / y_mean (fitted on squared relative error)",
            "y_mean": float(self.y_mean),
        }


@contextlib.contextmanager
def deterministic(seed: int, threads: int = 1, *, warn_only: bool = False) -> Iterator[None]:
    """Seed torch, make it deterministic and use `threads` threads; restored afterwards.
    `warn_only`: warn, not fail, where a kernel has no deterministic version (cuBLAS on a
    GPU without CUBLAS_WORKSPACE_CONFIG).

    One thread: these matrices are small, and on a busy 2-core host a second torch thread
    made training ~10x slower, not faster.
    """
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's generator comes back untouched
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


@dataclass
class TrainInfo:
    """What training did: per member its best epoch and validation loss; epochs run; wall time."""

    best_epochs: list[int] = field(default_factory=list)
    best_val: list[float] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "best_epochs": self.best_epochs,
            "best_val_rel_rmse": [round(math.sqrt(v), 5) for v in self.best_val],
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 2),
        }


def _init(model: LatencyPredictor, gen: torch.Generator) -> None:
    """PyTorch's default Linear scale, drawn from our generator; output layer starts at the mean."""
    with torch.no_grad():
        for w in model.weights:
            bound = 1.0 / math.sqrt(w.shape[1])
            w.uniform_(-bound, bound, generator=gen)
        for b in model.biases:
            b.zero_()
        model.biases[-1].fill_(1.0)
        if model.skip is not None:
            model.skip.zero_()


def train_mlp(
    X_train: np.ndarray,
    y_train_ms: np.ndarray,
    X_val: np.ndarray,
    y_val_ms: np.ndarray,
    features: FeatureLayout,
    cfg: MLPConfig | None = None,
    *,
    seed: int = 0,
    time_budget_s: float | None = None,
    on_epoch: Callable[[int], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[LatencyPredictor, TrainInfo]:
    """Fit the ensemble on squared relative error, with early stopping on the validation split.

    Members differ by initialisation and batch order; each keeps the weights of its best
    validation epoch, and training stops once no member has improved for `patience` epochs
    (or the wall-time budget is spent). Same seed, same result on CPU. `device`: where the
    epochs run (initialised and normalised on the CPU, so the same start anywhere); the
    model comes back on the CPU.
    """
    cfg = cfg or MLPConfig()
    dev = torch.device(device)
    t0 = time.perf_counter()
    info = TrainInfo()
    with deterministic(seed, warn_only=dev.type != "cpu"):
        gen = torch.Generator().manual_seed(seed)
        model = LatencyPredictor(features, cfg)
        m = model.feature_matrix
        f_tr = torch.as_tensor(np.asarray(X_train), dtype=torch.float32) @ m
        f_va = torch.as_tensor(np.asarray(X_val), dtype=torch.float32) @ m
        x_mean = f_tr.mean(0)
        x_std = f_tr.std(0, unbiased=False)
        x_std = torch.where(x_std < 1e-6, torch.ones_like(x_std), x_std)
        y_mean = float(np.mean(y_train_ms))
        model.set_normalisation(x_mean.numpy(), x_std.numpy(), y_mean)
        xs_tr = (f_tr - x_mean) / x_std
        xs_va = (f_va - x_mean) / x_std
        t_tr = torch.as_tensor(np.asarray(y_train_ms) / y_mean, dtype=torch.float32)
        t_va = torch.as_tensor(np.asarray(y_val_ms) / y_mean, dtype=torch.float32)
        _init(model, gen)
        if dev.type != "cpu":
            model.to(dev)
            xs_tr, xs_va, t_tr, t_va = (t.to(dev) for t in (xs_tr, xs_va, t_tr, t_va))

        body = [*model.weights, *model.biases]
        groups: list[dict[str, Any]] = [{"params": body, "weight_decay": cfg.weight_decay}]
        if model.skip is not None:
            groups.append({"params": [model.skip], "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.max_epochs))

        def rel_loss(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            r = (out - t) / t
            if cfg.loss == "huber":
                # Twice the Huber loss, so it equals r**2 below the threshold: a timing outlier
                # (a load spike on a shared host) pulls linearly, not quadratically.
                return 2.0 * nn.functional.huber_loss(
                    r, torch.zeros_like(r), reduction="none", delta=cfg.huber_delta
                )
            return r**2

        k = cfg.members
        n = xs_tr.shape[0]
        bs = max(8, min(cfg.batch_size, n))
        best = torch.full((k,), math.inf, device=dev)
        best_epoch = torch.zeros(k, dtype=torch.long, device=dev)
        best_state = [p.detach().clone() for p in model.parameters()]
        since = torch.zeros(k, dtype=torch.long, device=dev)
        epoch = 0
        for epoch in range(cfg.max_epochs):
            perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(k)]).to(dev)
            for i in range(0, n, bs):
                idx = perms[:, i : i + bs]
                if idx.shape[1] < 2:
                    continue
                out = model.members_output(xs_tr[idx])
                tb = t_tr[idx]
                loss = rel_loss(out, tb).mean(1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            with torch.no_grad():
                val = rel_loss(model.members_output(xs_va), t_va).mean(1)
                better = val < best * (1 - 1e-4)
                if bool(better.any()):
                    for p, s in zip(model.parameters(), best_state, strict=True):
                        s[better] = p.detach()[better]
                    best = torch.where(better, val, best)
                    best_epoch = torch.where(better, torch.full_like(best_epoch, epoch), best_epoch)
                since = torch.where(better, torch.zeros_like(since), since + 1)
            if on_epoch is not None:  # progress (epochs done)
                on_epoch(epoch + 1)
            if epoch + 1 >= cfg.min_epochs and bool((since >= cfg.patience).all()):
                break
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
        with torch.no_grad():
            for p, s in zip(model.parameters(), best_state, strict=True):
                p.copy_(s)
    model.to("cpu").eval()
    info.best_epochs = [int(e) + 1 for e in best_epoch]
    info.best_val = [float(v) for v in best]
    info.epochs_run = epoch + 1
    info.seconds = time.perf_counter() - t0
    return model, info
