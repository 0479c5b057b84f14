"""The hierarchical supernet: H-DAS's macro skeleton with every choice mixed.

The wiring is `hwnas.nets.skeleton`'s (the deploy network's, written once) and the op modules are
`hwnas.nets.ops`' (BatchNorm without affine parameters during search, as DARTS and H-DAS do); this
module only plugs in the mixed parts, each reading its weights from the per-step `Relaxed`
that `hwnas.search.relax` computes from one `ArchParameters`:

* a cell node: the weighted sum over its candidate (input, op) pairs (`MixedEdges`); every
  stage's normal cell and every reduction cell has its own parameters;
* a cell's input (H-DAS `SearchBigDAG`): the weighted sum over the states of its window, each
  through each stage-level op, fed as both inputs of the cell;
* a stage's depth (H-DAS `SearchBigDAG_CS`, distribution search): the stage runs its deepest
  configuration and its output mixes, over the possible exits, the concatenation of the last
  two states at that exit by the depth weights (`MixedExit`).

In sampled mode only the drawn pairs and exit are computed, and the cells past the deepest
drawn exit are skipped. `none` is not a candidate: the edge weights (`beta`) alone select the
inputs (docs/search.md says why).

Cheaper, same computation: H-DAS feeds every cell and stage the same tensor as both inputs,
so their two 1x1 preprocessing ops (`pre0`, `pre1`) run as one ReLU, one convolution with the
two weights concatenated and one BatchNorm over both (`relu_conv_bn_group`; the modules and
their parameters stay as they are, so checkpoints and `derive` do not change); the stage
connections pool and normalise that joint output (states 0 and 1 side by side) once per op
kind, the mixture weights folded into the BatchNorm's scale; a stage with a single depth
choice has nothing to mix at its exit (its weight is 1 with zero gradient). Generic, and
given to bench/search_step.py's plain DARTS reference too: the ops reading one state share
its ReLU and pooling (`hwnas.nets.ops.forward_shared`), and `PoolBN` pools in NHWC.
tests/test_supernet_fast.py checks all of it against the op-by-op computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnas.nets.ops import Identity, PoolBN, ReLUConvBN, forward_shared, make_cell_op, make_stage_op
from hwnas.nets.skeleton import CellSkeleton, MacroSkeleton, StageSkeleton
from hwnas.search.relax import Block, Relaxed
from hwnas.space import CELL_OPS, NUM_CELL_INPUTS, NUM_STAGES, STAGE_OPS, SpaceConfig
from hwnas.space.encoding import ArchParameters


def batch_norm_group(
    x: torch.Tensor, bns: Sequence[nn.BatchNorm2d], scale: torch.Tensor | None = None
) -> torch.Tensor:
    """`cat([bn(part) for bn, part in zip(bns, x.split(widths))])` as one BatchNorm: the same
    output and gradients, and each module's running statistics updated as its own forward
    would (the momentum update is per channel, so it runs once on the concatenated buffers,
    which are copied back). `scale` (per channel; only for BatchNorm without affine
    parameters) multiplies the output inside the same kernel."""
    b0 = bns[0]
    if scale is not None and b0.affine:
        raise ValueError("batch_norm_group: scale is for BatchNorm without affine parameters")
    grouped = all(
        b.eps == b0.eps and b.momentum == b0.momentum and b.affine == b0.affine and b.training == b0.training
        and b.track_running_stats and b.running_mean is not None
        for b in bns
    ) and b0.momentum is not None
    if not grouped:
        parts = x.split([b.num_features for b in bns], dim=1)
        out = torch.cat([b(p) for b, p in zip(bns, parts, strict=True)], dim=1)
        return out if scale is None else out * scale.view(1, -1, 1, 1)
    rm = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
    rv = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    w = torch.cat([b.weight for b in bns]) if b0.affine else scale
    bias = torch.cat([b.bias for b in bns]) if b0.affine else None
    out = F.batch_norm(x, rm, rv, w, bias, b0.training, b0.momentum, b0.eps)
    if b0.training:
        with torch.no_grad():
            start = 0
            for b in bns:
                end = start + b.num_features
                b.running_mean.copy_(rm[start:end])  # type: ignore[union-attr]
                b.running_var.copy_(rv[start:end])  # type: ignore[union-attr]
                b.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                start = end
    return out


def relu_conv_bn_group(x: torch.Tensor, mods: Sequence[ReLUConvBN]) -> torch.Tensor:
    """`cat([m(x) for m in mods], dim=1)` for ReLU-conv-BN modules on one input: one ReLU, one
    convolution with the weights concatenated, one BatchNorm (same parameters, same result)."""
    c = mods[0].conv
    w = torch.cat([m.conv.weight for m in mods])
    y = F.conv2d(torch.relu(x), w, None, c.stride, c.padding, c.dilation, c.groups)
    return batch_norm_group(y, [m.bn for m in mods])


#: Share a state's ReLU and pooling among the ops that read it (`hwnas.nets.ops.forward_shared`):
#: the same results either way; off only to measure what it saves (bench/search_step.py).
SHARE_STATE_WORK = True


class States(list):  # type: ignore[type-arg]
    """A stage's or cell's states during one forward pass, with `memo` for the work shared by
    the ops that read the same state (`hwnas.nets.ops.forward_shared`, keyed by state index) and,
    when states 0 and 1 are the halves of one tensor, that tensor (`joint`)."""

    def __init__(self, states: Sequence[torch.Tensor], joint: torch.Tensor | None = None):
        super().__init__(states)
        self.joint = joint
        self.memo: dict | None = {} if SHARE_STATE_WORK else None


def _paired_preprocess(owner: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
    pre0, pre1 = owner.pre0, owner.pre1
    if s0 is not s1:
        return States([pre0(s0), pre1(s1)])
    y = relu_conv_bn_group(s0, [pre0, pre1])  # type: ignore[list-item]
    return States(y.split([pre0.conv.out_channels, pre1.conv.out_channels], dim=1), joint=y)  # type: ignore[union-attr]


class SearchCell(CellSkeleton):
    """`CellSkeleton` whose two preprocessing ops run as one when both inputs are one tensor."""

    def preprocess(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        return _paired_preprocess(self, s0, s1)


class SearchStage(StageSkeleton):
    """`StageSkeleton` whose two preprocessing ops run as one when both inputs are one tensor."""

    def preprocess(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        return _paired_preprocess(self, s0, s1)


def mix(
    block: Block, ops: nn.ModuleList, states: Sequence[torch.Tensor], n_ops: int, memo: dict | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """sum over the block's active (input j, op o) of weight[j, o] * op_{j,o}(states[j]); with
    `memo`, the ReLU and pooling of state j are shared (key offset + j: its index in its list)."""
    out: torch.Tensor | None = None
    for j, o in block.active:
        op = ops[j * n_ops + o]
        y = block.weights[j, o] * (op(states[j]) if memo is None else forward_shared(op, states[j], memo, offset + j))
        out = y if out is None else out + y
    assert out is not None, "a mixed block with no active pair"
    return out


class MixedNode(nn.Module):
    """Node i of cell `cell`: a mixed op on each of its 2 + i candidate inputs."""

    def __init__(self, cell: int, i: int, c: int, reduction: bool):
        super().__init__()
        self.cell, self.i = cell, i
        self.ops = nn.ModuleList(
            make_cell_op(op, c, 2 if reduction and j < NUM_CELL_INPUTS else 1, affine=False)
            for j in range(NUM_CELL_INPUTS + i)
            for op in CELL_OPS
        )

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        return mix(r.cells[self.cell][self.i], self.ops, states, len(CELL_OPS), getattr(states, "memo", None))


class MixedConnection(nn.Module):
    """Cell k's input in stage s: the window's states through the mixed stage ops, summed."""

    def __init__(self, space: SpaceConfig, stage: int, k: int, width: int):
        super().__init__()
        self.stage, self.k = stage, k
        self.start = space.window_of(k).start
        self.ops = nn.ModuleList(
            make_stage_op(op, width, affine=False) for _ in space.window_of(k) for op in STAGE_OPS
        )

        n = len(STAGE_OPS)
        # states 0 and 1 through every stage op at once when they arrive as one tensor
        # (States.joint): skip and pooling (BatchNorm without affine) only
        self.pairable = self.start == 0 and len(self.ops) >= 2 * n and all(
            isinstance(self.ops[j * n + o], Identity)
            or (isinstance(self.ops[j * n + o], PoolBN) and not self.ops[j * n + o].bn.affine)
            for j in range(2)
            for o in range(n)
        )

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        if self.k >= r.run_depth[self.stage]:
            return states[-1]  # past every active exit: not computed, never read
        block = r.slots[self.stage][self.k]
        n = len(STAGE_OPS)
        joint = getattr(states, "joint", None)
        pair = [(j, o) for j in range(2) for o in range(n)]
        memo = getattr(states, "memo", None)
        if joint is None or not self.pairable or not set(pair) <= set(block.active):
            return mix(block, self.ops, states[self.start :], n, memo, self.start)
        out = self._pair(joint, block.weights)
        rest = [(j, o) for j, o in block.active if j >= 2]
        if rest:
            out = out + mix(Block(block.weights, rest), self.ops, states[self.start :], n, memo, self.start)
        return out

    def _pair(self, joint: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """sum over j in (0, 1), o of weights[j, o] * op_{j,o}(state j), state j = joint's half j:
        one pooling and one BatchNorm per op kind over both halves, the weights folded into the
        BatchNorm's scale; pooled in NHWC like `PoolBN` (torch's NCHW CPU pooling is slow)."""
        n, half = len(STAGE_OPS), joint.shape[1] // 2
        nchw = joint.is_contiguous() and not joint.is_contiguous(memory_format=torch.channels_last)
        x = joint.contiguous(memory_format=torch.channels_last) if nchw and joint.device.type == "cpu" else joint
        out: torch.Tensor | None = None
        for o in range(n):
            w = weights[0:2, o].repeat_interleave(half)
            m0, m1 = self.ops[o], self.ops[n + o]
            if isinstance(m0, PoolBN):
                y = batch_norm_group(m0.pool(x), [m0.bn, m1.bn], scale=w)  # type: ignore[list-item]
                out = y if out is None else out + y
            else:  # skip
                out = x * w.view(1, -1, 1, 1) if out is None else torch.addcmul(out, x, w.view(1, -1, 1, 1))
        assert out is not None
        out = out[:, :half] + out[:, half:]
        return out.contiguous() if nchw else out


class SkippableCell(nn.Module):
    """A stage's cell k, skipped (its input passed through) when no active exit reaches it."""

    def __init__(self, cell: CellSkeleton, stage: int, k: int):
        super().__init__()
        self.cell, self.stage, self.k = cell, stage, k
        self.out_channels = cell.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, r: Relaxed) -> torch.Tensor:
        if self.k >= r.run_depth[self.stage]:
            return s0
        return self.cell(s0, s1, r)


