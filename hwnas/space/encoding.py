"""Architecture encoding: one fixed-length vector layout per space config.

The same layout serves a discrete architecture (one-hot) and the relaxed supernet
(probabilities), which is what makes the latency predictor a differentiable function of the
search's parameters. Blocks, in order (names from `encoding_layout`):

* per cell (normal cells of stages 0..2, then reductions 0..1), per node i, per candidate
  input j < 2 + i, per op of CELL_OPS: `edge(j) * op(j, o)`. Discrete: 1 for the node's two
  chosen (input, op) pairs, else 0. Relaxed: `edge` = a soft choice of two inputs (the
  inclusion probabilities of two draws without replacement: in [0, 1], summing to 2, see
  `_edge_weights`) times `op = softmax(alpha)`.
* per stage: `depth.d` for each depth choice: one-hot / softmax.
* per stage, per cell slot k < max depth, per state in the slot's window, per stage op:
  `exists(k) * edge * op`; `exists(k) = P(depth > k)` (0 or 1 when discrete).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hwnas.space import (
    CELL_OPS,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    STAGE_OPS,
    Architecture,
    Genotype,
    SpaceConfig,
    Stage,
)

# The layout is plain Python (no torch) so commands that only inspect a space start fast.
from hwnas.space.layout import _cell_names, encoding_layout, encoding_size  # noqa: F401 (re-exported)

EDGES_PER_NODE = 2


def _encode_genotype(g: Genotype, space: SpaceConfig) -> list[float]:
    out: list[float] = []
    for i, node in enumerate(g):
        block = np.zeros((NUM_CELL_INPUTS + i, len(CELL_OPS)))
        for op, j in node:
            block[j, CELL_OPS.index(op)] = 1.0
        out += block.ravel().tolist()
    assert len(g) == space.nodes
    return out


def _encode_stage(stage: Stage, space: SpaceConfig) -> list[float]:
    out = [1.0 if d == stage.depth else 0.0 for d in space.depth_choices]
    for k in range(space.max_depth):
        window = space.window_of(k)
        block = np.zeros((len(window), len(STAGE_OPS)))
        if k < stage.depth:
            for op, j in stage.connections[k]:
                block[j - window.start, STAGE_OPS.index(op)] = 1.0
        out += block.ravel().tolist()
    return out


def encode(arch: Architecture) -> np.ndarray:
    """The one-hot encoding of a discrete architecture (float32, length encoding_size)."""
    space = arch.space
    values: list[float] = []
    for stage in arch.stages:
        values += _encode_genotype(stage.cell, space)
    for g in arch.reductions:
        values += _encode_genotype(g, space)
    for stage in arch.stages:
        values += _encode_stage(stage, space)
    return np.asarray(values, dtype=np.float32)


def _edge_weights(beta: torch.Tensor) -> torch.Tensor:
    """Soft selection of EDGES_PER_NODE (= 2) inputs: each weight in [0, 1], summing to 2.

    The inclusion probability of input j when two inputs are drawn one after the other
    without replacement, each in proportion to p = softmax(beta) (what `sample` draws):
    `w_j = p_j + sum_{i != j} p_i p_j / (1 - p_i)`. Smooth everywhere, so the gradient reaches
    a chosen input's logit however sure the choice (the earlier `2 p` capped at 1 was flat
    once one input held half the mass: nothing could push it out); never loses edge mass;
    2/n at the centre and the discrete one-hot at a vertex. Computed in log space (stable
    for logits hundreds apart).
    """
    n = beta.shape[-1]
    if n <= EDGES_PER_NODE:
        return torch.ones_like(beta)
    eye = torch.eye(n, dtype=torch.bool, device=beta.device)
    total = torch.logsumexp(beta, dim=-1, keepdim=True)  # log sum_k e^b_k
    rows = beta.unsqueeze(-2).expand(*beta.shape[:-1], n, n)  # [..., i, k] = b_k
    others = torch.logsumexp(rows.masked_fill(eye, float("-inf")), dim=-1)  # [..., i]: log sum_{k != i}
    # [..., i, j] = log(p_i p_j / (1 - p_i)) = b_i + b_j - total - others_i
    pair = beta.unsqueeze(-1) + beta.unsqueeze(-2) - total.unsqueeze(-1) - others.unsqueeze(-1)
    second = pair.masked_fill(eye, float("-inf")).exp().sum(dim=-2)
    # rounding can exceed 1 by ~1e-6 where p_j ~ 1 (the true gradient is ~0 there anyway)
    return (torch.softmax(beta, dim=-1) + second).clamp(max=1.0)


class ArchParameters(nn.Module):
    """The relaxed architecture: logits for every choice of the hierarchical space.

    cells 0..2 are the stages' normal cells, 3..4 the reductions. For each cell and node i:
    `alpha` [2 + i, len(CELL_OPS)] (op logits per input edge) and `beta` [2 + i] (which inputs).
    For each stage: `depth` [len(depth_choices)]; per slot k: `conn_alpha` [window, len(STAGE_OPS)]
    and `conn_beta` [window].
    """

    def __init__(self, space: SpaceConfig, init_scale: float = 1e-3, generator: torch.Generator | None = None):
        super().__init__()
        self.space = space

        def p(*shape: int) -> nn.Parameter:
            return nn.Parameter(init_scale * torch.randn(*shape, generator=generator))

        n_cells = NUM_STAGES + NUM_STAGES - 1
        self.alpha = nn.ParameterList(
            p(NUM_CELL_INPUTS + i, len(CELL_OPS)) for _ in range(n_cells) for i in range(space.nodes)
        )
        self.beta = nn.ParameterList(
            p(NUM_CELL_INPUTS + i) for _ in range(n_cells) for i in range(space.nodes)
        )
        self.depth = nn.ParameterList(p(len(space.depth_choices)) for _ in range(NUM_STAGES))
        self.conn_alpha = nn.ParameterList(
            p(len(space.window_of(k)), len(STAGE_OPS))
            for _ in range(NUM_STAGES)
            for k in range(space.max_depth)
        )
        self.conn_beta = nn.ParameterList(
            p(len(space.window_of(k))) for _ in range(NUM_STAGES) for k in range(space.max_depth)
        )

    def _node(self, cell: int, i: int) -> int:
        return cell * self.space.nodes + i

    def _slot(self, stage: int, k: int) -> int:
        return stage * self.space.max_depth + k

    def depth_probs(self, stage: int) -> torch.Tensor:
        return torch.softmax(self.depth[stage], dim=-1)

    def exists_probs(self, stage: int) -> torch.Tensor:
        """P(depth > k) for each cell slot k: the chance that cell k of the stage exists."""
        probs = self.depth_probs(stage)
        choices = torch.tensor(self.space.depth_choices, device=probs.device)
        ks = torch.arange(self.space.max_depth, device=probs.device)
        return ((choices[None, :] > ks[:, None]).to(probs.dtype) * probs[None, :]).sum(-1)

    def encode(self) -> torch.Tensor:
        """The relaxed encoding (same layout as `encode(arch)`), differentiable in every logit."""
        parts: list[torch.Tensor] = []
        n_cells = NUM_STAGES + NUM_STAGES - 1
        for c in range(n_cells):
            for i in range(self.space.nodes):
                n = self._node(c, i)
                w = _edge_weights(self.beta[n])[:, None] * torch.softmax(self.alpha[n], dim=-1)
                parts.append(w.reshape(-1))
        for s in range(NUM_STAGES):
            parts.append(self.depth_probs(s))
            exists = self.exists_probs(s)
            for k in range(self.space.max_depth):
                n = self._slot(s, k)
                w = _edge_weights(self.conn_beta[n])[:, None] * torch.softmax(self.conn_alpha[n], dim=-1)
                parts.append(exists[k] * w.reshape(-1))
        return torch.cat(parts)

    @torch.no_grad()
    def derive(self) -> Architecture:
        """The discrete architecture: per node the top-2 inputs by edge weight, each with its
        most likely op; per stage the most likely depth and, per cell, its top-2 inputs."""
        space = self.space

        def genotype(c: int) -> Genotype:
            nodes = []
            for i in range(space.nodes):
                n = self._node(c, i)
                score = torch.softmax(self.beta[n], -1)
                top = sorted(torch.topk(score, EDGES_PER_NODE).indices.tolist())
                nodes.append(tuple((CELL_OPS[int(self.alpha[n][j].argmax())], j) for j in top))
            return tuple(nodes)  # type: ignore[return-value]

        stages = []
        for s in range(NUM_STAGES):
            depth = space.depth_choices[int(self.depth[s].argmax())]
            conns = []
            for k in range(depth):
                n = self._slot(s, k)
                start = space.window_of(k).start
                top = sorted(torch.topk(torch.softmax(self.conn_beta[n], -1), EDGES_PER_NODE).indices.tolist())
                conns.append(tuple((STAGE_OPS[int(self.conn_alpha[n][j].argmax())], start + j) for j in top))
            stages.append(Stage(cell=genotype(s), depth=depth, connections=tuple(conns)))  # type: ignore[arg-type]
        reductions = tuple(genotype(NUM_STAGES + r) for r in range(NUM_STAGES - 1))
        return Architecture(space=space, stages=tuple(stages), reductions=reductions)

    @torch.no_grad()
    def _draw(self, n: int, generator: torch.Generator | None) -> list[torch.Tensor]:
        """Index draws for `n` architectures, one [n, ...] tensor per choice, in layout order:
        per cell node (inputs [n, 2], their ops [n, 2]); per stage the depth index [n], then
        per cell slot (inputs [n, 2] as window offsets, their ops [n, 2])."""

        def probs(logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(logits.detach().double().cpu(), dim=-1)

        def edges(beta: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
            p = probs(beta)
            if p.numel() <= EDGES_PER_NODE:
                ins = torch.arange(p.numel()).expand(n, -1)
            else:  # successive draws without replacement, each in proportion to p
                ins = torch.multinomial(p.expand(n, -1), EDGES_PER_NODE, generator=generator)
                ins = ins.sort(dim=-1).values
            ops = torch.multinomial(probs(alpha), n, replacement=True, generator=generator).T
            return [ins, ops.gather(1, ins)]

        out: list[torch.Tensor] = []
        for c in range(NUM_STAGES + NUM_STAGES - 1):
            for i in range(self.space.nodes):
                out += edges(self.beta[self._node(c, i)], self.alpha[self._node(c, i)])
        for s in range(NUM_STAGES):
            out.append(torch.multinomial(probs(self.depth[s]), n, replacement=True, generator=generator))
            for k in range(self.space.max_depth):
                out += edges(self.conn_beta[self._slot(s, k)], self.conn_alpha[self._slot(s, k)])
        return out

    @torch.no_grad()
    def sample_encodings(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The one-hot encodings [n, D] of `n` architectures drawn as `sample` draws them.

        Vectorised (a Python loop per architecture took ~17 ms each on this host); row r
        equals `encode(sample(g))` for the r-th draw of a generator in the same state when n=1.
        """
        space = self.space
        draws = iter(self._draw(n, generator))
        rows = torch.arange(n)
        parts: list[torch.Tensor] = []

        def scatter(n_in: int, n_ops: int, keep: torch.Tensor | None = None) -> None:
            ins, ops = next(draws), next(draws)
            block = torch.zeros(n, n_in, n_ops)
            for e in range(ins.shape[1]):
                block[rows, ins[:, e], ops[:, e]] = 1.0
            if keep is not None:
                block *= keep[:, None, None]
            parts.append(block.reshape(n, -1))

        for _ in range(NUM_STAGES + NUM_STAGES - 1):
            for i in range(space.nodes):
                scatter(NUM_CELL_INPUTS + i, len(CELL_OPS))
        choices = torch.tensor(space.depth_choices)
        for _ in range(NUM_STAGES):
            d = next(draws)
            parts.append(nn.functional.one_hot(d, len(choices)).float())
            for k in range(space.max_depth):
                scatter(len(space.window_of(k)), len(STAGE_OPS), keep=(choices[d] > k).float())
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> Architecture:
        """One discrete architecture drawn from the distributions these logits describe.

        What a relaxed encoding stands for (the latency loss's meaning: the expected latency
        of these draws, docs/benchmarks.md): per node, two inputs drawn without replacement,
        each in proportion to softmax(beta) (the relaxed edge weights approximate their
        inclusion probabilities), and for each an op by softmax(alpha); per stage a depth by
        its softmax and, per existing cell, two window states and their ops the same way.
        Inputs are stored in index order. Same generator state, same architecture.
        """
        space = self.space
        draws = iter([t[0].tolist() for t in self._draw(1, generator)])

        def genotype() -> Genotype:
            nodes = []
            for _ in range(space.nodes):
                ins, ops = next(draws), next(draws)
                nodes.append(tuple((CELL_OPS[o], j) for j, o in zip(ins, ops, strict=True)))
            return tuple(nodes)  # type: ignore[return-value]

        cells = [genotype() for _ in range(NUM_STAGES + NUM_STAGES - 1)]
        stages = []
        for s in range(NUM_STAGES):
            depth = space.depth_choices[int(next(draws))]
            conns = []
            for k in range(space.max_depth):
                ins, ops = next(draws), next(draws)
                start = space.window_of(k).start
                if k < depth:
                    conns.append(tuple((STAGE_OPS[o], start + j) for j, o in zip(ins, ops, strict=True)))
            stages.append(Stage(cell=cells[s], depth=depth, connections=tuple(conns)))  # type: ignore[arg-type]
        return Architecture(space=space, stages=tuple(stages), reductions=tuple(cells[NUM_STAGES:]))

    @torch.no_grad()
    def set_from(self, arch: Architecture, strength: float = 10.0) -> ArchParameters:
        """Put logit `strength` on the architecture's choices (0 elsewhere): a relaxed form
        whose argmax is `arch`, for tests and for warm-starting a search."""
        if arch.space != self.space:
            raise ValueError("architecture belongs to another space")
        for prm in self.parameters():
            prm.zero_()

        def put(c: int, g: Genotype) -> None:
            for i, node in enumerate(g):
                n = self._node(c, i)
                for op, j in node:
                    self.alpha[n][j, CELL_OPS.index(op)] = strength
                    self.beta[n][j] = strength

        for s, stage in enumerate(arch.stages):
            put(s, stage.cell)
            self.depth[s][self.space.depth_choices.index(stage.depth)] = strength
            for k, conn in enumerate(stage.connections):
                n = self._slot(s, k)
                start = self.space.window_of(k).start
                for op, j in conn:
                    self.conn_alpha[n][j - start, STAGE_OPS.index(op)] = strength
                    self.conn_beta[n][j - start] = strength
        for r, g in enumerate(arch.reductions):
            put(NUM_STAGES + r, g)
        return self
