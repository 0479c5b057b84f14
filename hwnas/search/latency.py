"""The latency term of the search: the fitted predictor on the relaxed architecture.

`LatencyTerm` wraps a predictor (fitted on the DEPLOY space: that latency is what ships) and
answers for any `ArchParameters` whose encoding has the deploy space's layout. The layout
depends on the nodes, depth choices and window, not on the channel width, so a narrower
proxy supernet (`--search-channels C`) is scored at deploy width.

Two penalties (small objects, as NNI's latency losses), both fed the differentiable
prediction `term.predicted_ms(alpha)`:

* `WeightedLatency(term, L)`: loss = L * predicted / latency_0, with latency_0 the prediction
  at the centre of the space (uniform logits). L weighs *relative* latency, so L = 0.5 means
  "half a unit of cross-entropy per latency_0", on any target and any space.
* `BudgetLatency(term, B)`: loss = lambda * predicted / B, with lambda adapted by dual ascent
  on the relaxed prediction, lambda <- clip(lambda + step * (relaxed / B - 1), 0, max_weight):
  it rises while the relaxed architecture is over budget and falls while under. A budget the
  predictor cannot reach in the space is refused before any training (`reachable_range`).

The discrete finish of a budget search is `hwnas.search.repair`.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
import torch

from hwnas.search.discrete import reachable_range
from hwnas.search.predictor_check import check_predictor_for_search
from hwnas.space import (
    Architecture,
    SpaceConfig,
)
from hwnas.space.encoding import ArchParameters, encode, encoding_layout
from targets.basics import UserError


class LatencyTerm:
    """The predictor's latency of the deploy architecture, relaxed (differentiable) or derived."""

    def __init__(self, predictor: torch.nn.Module, deploy_space: SpaceConfig) -> None:
        """`predictor` from `predictor.load_predictor`; `deploy_space` the space whose
        network ships (the one the predictor was fitted on: refused otherwise)."""
        self.predictor = predictor
        self.deploy_space = deploy_space
        fitted_on = check_predictor_for_search(predictor, deploy_space)
        if fitted_on.key != deploy_space.key:
            raise UserError(
                f"the latency predictor was fitted on space '{fitted_on.name}' (channels "
                f"{fitted_on.channels}), not on the deploy space '{deploy_space.name}' (channels "
                f"{deploy_space.channels}); deploy the space it was fitted on, or fit one on profiles "
                f"of '{deploy_space.name}' (`hwnas profile --space ...` then `hwnas predictor fit`)"
            )
        self.layout = encoding_layout(deploy_space)
        self.target_name = str(predictor.header.get("target_name", "?"))
        self._checked: set[str] = {deploy_space.key}
        with torch.no_grad():
            centre = ArchParameters(deploy_space, init_scale=0.0)
            self.latency0_ms = float(self._predict(centre.encode()))

    def _predict(self, encoding: torch.Tensor) -> torch.Tensor:
        device = self.predictor.feature_matrix.device
        return self.predictor(encoding.to(device)).to(encoding.device)

    def check_space(self, space: SpaceConfig) -> None:
        """UserError unless `space` is the deploy space or a narrower/wider copy of it (only
        `channels` may differ: the encoding, hence the prediction, does not depend on width)."""
        if space.key in self._checked:
            return
        check_predictor_for_search(self.predictor, space)
        self._checked.add(space.key)

    def predicted_ms(self, alpha: ArchParameters) -> torch.Tensor:
        """Predicted latency (ms, 0-d tensor) of the relaxed architecture: differentiable in
        every logit of `alpha`."""
        self.check_space(alpha.space)
        return self._predict(alpha.encode()).reshape(())

    def derived_ms(self, arch: Architecture) -> float:
        """Predicted latency (ms) of a discrete architecture, at deploy width."""
        self.check_space(arch.space)
        with torch.no_grad():
            return float(self._predict(torch.from_numpy(encode(arch))))

    @torch.no_grad()
    def batch_ms(self, X: np.ndarray) -> np.ndarray:
        """Predictions for encodings [N, D] (float64 ms)."""
        return self._predict(torch.as_tensor(X, dtype=torch.float32)).double().numpy().reshape(-1)


# -- penalties -------------------------------------------------------------------------------------
class LatencyPenalty(abc.ABC):
    """What the architecture step adds to its loss, and how that weight evolves."""

    def __init__(self, term: LatencyTerm) -> None:
        self.term = term

    @abc.abstractmethod
    def loss(self, predicted_ms: torch.Tensor) -> torch.Tensor:
        """The latency part of the architecture loss."""

    @property
    @abc.abstractmethod
    def weight(self) -> float:
        """The current weight (lambda) on the normalised latency."""

    @property
    @abc.abstractmethod
    def price_per_ms(self) -> float:
        """What one ms of predicted latency adds to the loss now (the derive's exchange rate
        between latency and architecture score: `derive(..., price=)`)."""

    def update(self, relaxed_ms: float, derived_ms: float) -> None:  # noqa: B027 (optional hook)
        """Called after each architecture step with the latest predictions."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain JSON for the run's config.json."""