class MixedExit(nn.Module):
    """A stage's output: sum over active exits d of p_d * concat(last two states at depth d)."""

    def __init__(self, space: SpaceConfig, stage: int):
        super().__init__()
        self.depths = list(space.depth_choices)
        self.stage = stage

    def forward(self, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
        if len(self.depths) == 1:  # one choice: its weight is 1 (softmax of one logit), no gradient
            depth = self.depths[0]
            return torch.cat(list(states[depth : depth + 2]), dim=1)
        out: torch.Tensor | None = None
        for d in r.active_exits[self.stage]:
            depth = self.depths[d]
            y = r.exits[self.stage][d] * torch.cat(list(states[depth : depth + 2]), dim=1)
            out = y if out is None else out + y
        assert out is not None
        return out


def _cell(space: SpaceConfig, cell: int, c_in: int, c: int, reduction: bool) -> CellSkeleton:
    return SearchCell(
        c_in, c, space.nodes, lambda i: MixedNode(cell, i, c, reduction), affine=False
    )


def _stage(space: SpaceConfig, s: int, c_in: int, c: int) -> StageSkeleton:
    width = c * space.nodes
    return SearchStage(
        c_in,
        width,
        space.max_depth,
        lambda k: MixedConnection(space, s, k, width),
        lambda k: SkippableCell(_cell(space, s, width, c, reduction=False), s, k),
        output=MixedExit(space, s),
        affine=False,
    )


class Supernet(MacroSkeleton):
    """The deploy network's skeleton with every choice mixed; `channels` = proxy width C,
    `resolution` = proxy input size (neither changes what is searched)."""

    def __init__(self, space: SpaceConfig, channels: int | None = None, resolution: int | None = None):
        super().__init__(
            space,
            make_stage=lambda s, c_in, c: _stage(space, s, c_in, c),
            make_reduction=lambda r, c_in, c: _cell(space, NUM_STAGES + r, c_in, c, reduction=True),
            channels=channels,
            resolution=resolution,
        )


class SearchModel(nn.Module):
    """The supernet's weights and the architecture logits, kept apart (bilevel optimisation).

    `alpha` is the one source of truth for every architecture choice."""

    def __init__(self, alpha: ArchParameters, channels: int | None = None, resolution: int | None = None):
        super().__init__()
        self.alpha = alpha
        self.net = Supernet(alpha.space, channels, resolution)

    def weights(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha.parameters())
