"""Discrete repair of a budget search, and the predictor's reachable range in a space.

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

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hwnas.search.config import PARAM_FREE_OPS
from hwnas.space import (
    CELL_OPS,
    NUM_STAGES,
    STAGE_OPS,
    Architecture,
    SpaceConfig,
)
from hwnas.space.encoding import ArchParameters

if TYPE_CHECKING:
    from hwnas.search.latency import LatencyTerm

from hwnas.search.discrete import N_CELLS, Pair, _Blocks, _cell_name, _coordinate_descent, _State


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
                (lambda lp: (lp.max() - lp).cpu().numpy())(torch.log_softmax(alpha.depth[s].double(), -1))
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
        lp_a = torch.log_softmax(a.double(), -1).cpu().numpy()  # logits may live on a GPU
        lp_b = torch.log_softmax(b.double(), -1).cpu().numpy()
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


_FREE_OPS = np.array([op in PARAM_FREE_OPS for op in CELL_OPS])


def _free_edges(pair: Pair) -> int:
    return int(_FREE_OPS[pair[0][0]]) + int(_FREE_OPS[pair[1][0]])


def _option_free(blocks: _Blocks) -> list[np.ndarray]:
    """Per node: the parameter-free edges of each of its options (once per repair or pricing,
    not per move)."""
    return [np.array([_free_edges(o) for o in opts]) for opts in blocks.node_options]


def _free_limits(st: _State, cap: int | None) -> list[int | None]:
    """Per cell: the cap, or the count it starts with if above (a change never adds to it)."""
    return [None if cap is None else max(cap, sum(_free_edges(p) for p in cell)) for cell in st.cells]


#: How each line of `weigh_latency`'s log begins (summary.json keeps them apart from the guard's).
PRICED_PREFIX = "latency price"

Move = tuple[float, float, tuple[Any, ...], Any, int, np.ndarray]  # ms, d regret, decision, option, row, X


def _single_moves(
    term: LatencyTerm, blocks: _Blocks, scores: _Scores, st: _State, x: np.ndarray,
    limits: list[int | None], option_free: list[np.ndarray], seen: set[bytes],
    kinds: frozenset[str] = frozenset({"node", "depth", "slot"}),
) -> list[Move]:
    """Every single change of `st` (one node, one depth, one connection pair) within the
    per-cell limits of parameter-free edges and not in `seen`: its predicted latency and its
    change in score regret (one batch of predictions per choice). `option_free`: from
    `_option_free(blocks)`; `kinds`: which choices may change ("node": the cells' ops and
    inputs; "depth", "slot": the stage level)."""
    moves: list[Move] = []
    for dec in blocks.decisions(st):
        if dec[0] not in kinds:
            continue
        X = blocks.candidates(st, x, dec)
        ms = term.batch_ms(X)
        cur = scores.option_cost(dec, blocks.current(st, dec))
        allowed = None
        if dec[0] == "node" and limits[dec[1]] is not None:
            c, i = dec[1], dec[2]
            others = sum(_free_edges(p) for n, p in enumerate(st.cells[c]) if n != i)
            allowed = option_free[i] + others <= limits[c]
        for o_i, opt in enumerate(blocks.options(dec)):
            if (allowed is not None and not allowed[o_i]) or X[o_i].tobytes() in seen:
                continue
            d_cost = scores.option_cost(dec, opt) - cur
            if dec[0] == "depth":  # the slots that appear or vanish with the depth
                s = dec[1]
                old_d, new_d = blocks.space.depth_choices[st.depth[s]], blocks.space.depth_choices[opt]
                sign = 1.0 if new_d > old_d else -1.0
                d_cost += sign * sum(
                    scores.slot[s][k][st.slots[s][k]] for k in range(min(old_d, new_d), max(old_d, new_d))
                )
            moves.append((float(ms[o_i]), d_cost, dec, opt, o_i, X))
    return moves


def weigh_latency(
    arch: Architecture,
    alpha: ArchParameters,
    term: LatencyTerm,
    price: float,
    *,
    max_param_free: int | None = None,
    max_moves: int = 200,
    kinds: frozenset[str] = frozenset({"node", "depth", "slot"}),
) -> tuple[Architecture, list[str]]:
    """Single changes of `arch` that lower its predicted latency by more than they cost in
    architecture score at `price` (score per ms: the search's loss per ms of latency), the
    best first, until none does; never above `max_param_free` parameter-free edges in a cell
    (None: no cap) unless the cell already was; only choices of `kinds` change (a phase that
    holds the cells, or the stage level, leaves them as they are).

    Why: DARTS's argmax ignores latency, and where the search leaves near-ties (logits within
    a few per cent, as in cells the latency term has flattened) it picks among them at
    random, faster or slower. Every change lowers the prediction, so the result is never
    slower than `arch` and, at price 0, is `arch` itself. Returns it and one line per change.
    """
    if price <= 0:
        return arch, []
    term.check_space(arch.space)
    blocks = _Blocks(arch.space)
    scores = _Scores(alpha, blocks)
    st = blocks.from_arch(arch, fill=scores.best_slots())
    limits, option_free = _free_limits(st, max_param_free), _option_free(blocks)
    x = blocks.encode(st)
    lat = float(term.batch_ms(x[None])[0])
    log: list[str] = []
    for _ in range(max_moves):
        moves = [
            m for m in _single_moves(term, blocks, scores, st, x, limits, option_free, set(), kinds)
            if m[0] < lat - 1e-9 and price * (lat - m[0]) > m[1] + 1e-12
        ]
        if not moves:
            break
        new_lat, d_cost, dec, opt, o_i, X = max(moves, key=lambda m: price * (lat - m[0]) - m[1])
        log.append(
            f"{PRICED_PREFIX} {price:.4g}/ms: {_describe_change(dec, blocks.current(st, dec), opt, blocks.space)}: "
            f"{lat:.4g} -> {new_lat:.4g} ms, score regret {d_cost:+.3g}"
        )
        st = blocks.apply(st, dec, opt)
        x, lat = X[o_i].copy(), new_lat
    return (blocks.to_arch(st, arch.space), log) if log else (arch, log)


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
    cap: int | None
    if max_param_free == "keep":
        cap = max(sum(_free_edges(p) for p in cell) for cell in st.cells)
    else:
        cap = None if max_param_free is None else int(max_param_free)
    limits, option_free = _free_limits(st, cap), _option_free(blocks)

    def within_cap(state: _State) -> bool:
        return all(
            lim is None or sum(_free_edges(p) for p in cell) <= lim
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
        moves = _single_moves(term, blocks, scores, st, x, limits, option_free, seen)
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