class WeightedLatency(LatencyPenalty):
    """loss = weight * predicted / latency_0: `weight` prices relative latency (latency_0 =
    the prediction at uniform logits), so it means the same on every target and space."""

    def __init__(self, term: LatencyTerm, weight: float) -> None:
        super().__init__(term)
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"--latency-weight must be a finite number >= 0, got {weight}")
        self._weight = float(weight)

    def loss(self, predicted_ms: torch.Tensor) -> torch.Tensor:
        return self._weight * predicted_ms / self.term.latency0_ms

    @property
    def weight(self) -> float:
        return self._weight

    @property
    def price_per_ms(self) -> float:
        return self._weight / self.term.latency0_ms

    def state_dict(self) -> dict[str, Any]:
        return {"mode": "weight", "weight": self._weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != "weight":
            raise ValueError(f"not a WeightedLatency state: {state!r}")
        self._weight = float(state["weight"])

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "weight",
            "latency_weight": self._weight,
            "latency0_ms": self.term.latency0_ms,
            "loss": "latency_weight * predicted_ms / latency0_ms (latency0: uniform logits)",
        }


class BudgetLatency(LatencyPenalty):
    """A latency budget in ms: loss = lambda * predicted / budget, lambda by dual ascent on
    the relaxed prediction (one `update` per architecture step)."""

    def __init__(
        self,
        term: LatencyTerm,
        budget_ms: float,
        *,
        tol: float = 0.05,
        step: float = 0.1,
        init_weight: float = 0.0,
        max_weight: float = 100.0,
        reachable: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(term)
        if not math.isfinite(budget_ms) or budget_ms <= 0:
            raise UserError(f"--latency-budget must be a positive number of ms, got {budget_ms}")
        self.budget_ms = float(budget_ms)
        self.tol = float(tol)
        self.step = float(step)
        self.init_weight = float(init_weight)
        self.max_weight = float(max_weight)
        self.reachable = reachable or reachable_range(term, seed=seed)
        lo, hi = self.reachable
        if self.budget_ms * (1 + self.tol) < lo or self.budget_ms * (1 - self.tol) > hi:
            raise UserError(
                f"latency budget {self.budget_ms:.4g} ms is out of reach: in space "
                f"'{term.deploy_space.name}' the predictor for target '{term.target_name}' gives "
                f"{lo:.4g}-{hi:.4g} ms (fastest to slowest architecture found); choose a budget in that range"
            )
        self._weight = self.init_weight
        self.updates = 0
        self.last: tuple[float, float] | None = None

    def loss(self, predicted_ms: torch.Tensor) -> torch.Tensor:
        return self._weight * predicted_ms / self.budget_ms

    @property
    def weight(self) -> float:
        return self._weight

    @property
    def price_per_ms(self) -> float:
        return self._weight / self.budget_ms

    def update(self, relaxed_ms: float, derived_ms: float) -> None:
        """Dual ascent: lambda grows while the relaxed prediction is over budget, shrinks under."""
        excess = float(relaxed_ms) / self.budget_ms - 1.0
        self._weight = min(self.max_weight, max(0.0, self._weight + self.step * excess))
        self.updates += 1
        self.last = (float(relaxed_ms), float(derived_ms))

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": "budget",
            "budget_ms": self.budget_ms,
            "weight": self._weight,
            "updates": self.updates,
            "last": list(self.last) if self.last else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != "budget" or float(state["budget_ms"]) != self.budget_ms:
            raise ValueError(f"not the state of a {self.budget_ms} ms budget: {state!r}")
        self._weight = float(state["weight"])
        self.updates = int(state["updates"])
        self.last = tuple(state["last"]) if state.get("last") else None  # type: ignore[assignment]

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "budget",
            "latency_budget_ms": self.budget_ms,
            "tolerance": self.tol,
            "dual_step": self.step,
            "init_weight": self.init_weight,
            "max_weight": self.max_weight,
            "reachable_ms": list(self.reachable),
            "latency0_ms": self.term.latency0_ms,
            "loss": "lambda * predicted_ms / budget_ms; lambda += dual_step * (relaxed_ms / budget_ms - 1), "
            "clipped to [0, max_weight], after each architecture step",
        }
