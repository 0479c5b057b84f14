"""The supernet's shortcuts compute what the straightforward, op-by-op supernet computes.

`hwnas.search.supernet` runs a cell's or stage's two preprocessing ops as one convolution,
the stage connections' ops on states 0 and 1 as one pooling and one BatchNorm per op kind,
skips the exit mixture when a stage has one depth choice, shares the ReLU and the pooling of
a state among the ops that read it (`hwnas.nets.ops.forward_shared`), and `PoolBN` pools in NHWC. The
reference here undoes every shortcut on a copy of the same network: each module called on
its own, every (input, op) pair weighted and summed in turn. Outputs, gradients (weights and
architecture logits), BatchNorm running statistics and eval-mode outputs must agree.

Float64 for the deeper networks: in float32 a reordered sum moves values by ~1e-7, enough to
flip a max-pooling window between two near-equal inputs (thousands of windows per step), which
reroutes that window's gradient; the two supernets are the same function, so in float64 they
agree to ~1e-12, and the float32 check runs on the bench's one-cell-per-stage network.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hwnas.nets.ops import PoolBN
from hwnas.search.relax import Relaxed, relax
from hwnas.search.supernet import (
    MixedConnection,
    MixedExit,
    SearchCell,
    SearchModel,
    SearchStage,
    States,
    batch_norm_group,
    relu_conv_bn_group,
)
from hwnas.space import STAGE_OPS, SpaceConfig
from hwnas.space.encoding import ArchParameters

# one cell per stage (the bench's space: every stage connection reads exactly states 0 and 1)
ONE = SpaceConfig(name="one", in_channels=3, input_size=16, num_classes=5, channels=4, depth_choices=(1,), window=2)
# deeper stages, a wider window: connections read states 0, 1 and cell outputs; exits mixed
DEEP = SpaceConfig(
    name="deep", in_channels=3, input_size=16, num_classes=5, channels=4, depth_choices=(1, 2, 3), window=3, nodes=3
)


def _plain_pool_bn(m: PoolBN) -> types.MethodType:
    return types.MethodType(lambda self, x: self.bn(self.pool(x)), m)


def _plain_preprocess(self: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
    return [self.pre0(s0), self.pre1(s1)]


def _plain_connection(self: MixedConnection, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
    if self.k >= r.run_depth[self.stage]:
        return states[-1]
    block, n = r.slots[self.stage][self.k], len(STAGE_OPS)
    out = 0
    for j, o in block.active:
        out = out + block.weights[j, o] * self.ops[j * n + o](states[self.start + j])
    return out  # type: ignore[return-value]


def _plain_exit(self: MixedExit, states: Sequence[torch.Tensor], r: Relaxed) -> torch.Tensor:
    out = 0
    for d in r.active_exits[self.stage]:
        depth = self.depths[d]
        out = out + r.exits[self.stage][d] * torch.cat(list(states[depth : depth + 2]), dim=1)
    return out  # type: ignore[return-value]


def straightforward(model: SearchModel) -> SearchModel:
    """A copy of `model` with every shortcut undone (same parameters, buffers and logits)."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, SearchCell | SearchStage):
            m.preprocess = types.MethodType(_plain_preprocess, m)  # type: ignore[method-assign]
        elif isinstance(m, MixedConnection):
            m.forward = types.MethodType(_plain_connection, m)  # type: ignore[method-assign]
        elif isinstance(m, MixedExit):
            m.forward = types.MethodType(_plain_exit, m)  # type: ignore[method-assign]
        elif isinstance(m, PoolBN):
            m.forward = _plain_pool_bn(m)  # type: ignore[method-assign]
    return ref


def _model(space: SpaceConfig, seed: int = 0) -> SearchModel:
    torch.manual_seed(seed)
    alpha = ArchParameters(space, init_scale=1.0, generator=torch.Generator().manual_seed(seed))
    return SearchModel(alpha, channels=4)


def _step(model: SearchModel, x: torch.Tensor, y: torch.Tensor, mode: str, k: int = 1) -> tuple[torch.Tensor, list]:
    gen = torch.Generator().manual_seed(3)
    r = relax(model.alpha, mode, k=k, tau=1.0, generator=gen)
    logits = model.net(x, r)
    params = model.weights() + model.arch_parameters()
    grads = torch.autograd.grad(F.cross_entropy(logits, y), params, allow_unused=True)
    return logits, [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]


def _assert_same(
    model: SearchModel, ref: SearchModel, mode: str, k: int = 1, channels_last: bool = False, double: bool = False
) -> None:
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    tol = 1e-10 if double else 1e-5
    if double:
        model.double()
        ref.double()
        x = x.double()
    y = torch.arange(6) % 5
    if channels_last:
        for m in (model, ref):
            m.net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(2):  # twice: the second forward normalises with the first one's statistics
        out, grads = _step(model, x, y, mode, k)
        out_r, grads_r = _step(ref, x, y, mode, k)
        torch.testing.assert_close(out, out_r, atol=tol, rtol=tol)
        names = [n for n, _ in model.net.named_parameters()] + [n for n, _ in model.alpha.named_parameters()]
        for name, g, g_r in zip(names, grads, grads_r, strict=True):
            torch.testing.assert_close(g, g_r, atol=tol, rtol=tol, msg=lambda m, name=name: f"{name}: {m}")
        bufs, bufs_r = dict(model.net.named_buffers()), dict(ref.net.named_buffers())
        assert bufs.keys() == bufs_r.keys()
        for name, b in bufs.items():
            torch.testing.assert_close(b, bufs_r[name], atol=tol, rtol=tol, msg=lambda m, name=name: f"{name}: {m}")
    model.eval()
    ref.eval()
    with torch.no_grad():
        r = relax(model.alpha, "full")
        torch.testing.assert_close(model.net(x, r), ref.net(x, r), atol=tol, rtol=tol)


