"""The discrete space as blocks of the encoding: one choice at a time, priced by the predictor.

`_Blocks` maps every discrete choice (a node's inputs and ops, a stage's depth, a connection
pair) to its slice of the predictor's input, so a single change is priced without building
the architecture. `reachable_range` finds the fastest and slowest architectures the
predictor sees in a space (coordinate descent from samples): a budget outside it is refused.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

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
from hwnas.space.encoding import encoding_layout

if TYPE_CHECKING:
    from hwnas.search.latency import LatencyTerm

N_CELLS = 2 * NUM_STAGES - 1  # normal cells of stages 0..2, then reductions 0..1


def _cell_name(c: int) -> str:
    return f"stage{c}" if c < NUM_STAGES else f"reduction{c - NUM_STAGES}"


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
