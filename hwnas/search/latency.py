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

The relaxed prediction and the derived (discrete) architecture's differ by a few per cent, so
the shipped architecture is finished by `repair_to_budget`: a discrete, predictor-guided
search over single choices (one node's inputs and ops, one stage's depth, one connection
pair) that lands the predicted latency in [B (1 - tol), B (1 + tol)] at the least loss of
architecture score, and logs each change. It keeps the collapse guard's cap of
parameter-free edges per cell unless the band cannot be reached within it (then it lifts
the cap and says so).

The architecture score is the sum over choices of the chosen option's log-probability under
the search's logits; costs are counted as *regret*, the gap to the best option of the same
choice, so a deeper stage is not charged for the extra connections it has to choose.
"""

from __future__ import annotations

import abc
import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hwnas.encoding import ArchParameters, encode, encoding_layout
from hwnas.latency import check_predictor_for_search
from hwnas.space import (
    CELL_OPS,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    STAGE_OPS,
    Architecture,
    SpaceConfig,
    Stage,
    sample_architecture,
)
from targets.basics import UserError

N_CELLS = 2 * NUM_STAGES - 1  # normal cells of stages 0..2, then reductions 0..1
PARAM_FREE_OPS = frozenset(
    {"skip_connect", "max_pool_3x3", "avg_pool_3x3"}
)  # as hwnas.search.derive


def _cell_name(c: int) -> str:
    return f"stage{c}" if c < NUM_STAGES else f"reduction{c - NUM_STAGES}"


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


# -- the discrete space as blocks of the encoding --------------------------------------------------
Pair = tuple[tuple[int, int], tuple[int, int]]  # ((op index, input), (op index, input))


@dataclass
class _State:
    """A discrete architecture as indices; `slots` holds a choice for every slot up to the
    maximum depth (those past the stage's depth wait for a deeper stage)."""

    cells: list[list[Pair]]
    depth: list[int]  # index into depth_choices
    slots: list[list[Pair]]

    def copy(self) -> _State:
        return _State(
            [list(c) for c in self.cells], list(self.depth), [list(s) for s in self.slots]
        )


class _Blocks:
    """Where each choice lives in the encoding, its options, and batched candidate encodings."""

    def __init__(self, space: SpaceConfig) -> None:
        self.space = space
        pos = {name: i for i, name in enumerate(encoding_layout(space))}
        self.dim = len(pos)
        self.cell_idx = [
            [
                np.array(
                    [
                        [pos[f"{_cell_name(c)}.cell.node{i}.in{j}.{op}"] for op in CELL_OPS]
                        for j in range(NUM_CELL_INPUTS + i)
                    ]
                )
                for i in range(space.nodes)
            ]
            for c in range(N_CELLS)
        ]
        self.depth_idx = [
            np.array([pos[f"stage{s}.depth.{d}"] for d in space.depth_choices])
            for s in range(NUM_STAGES)
        ]
        self.slot_idx = [
            [
                np.array(
                    [
                        [pos[f"stage{s}.conn{k}.in{j}.{op}"] for op in STAGE_OPS]
                        for j in space.window_of(k)
                    ]
                )
                for k in range(space.max_depth)
            ]
            for s in range(NUM_STAGES)
        ]
        self.node_options = [
            [
                ((o1, j1), (o2, j2))
                for j1, j2 in itertools.combinations(range(NUM_CELL_INPUTS + i), 2)
                for o1 in range(len(CELL_OPS))
                for o2 in range(len(CELL_OPS))
            ]
            for i in range(space.nodes)
        ]
        self.slot_options = [
            [
                ((o1, j1), (o2, j2))
                for j1, j2 in itertools.combinations(space.window_of(k), 2)
                for o1 in range(len(STAGE_OPS))
                for o2 in range(len(STAGE_OPS))
            ]
            for k in range(space.max_depth)
        ]
        self._pos_cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    # state <-> architecture
    def from_arch(self, arch: Architecture, fill: list[list[Pair]] | None = None) -> _State:
        cells = [self._genotype(st.cell) for st in arch.stages] + [
            self._genotype(g) for g in arch.reductions
        ]
        depth = [self.space.depth_choices.index(st.depth) for st in arch.stages]
        slots = []
        for s, st in enumerate(arch.stages):
            row = [self._pair(c, STAGE_OPS) for c in st.connections]
            for k in range(len(row), self.space.max_depth):
                row.append(fill[s][k] if fill else self.slot_options[k][0])
            slots.append(row)
        return _State(cells, depth, slots)

    @staticmethod
    def _pair(pair: Any, ops: tuple[str, ...]) -> Pair:
        (a, i), (b, j) = sorted(pair, key=lambda e: e[1])
        return ((ops.index(a), i), (ops.index(b), j))

    def _genotype(self, g: Any) -> list[Pair]:
        return [self._pair(node, CELL_OPS) for node in g]

    def to_arch(self, st: _State, space: SpaceConfig) -> Architecture:
        def geno(nodes: list[Pair]) -> Any:
            return tuple(
                tuple((CELL_OPS[o], j) for o, j in sorted(node, key=lambda e: e[1]))
                for node in nodes
            )

        stages = []
        for s in range(NUM_STAGES):
            d = self.space.depth_choices[st.depth[s]]
            conns = tuple(
                tuple((STAGE_OPS[o], j) for o, j in sorted(st.slots[s][k], key=lambda e: e[1]))
                for k in range(d)
            )
            stages.append(Stage(cell=geno(st.cells[s]), depth=d, connections=conns))  # type: ignore[arg-type]
        reductions = tuple(geno(st.cells[NUM_STAGES + r]) for r in range(NUM_STAGES - 1))
        return Architecture(space=space, stages=tuple(stages), reductions=reductions)

    def encode(self, st: _State) -> np.ndarray:
        x = np.zeros(self.dim, dtype=np.float32)
        for c in range(N_CELLS):
            for i, pair in enumerate(st.cells[c]):
                for o, j in pair:
                    x[self.cell_idx[c][i][j, o]] = 1.0
        for s in range(NUM_STAGES):
            x[self.depth_idx[s][st.depth[s]]] = 1.0
            for k in range(self.space.depth_choices[st.depth[s]]):
                start = self.space.window_of(k).start
                for o, j in st.slots[s][k]:
                    x[self.slot_idx[s][k][j - start, o]] = 1.0
        return x

    # choices ("decisions") and the encodings of all their options given the rest of a state
    def decisions(self, st: _State) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = [
            ("node", c, i) for c in range(N_CELLS) for i in range(self.space.nodes)
        ]
        out += [("depth", s) for s in range(NUM_STAGES)]
        out += [
            ("slot", s, k)
            for s in range(NUM_STAGES)
            for k in range(self.space.depth_choices[st.depth[s]])
        ]
        return out

    def options(self, dec: tuple[Any, ...]) -> list[Any]:
        if dec[0] == "node":
            return self.node_options[dec[2]]
        if dec[0] == "depth":
            return list(range(len(self.space.depth_choices)))
        return self.slot_options[dec[2]]

    def current(self, st: _State, dec: tuple[Any, ...]) -> Any:
        if dec[0] == "node":
            return st.cells[dec[1]][dec[2]]
        if dec[0] == "depth":
            return st.depth[dec[1]]
        return st.slots[dec[1]][dec[2]]

    def apply(self, st: _State, dec: tuple[Any, ...], option: Any) -> _State:
        new = st.copy()
        if dec[0] == "node":
            new.cells[dec[1]][dec[2]] = option
        elif dec[0] == "depth":
            new.depth[dec[1]] = option
        else:
            new.slots[dec[1]][dec[2]] = option
        return new

    def _positions(self, dec: tuple[Any, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The choice's block of encoding indices and, per option, its two entries [2, n]."""
        key = dec[:3]
        if key not in self._pos_cache:
            if dec[0] == "node":
                block, start = self.cell_idx[dec[1]][dec[2]], 0
            else:
                block, start = self.slot_idx[dec[1]][dec[2]], self.space.window_of(dec[2]).start
            pos = np.array(
                [
                    [block[opt[e][1] - start, opt[e][0]] for opt in self.options(dec)]
                    for e in range(2)
                ]
            )
            self._pos_cache[key] = (block, pos)
        return self._pos_cache[key]

    def candidates(self, st: _State, base: np.ndarray, dec: tuple[Any, ...]) -> np.ndarray:
        """Encodings [n_options, D]: `st` with this one choice set to each of its options."""
        opts = self.options(dec)
        n = len(opts)
        X = np.repeat(base[None, :], n, axis=0)
        rows = np.arange(n)
        if dec[0] in ("node", "slot"):
            block, pos = self._positions(dec)
            X[:, block.ravel()] = 0.0
            X[rows, pos[0]] = 1.0
            X[rows, pos[1]] = 1.0
        else:
            s = dec[1]
            X[:, self.depth_idx[s]] = 0.0
            X[rows, self.depth_idx[s]] = 1.0
            for k in range(self.space.max_depth):
                block = self.slot_idx[s][k]
                start = self.space.window_of(k).start
                X[:, block.ravel()] = 0.0
                for d_i, d in enumerate(self.space.depth_choices):
                    if k < d:
                        for o, j in st.slots[s][k]:
                            X[d_i, block[j - start, o]] = 1.0
        return X


def _coordinate_descent(
    term: LatencyTerm, blocks: _Blocks, st: _State, sign: float, max_sweeps: int
) -> tuple[_State, float]:
    """Block coordinate descent on sign * latency: each choice in turn set to its best
    option given the others (all options of a choice evaluated in one batch), until a
    sweep changes nothing."""
    x = blocks.encode(st)
    lat = float(term.batch_ms(x[None])[0])
    for _ in range(max_sweeps):
        changed = False
        # inactive slots too: a depth increase then finds them already good
        decs = blocks.decisions(st) + [
            ("slot", s, k)
            for s in range(NUM_STAGES)
            for k in range(blocks.space.depth_choices[st.depth[s]], blocks.space.max_depth)
        ]
        for dec in decs:
            if dec[0] == "slot" and dec[2] >= blocks.space.depth_choices[st.depth[dec[1]]]:
                deep = st.copy()
                deep.depth[dec[1]] = blocks.space.depth_choices.index(blocks.space.max_depth)
                X = blocks.candidates(deep, blocks.encode(deep), dec)
                best = int(np.argmin(sign * term.batch_ms(X)))
                st = blocks.apply(st, dec, blocks.options(dec)[best])
                continue
            X = blocks.candidates(st, x, dec)
            ms = term.batch_ms(X)
            best = int(np.argmin(sign * ms))
            if sign * ms[best] < sign * lat - 1e-9:
                st = blocks.apply(st, dec, blocks.options(dec)[best])
                x, lat, changed = X[best].copy(), float(ms[best]), True
        if not changed:
            break
    return st, lat


def reachable_range(
    term: LatencyTerm,
    space: SpaceConfig | None = None,
    *,
    restarts: int = 2,
    seed: int = 0,
    max_sweeps: int = 10,
) -> tuple[float, float]:
    """(fastest, slowest) predicted latency (ms) over the discrete architectures of `space`.

    Block coordinate descent with the predictor: one start per depth choice (every stage at
    that depth) plus `restarts` seeded random architectures, each improved one choice at a
    time (a node's two inputs and ops, a stage's depth, a connection pair: all options of a
    choice scored in one batch) until no single change helps. Exact per choice, a local
    optimum overall: the true extremes can only lie further out (tests check that no random
    architecture beats it). Costs ~1 s on the tiny/digits spaces.
    """
    space = space or term.deploy_space
    term.check_space(space)
    blocks = _Blocks(space)
    rng = random.Random(f"hwnas-reachable:{seed}")
    starts: list[_State] = []
    for d_i in range(len(space.depth_choices)):
        st = blocks.from_arch(sample_architecture(space, rng))
        st.depth = [d_i] * NUM_STAGES
        starts.append(st)
    starts += [blocks.from_arch(sample_architecture(space, rng)) for _ in range(restarts)]
    lo = min(_coordinate_descent(term, blocks, st.copy(), +1.0, max_sweeps)[1] for st in starts)
    hi = max(_coordinate_descent(term, blocks, st.copy(), -1.0, max_sweeps)[1] for st in starts)
    return lo, hi


# -- scores and repair ----------------------------------------------------------------------------
class _Scores:
    """Regret of every option of every choice under the search's logits (>= 0; 0 = what
    `ArchParameters.derive` picks): the cost of moving a choice away from the search's pick."""

    def __init__(self, alpha: ArchParameters, blocks: _Blocks) -> None:
        self.blocks = blocks
        with torch.no_grad():
            self.node = [
                [
                    self._pair_scores(
                        alpha.alpha[c * blocks.space.nodes + i],
                        alpha.beta[c * blocks.space.nodes + i],
                        0,
                    )
                    for i in range(blocks.space.nodes)
                ]
                for c in range(N_CELLS)
            ]
            self.depth = [
                (lambda lp: (lp.max() - lp).numpy())(torch.log_softmax(alpha.depth[s].double(), -1))
                for s in range(NUM_STAGES)
            ]
            self.slot = [
                [
                    self._pair_scores(
                        alpha.conn_alpha[s * blocks.space.max_depth + k],
                        alpha.conn_beta[s * blocks.space.max_depth + k],
                        blocks.space.window_of(k).start,
                    )
                    for k in range(blocks.space.max_depth)
                ]
                for s in range(NUM_STAGES)
            ]

    @staticmethod
    def _pair_scores(a: torch.Tensor, b: torch.Tensor, start: int) -> dict[Pair, float]:
        """Regret of each (two inputs, their ops) option, in derive()'s order of choice: the
        inputs' log-probabilities against the top two, plus each op's against the best op
        on its input. So the derived pick costs exactly 0 and every other option costs > 0."""
        lp_a = torch.log_softmax(a.double(), -1).numpy()
        lp_b = torch.log_softmax(b.double(), -1).numpy()
        n, n_ops = lp_a.shape
        r_op = lp_a.max(-1, keepdims=True) - lp_a  # [inputs, ops]
        top2 = float(np.sort(lp_b)[-2:].sum()) if n > 2 else float(lp_b.sum())
        return {
            ((o1, j1 + start), (o2, j2 + start)): float(
                top2 - lp_b[j1] - lp_b[j2] + r_op[j1, o1] + r_op[j2, o2]
            )
            for j1, j2 in itertools.combinations(range(n), 2)
            for o1 in range(n_ops)
            for o2 in range(n_ops)
        }

    def option_cost(self, dec: tuple[Any, ...], option: Any) -> float:
        if dec[0] == "node":
            return self.node[dec[1]][dec[2]][option]
        if dec[0] == "depth":
            return float(self.depth[dec[1]][option])
        return self.slot[dec[1]][dec[2]][option]

    def total(self, st: _State) -> float:
        b = self.blocks
        cost = sum(
            self.node[c][i][st.cells[c][i]] for c in range(N_CELLS) for i in range(b.space.nodes)
        )
        for s in range(NUM_STAGES):
            cost += float(self.depth[s][st.depth[s]])
            cost += sum(
                self.slot[s][k][st.slots[s][k]] for k in range(b.space.depth_choices[st.depth[s]])
            )
        return cost

    def best_slots(self) -> list[list[Pair]]:
        return [[min(d, key=d.get) for d in row] for row in self.slot]  # type: ignore[arg-type]


def _describe_change(dec: tuple[Any, ...], old: Any, new: Any, space: SpaceConfig) -> str:
    def pair(p: Pair, ops: tuple[str, ...]) -> str:
        return "+".join(f"{ops[o]}<-{j}" for o, j in sorted(p, key=lambda e: e[1]))

    if dec[0] == "node":
        return f"{_cell_name(dec[1])} cell node {dec[2]}: {pair(old, CELL_OPS)} -> {pair(new, CELL_OPS)}"
    if dec[0] == "depth":
        return f"stage{dec[1]} depth: {space.depth_choices[old]} -> {space.depth_choices[new]}"
    return (
        f"stage{dec[1]} cell {dec[2]} connections: {pair(old, STAGE_OPS)} -> {pair(new, STAGE_OPS)}"
    )


def score_cost(arch: Architecture, alpha: ArchParameters) -> float:
    """Architecture-score regret of `arch` under `alpha` (0 = every choice the most likely)."""
    blocks = _Blocks(arch.space)
    scores = _Scores(alpha, blocks)
    return scores.total(blocks.from_arch(arch, fill=scores.best_slots()))


def repair_to_budget(
    arch: Architecture,
    alpha: ArchParameters,
    term: LatencyTerm,
    budget_ms: float,
    tol: float = 0.05,
    *,
    max_param_free: int | str | None = "keep",
    max_moves: int = 200,
) -> tuple[Architecture, list[str]]:
    """Move `arch` (usually `alpha.derive()`) into [budget (1 - tol), budget (1 + tol)] of
    predicted latency, never above budget (1 + tol), at the least regret in architecture score.

    Greedy over single choices, re-scored with the predictor after each move: when some
    single change lands in the band, the cheapest such change; otherwise the change with the
    most latency moved towards the band per unit of score lost, without jumping past it
    (jumping below it only when nothing else moves down; never jumping above it). Returns the
    architecture (same space as `arch`) and one log line per change.

    Cheaper often means parameter-free (skip, pooling): the collapse the search guards
    against. `max_param_free` caps parameter-free edges per cell for the repair's changes:
    "keep" (default) = the most any cell of `arch` has (so the collapse guard's cap still
    holds after the repair), an int = that cap, None = no cap.
    """
    term.check_space(arch.space)
    blocks = _Blocks(arch.space)
    scores = _Scores(alpha, blocks)
    st = blocks.from_arch(arch, fill=scores.best_slots())
    free_ops = np.array([op in PARAM_FREE_OPS for op in CELL_OPS])

    def free_edges(pair: Pair) -> int:
        return int(free_ops[pair[0][0]]) + int(free_ops[pair[1][0]])

    cap: int | None
    if max_param_free == "keep":
        cap = max(sum(free_edges(p) for p in cell) for cell in st.cells)
    else:
        cap = None if max_param_free is None else int(max_param_free)
    option_free = [np.array([free_edges(o) for o in opts]) for opts in blocks.node_options]
    # per cell: the cap, or the count it starts with if above (a repair never adds to it)
    limits = [
        None if cap is None else max(cap, sum(free_edges(p) for p in cell)) for cell in st.cells
    ]

    def within_cap(state: _State) -> bool:
        return all(
            lim is None or sum(free_edges(p) for p in cell) <= lim
            for lim, cell in zip(limits, state.cells, strict=True)
        )

    lo_b, hi_b = budget_ms * (1 - tol), budget_ms * (1 + tol)
    x = blocks.encode(st)
    lat = float(term.batch_ms(x[None])[0])
    cost = scores.total(st)
    log = [
        f"derived architecture: predicted {lat:.4g} ms, band {lo_b:.4g}-{hi_b:.4g} ms (budget {budget_ms:.4g} ms)"
    ]
    if lo_b <= lat <= hi_b:
        log.append("already within the band: no change")
        return arch, log
    seen = {x.tobytes()}
    best_under: tuple[float, float, _State] | None = (
        None  # (latency, cost, state) at or below the band's top
    )
    for _ in range(max_moves):
        if lo_b <= lat <= hi_b:
            break
        if lat <= hi_b and (best_under is None or lat > best_under[0]):
            best_under = (lat, cost, st.copy())
        moves = []  # (new latency, d cost, decision, option, encoding)
        for dec in blocks.decisions(st):
            X = blocks.candidates(st, x, dec)
            ms = term.batch_ms(X)
            cur = scores.option_cost(dec, blocks.current(st, dec))
            allowed = None
            if dec[0] == "node" and limits[dec[1]] is not None:
                c, i = dec[1], dec[2]
                others = sum(free_edges(p) for n, p in enumerate(st.cells[c]) if n != i)
                allowed = option_free[i] + others <= limits[c]
            for o_i, opt in enumerate(blocks.options(dec)):
                if (allowed is not None and not allowed[o_i]) or X[o_i].tobytes() in seen:
                    continue
                d_cost = scores.option_cost(dec, opt) - cur
                if dec[0] == "depth":  # the slots that appear or vanish with the depth
                    s = dec[1]
                    old_d, new_d = (
                        blocks.space.depth_choices[st.depth[s]],
                        blocks.space.depth_choices[opt],
                    )
                    sign = 1.0 if new_d > old_d else -1.0
                    d_cost += sign * sum(
                        scores.slot[s][k][st.slots[s][k]]
                        for k in range(min(old_d, new_d), max(old_d, new_d))
                    )
                moves.append((float(ms[o_i]), d_cost, dec, opt, o_i, X))
        over = lat > hi_b
        eps = 1e-4 * budget_ms  # a move must shift the latency, not just the score
        in_band = [m for m in moves if lo_b <= m[0] <= hi_b]
        pick = None
        if in_band:
            pick = min(in_band, key=lambda m: (m[1], abs(m[0] - budget_ms)))
        else:
            if over:
                toward = [m for m in moves if lo_b < m[0] < lat - eps]
            else:
                toward = [m for m in moves if lat + eps < m[0] < lo_b]
            if toward:
                here = lat
                pick = max(
                    toward, key=lambda m: (abs(here - m[0]) / max(m[1], 1e-9), abs(here - m[0]))
                )
            elif over and any(lim is not None for lim in limits):
                limits = [None] * len(limits)
                log.append(
                    f"nothing within the cap of {cap} parameter-free edges per cell goes lower than "
                    f"{lat:.4g} ms: cap lifted"
                )
                continue
            elif over:  # every downward move jumps below the band: the smallest jump
                below = [m for m in moves if m[0] < lo_b]
                if below:
                    pick = max(below, key=lambda m: (m[0], -m[1]))
        if pick is None:
            break
        new_lat, d_cost, dec, opt, o_i, X = pick
        log.append(
            f"{_describe_change(dec, blocks.current(st, dec), opt, blocks.space)}: "
            f"{lat:.4g} -> {new_lat:.4g} ms, score regret {d_cost:+.3g}"
        )
        st = blocks.apply(st, dec, opt)
        x, lat, cost = X[o_i].copy(), new_lat, cost + d_cost
        seen.add(x.tobytes())
    if lo_b <= lat <= hi_b:  # undo changes the band does not need, the most costly first
        original = blocks.from_arch(arch, fill=scores.best_slots())
        while True:
            undo = []
            for dec in blocks.decisions(st):
                old = blocks.current(original, dec)
                if old == blocks.current(st, dec):
                    continue
                trial = blocks.apply(st, dec, old)
                t_cost = scores.total(trial)
                if t_cost < cost - 1e-12 and within_cap(trial):
                    t_x = blocks.encode(trial)
                    t_lat = float(term.batch_ms(t_x[None])[0])
                    if lo_b <= t_lat <= hi_b:
                        undo.append((t_cost, t_lat, dec, trial, t_x))
            if not undo:
                break
            t_cost, t_lat, dec, trial, t_x = min(undo, key=lambda u: u[0])
            log.append(
                f"undo {_describe_change(dec, blocks.current(st, dec), blocks.current(original, dec), blocks.space)}: "
                f"{lat:.4g} -> {t_lat:.4g} ms, score regret {t_cost - cost:+.3g}"
            )
            st, lat, cost, x = trial, t_lat, t_cost, t_x
    if not lo_b <= lat <= hi_b:
        if lat > hi_b or (best_under is not None and best_under[0] > lat):
            if best_under is not None:
                lat, cost, st = best_under
                log.append(
                    f"no change lands in the band: kept the closest architecture at or below it, {lat:.4g} ms"
                )
            else:
                st, lat = _coordinate_descent(term, blocks, st, +1.0, 10)
                log.append(
                    f"could not reach the band within the cap of parameter-free edges: fastest nearby "
                    f"architecture without the cap {lat:.4g} ms"
                )
        else:
            log.append(f"no change lands in the band: {lat:.4g} ms is below it")
    log.append(f"repaired architecture: predicted {lat:.4g} ms, score regret {cost:.3g}")
    return blocks.to_arch(st, arch.space), log
