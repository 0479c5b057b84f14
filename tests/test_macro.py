"""H-DAS's macro network: the skeleton's wiring, the ops, and the parameter count of its code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas.nets.network import EdgeSum, Network, build_network, discrete_cell
from hwnas.nets.onnx_builder import OnnxBuilder
from hwnas.nets.onnx_export import INPUT_NAME, OUTPUT_NAME
from hwnas.nets.ops import FactorizedReduce, PoolBN, ReLUConvBN, Zero, make_cell_op, make_stage_op
from hwnas.nets.skeleton import CellSkeleton, ConcatLastTwo, MacroSkeleton, StageSkeleton
from hwnas.space import Architecture, get_space, load_architecture, sample_architectures

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: H-DAS's own code (models/augment_stage.py, auxiliary head excluded), DARTS-V2 cells, C=36,
#: 6 cells per stage, each cell reading the previous two states through skip_connect.
HDAS_DARTS_V2_PARAMS = 4_392_658


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_darts_v2_parameter_count_matches_hdas_code():
    arch = load_architecture(EXAMPLES / "darts_v2_cifar.json")
    assert arch.space == get_space("cifar")
    assert [s.depth for s in arch.stages] == [6, 6, 6]
    for stage in arch.stages:
        assert stage.connections == tuple(
            (("skip_connect", k), ("skip_connect", k + 1)) for k in range(6)
        )
    n = _params(build_network(arch))
    assert abs(n - HDAS_DARTS_V2_PARAMS) <= 0.01 * HDAS_DARTS_V2_PARAMS, n


def test_darts_v1_example_builds_and_runs():
    arch = load_architecture(EXAMPLES / "darts_v1_cifar.json")
    net = build_network(arch).eval()
    assert net(torch.randn(1, *arch.space.input_shape)).shape == (1, 10)


def test_hdas_wiring_shapes():
    """Stem 4C; stage preprocessing c_in -> N*C_s; stage output 2*N*C_s (no projection);
    the reduction reads it as both inputs; FactorizedReduce only on reduction skip edges."""
    arch = load_architecture(EXAMPLES / "darts_v2_cifar.json")
    net = build_network(arch)
    c, nodes = arch.space.channels, arch.space.nodes
    assert net.stem_conv.out_channels == 4 * c
    for s, stage in enumerate(net.stages):
        width = nodes * c * 2**s
        assert stage.pre0.conv.out_channels == stage.pre1.conv.out_channels == width
        assert stage.out_channels == 2 * width
        assert isinstance(stage.output, ConcatLastTwo)
    for r, red in enumerate(net.reductions):
        assert red.pre0.conv.in_channels == net.stages[r].out_channels
        assert net.stages[r + 1].pre0.conv.in_channels == red.out_channels
    assert net.classifier.in_features == 2 * nodes * c * 4
    # DARTS-V2's reduction cell has no skip_connect from a cell input: no FactorizedReduce at all
    assert not any(isinstance(m, FactorizedReduce) for m in net.modules())
    assert not hasattr(net, "shortcuts")


def test_every_pool_is_followed_by_batchnorm():
    for arch in sample_architectures(get_space("tiny"), seed=3, n=10):
        net = build_network(arch)
        pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
        wrapped = [m.pool for m in net.modules() if isinstance(m, PoolBN)]
        assert pools and len(pools) == len(wrapped)
        assert all(any(p is w for w in wrapped) for p in pools)


def test_a_cells_connections_are_summed_and_fed_as_both_inputs():
    """Cell k sees conn_a(state a) + conn_b(state b) at both inputs (H-DAS's get_dag.py)."""
    arch = sample_architectures(get_space("tiny"), seed=5, n=1)[0]
    net = build_network(arch).eval()
    stage = net.stages[0]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = stage.cells[0].register_forward_pre_hook(lambda m, args: seen.append(args[:2]))
    x = torch.randn(1, *arch.space.input_shape)
    with torch.no_grad():
        s = net.stem_bn(net.stem_conv(x))
        states = [stage.pre0(s), stage.pre1(s)]
        (op_a, a), (op_b, b) = arch.stages[0].connections[0]
        expected = stage.connections[0].ops[0](states[a]) + stage.connections[0].ops[1](states[b])
        net(x)
    hook.remove()
    s0, s1 = seen[0]
    assert s0 is s1
    assert torch.allclose(s0, expected)


def _reverse_pairs(data: dict) -> dict:
    data = json.loads(json.dumps(data))
    for st in data["stages"]:
        st["cell"] = [pair[::-1] for pair in st["cell"]]
        st["connections"] = [pair[::-1] for pair in st["connections"]]
    for red in data["reductions"]:
        red["cell"] = [pair[::-1] for pair in red["cell"]]
    return data


def test_edge_order_gives_one_hash_and_one_network():
    for arch in sample_architectures(get_space("tiny"), seed=9, n=5):
        data = arch.to_dict()
        other = Architecture.from_dict(_reverse_pairs(data))
        assert other.hash == arch.hash and other == arch
        assert other.to_dict() == data  # canonicalised on load: stored in index order
        torch.manual_seed(0)
        net_a = build_network(arch).eval()
        torch.manual_seed(0)
        net_b = build_network(other).eval()
        x = torch.randn(2, *arch.space.input_shape)
        with torch.no_grad():
            assert torch.equal(net_a(x), net_b(x))
        # the network is the same even without canonicalisation: a sum does not see order
        net_b.load_state_dict(net_a.state_dict())
        with torch.no_grad():
            assert torch.equal(net_a(x), net_b(x))


def test_the_darts_v2_file_in_the_other_order_has_the_same_hash(tmp_path):
    data = json.loads((EXAMPLES / "darts_v2_cifar.json").read_text())
    path = tmp_path / "v2_reversed.json"
    path.write_text(json.dumps(_reverse_pairs(data)))
    assert load_architecture(path).hash == load_architecture(EXAMPLES / "darts_v2_cifar.json").hash


def _run_ort(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT_NAME: x})[0]