@pytest.mark.parametrize("double", [False, True], ids=["float32", "float64"])
def test_full_mixture_output_gradients_and_statistics_match_the_op_by_op_supernet(double: bool) -> None:
    model = _model(ONE)
    _assert_same(model, straightforward(model), "full", double=double)


def test_deep_stages_full_mixture_match_the_op_by_op_supernet() -> None:
    model = _model(DEEP)
    _assert_same(model, straightforward(model), "full", double=True)


@pytest.mark.parametrize("k", [1, 2])
def test_sampled_mode_matches_the_op_by_op_supernet(k: int) -> None:
    model = _model(DEEP, seed=1)
    _assert_same(model, straightforward(model), "sampled", k, double=True)


def test_channels_last_supernet_matches_the_op_by_op_supernet() -> None:
    model = _model(ONE, seed=2)
    _assert_same(model, straightforward(model), "full", channels_last=True)


def test_the_shortcuts_are_taken() -> None:
    """The fast paths run (else the tests above would compare the plain path with itself)."""
    model = _model(ONE)
    stage = model.net.stages[0]
    s = torch.randn(2, stage.pre0.conv.in_channels, 16, 16)
    assert stage.preprocess(s, s.clone()).joint is None  # two tensors: one by one
    states = stage.preprocess(s, s)
    assert isinstance(states, States) and states.joint.shape[1] == 2 * stage.width
    conn = stage.connections[0]
    assert conn.pairable
    calls = []
    orig = conn._pair
    conn._pair = lambda *a: calls.append(1) or orig(*a)  # type: ignore[method-assign]
    conn(states, relax(model.alpha, "full"))
    assert calls == [1]


def test_grouped_batch_norm_and_conv_equal_the_modules_one_by_one() -> None:
    from hwnas.nets.ops import ReLUConvBN

    torch.manual_seed(0)
    mods = [ReLUConvBN(6, 4, affine=True), ReLUConvBN(6, 3, affine=True)]
    for m in mods:
        nn.init.normal_(m.bn.weight)
        nn.init.normal_(m.bn.bias)
    ref = copy.deepcopy(mods)
    x = torch.randn(5, 6, 7, 7, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out = relu_conv_bn_group(x, mods)
    out_r = torch.cat([m(xr) for m in ref], dim=1)
    torch.testing.assert_close(out, out_r)
    g = torch.randn_like(out)
    out.backward(g)
    out_r.backward(g)
    torch.testing.assert_close(x.grad, xr.grad)
    for m, mr in zip(mods, ref, strict=True):
        for (n, p), pr in zip(m.named_parameters(), mr.parameters(), strict=True):
            torch.testing.assert_close(p.grad, pr.grad, msg=lambda msg, n=n: f"{n}: {msg}")
        for b, br in zip(m.buffers(), mr.buffers(), strict=True):
            torch.testing.assert_close(b, br)
    # a scale only for BatchNorm without affine parameters
    with pytest.raises(ValueError, match="affine"):
        batch_norm_group(torch.randn(2, 7, 3, 3), [m.bn for m in mods], scale=torch.ones(7))


@pytest.mark.parametrize("stride", [1, 2])
def test_forward_shared_computes_each_states_relu_and_pooling_once(stride: int) -> None:
    from hwnas.nets.ops import forward_shared, make_cell_op
    from hwnas.space import CELL_OPS

    torch.manual_seed(0)
    ops = [make_cell_op(o, 4, stride, affine=False) for o in CELL_OPS for _ in range(2)]  # two edges per op
    ref = copy.deepcopy(ops)
    x = torch.randn(3, 4, 8, 8, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    memo: dict = {}
    outs = [forward_shared(op, x, memo, key=7) for op in ops]
    outs_r = [op(xr) for op in ref]
    relus = [k for k in memo if k[1] == "relu"]
    pools = [k for k in memo if k[1] in ("max", "avg")]
    assert len(relus) == 1 and len(pools) == 2  # once per input, not once per op
    g = [torch.randn_like(o) for o in outs]
    torch.autograd.backward(outs, g)
    torch.autograd.backward(outs_r, g)
    for o, o_r in zip(outs, outs_r, strict=True):
        torch.testing.assert_close(o, o_r)
    torch.testing.assert_close(x.grad, xr.grad)
    for m, mr in zip(ops, ref, strict=True):
        for p, pr in zip(m.parameters(), mr.parameters(), strict=True):
            torch.testing.assert_close(p.grad, pr.grad)
        for b, br in zip(m.buffers(), mr.buffers(), strict=True):
            torch.testing.assert_close(b, br)


def test_pooling_keeps_the_callers_memory_layout() -> None:
    """PoolBN pools NCHW input in NHWC and hands back NCHW; NHWC input, or a channel slice of
    it (the supernet's states 0 and 1), stays NHWC (else a channels_last network would switch
    layout at every pooling op)."""
    m = PoolBN("max", 4, 1, affine=False)
    x = torch.randn(2, 8, 6, 6)
    assert m(x[:, :4]).is_contiguous()
    cl = x.contiguous(memory_format=torch.channels_last)
    for inp in (cl, cl[:, :4]):
        out = m(inp[:, :4])
        assert out.stride(1) == 1
        torch.testing.assert_close(out, m(x[:, :4].contiguous()))