def _randomise_bn(net: nn.Module, gen: torch.Generator) -> None:
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


def _emit_model(net: MacroSkeleton, space) -> bytes:
    g = OnnxBuilder()
    with torch.no_grad():
        net.emit(g, INPUT_NAME)
    return g.model(INPUT_NAME, (1, *space.input_shape), OUTPUT_NAME, (1, space.num_classes)).SerializeToString()


def test_search_ops_none_and_affine_false_export_and_match():
    """The ops the supernet adds (`none`, BatchNorm without affine) have working ONNX twins."""
    space = get_space("tiny")
    gen = torch.Generator().manual_seed(1)
    genotype = (
        (("none", 0), ("avg_pool_3x3", 1)),
        (("max_pool_3x3", 0), ("none", 2)),
        (("skip_connect", 1), ("sep_conv_3x3", 3)),
        (("dil_conv_5x5", 2), ("none", 4)),
    )

    def stage(s: int, c_in: int, c: int) -> StageSkeleton:
        width = c * space.nodes
        return StageSkeleton(
            c_in,
            width,
            2,
            lambda k: EdgeSum([(make_stage_op("avg_pool_3x3", width, affine=False), k), (make_stage_op("none", width), k + 1)]),
            lambda k: discrete_cell(genotype, width, c, reduction=False, affine=False),
            affine=False,
        )

    net = MacroSkeleton(
        space, stage, lambda r, c_in, c: discrete_cell(genotype, c_in, c, reduction=True, affine=False)
    )
    assert any(isinstance(m, Zero) and m.stride == 2 for m in net.modules())
    assert all(not m.affine for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m is not net.stem_bn)
    _randomise_bn(net, gen)
    net.eval()
    x = torch.randn(1, *space.input_shape, generator=gen)
    with torch.no_grad():
        y = net(x).numpy()
    y_ort = _run_ort(_emit_model(net, space), x.numpy())
    assert np.abs(y - y_ort).max() <= 1e-4


def test_zero_op_shapes():
    x = torch.randn(1, 4, 8, 8)
    assert torch.count_nonzero(Zero(1)(x)) == 0 and Zero(1)(x).shape == x.shape
    assert Zero(2)(x).shape == (1, 4, 4, 4)
    assert make_cell_op("max_pool_3x3", 4, 2)(x).shape == (1, 4, 4, 4)
    assert make_cell_op("skip_connect", 4, 2)(x).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="unknown cell op"):
        make_cell_op("conv_9x9", 4, 1)
    with pytest.raises(ValueError, match="unknown stage op"):
        make_stage_op("sep_conv_3x3", 4)


def test_skeleton_passes_ctx_to_every_plugged_part():
    """The supernet plugs mixed parts into the same skeleton and passes its weights as ctx."""
    space = get_space("tiny")
    calls: list[str] = []

    class Node(nn.Module):
        def __init__(self, i: int):
            super().__init__()
            self.i = i

        def forward(self, states, weights):
            calls.append(f"node:{weights}")
            return sum(states[: 2 + self.i]) * 0.5

    class Conn(nn.Module):
        def forward(self, states, weights):
            calls.append(f"conn:{weights}")
            return states[-1]

    class Out(nn.Module):
        def forward(self, states, weights):
            calls.append(f"out:{weights}")
            return torch.cat(states[-2:], 1)

    def stage(s: int, c_in: int, c: int) -> StageSkeleton:
        width = c * space.nodes
        return StageSkeleton(
            c_in, width, 2, lambda k: Conn(), lambda k: CellSkeleton(width, width // space.nodes, space.nodes, Node), Out()
        )

    net = MacroSkeleton(
        space, stage, lambda r, c_in, c: CellSkeleton(c_in, c, space.nodes, Node), channels=6
    )
    assert net.stem_conv.out_channels == 4 * 6  # the proxy width replaces the space's C
    out = net(torch.randn(2, *space.input_shape), "W")
    assert out.shape == (2, space.num_classes)
    assert calls and all(c.endswith(":W") for c in calls)
    assert {c.split(":")[0] for c in calls} == {"node", "conn", "out"}


def test_network_is_a_macro_skeleton_with_relu_conv_bn_preprocessing():
    arch = sample_architectures(get_space("tiny"), seed=2, n=1)[0]
    net = build_network(arch)
    assert isinstance(net, Network) and isinstance(net, MacroSkeleton)
    for stage in net.stages:
        assert isinstance(stage.pre0, ReLUConvBN) and isinstance(stage.pre1, ReLUConvBN)
        for cell in stage.cells:
            assert isinstance(cell.pre0, ReLUConvBN) and cell.pre0.conv.kernel_size == (1, 1)


def test_drop_path_only_in_training_and_only_on_non_identity_edges():
    arch = load_architecture(EXAMPLES / "darts_v2_cifar.json")
    data = arch.to_dict()
    data["space"] = get_space("tiny").to_dict()
    for st in data["stages"]:
        st["depth"] = 3
        st["connections"] = st["connections"][:3]
    arch = Architecture.from_dict(data)
    torch.manual_seed(0)
    net = build_network(arch)
    x = torch.randn(4, *arch.space.input_shape)
    net.eval()
    with torch.no_grad():
        ref = net(x)
    net.set_drop_path(0.5)
    with torch.no_grad():
        assert torch.equal(net(x), ref)  # eval mode never drops
    # an edge sum of two identities is never dropped, even in training
    both_skip = EdgeSum([(make_stage_op("skip_connect", 4), 0), (make_stage_op("skip_connect", 4), 1)])
    both_skip.drop_prob = 0.9
    states = [torch.ones(8, 4, 2, 2), torch.ones(8, 4, 2, 2)]
    assert torch.equal(both_skip.train()(states), 2 * states[0])
    pooled = EdgeSum([(make_stage_op("avg_pool_3x3", 4), 0)])
    pooled.drop_prob = 0.5
    torch.manual_seed(1)
    out = pooled.train()([torch.randn(8, 4, 2, 2)])
    per_sample = out.flatten(1).abs().sum(1)
    assert (per_sample == 0).any() and (per_sample > 0).any()  # whole samples dropped
    with pytest.raises(ValueError, match="drop-path"):
        net.set_drop_path(1.0)
