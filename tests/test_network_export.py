from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hwnas.nets.network import build_network
from hwnas.nets.onnx_export import export_onnx
from hwnas.space import Architecture, get_space, sample_architectures


def _randomise_bn(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics, so the BN folding in the exporter is really tested."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


@pytest.mark.parametrize(
    "name", ["tiny", "digits", pytest.param("cifar", marks=pytest.mark.slow)]  # cifar: ~25 s
)
def test_fifty_random_architectures_export_and_match_onnxruntime(name, tmp_path):
    space = get_space(name)
    gen = torch.Generator().manual_seed(0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    worst = 0.0
    for i, arch in enumerate(sample_architectures(space, seed=123, n=50)):
        arch = Architecture.from_json(arch.to_json())  # validate through the JSON path
        net = build_network(arch)
        _randomise_bn(net, gen)
        net.eval()
        path = export_onnx(net, tmp_path / f"{i}.onnx")
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [1, *space.input_shape]  # static shape
        x = torch.randn(1, *space.input_shape, generator=gen)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        (y_ort,) = sess.run(None, {"input": x.numpy()})
        with torch.no_grad():
            y = net(x).numpy()
        assert y.shape == (1, space.num_classes)
        worst = max(worst, float(np.abs(y - y_ort).max()))
        path.unlink()
    assert worst <= 1e-4, f"max abs diff torch vs onnxruntime {worst:.2e}"


def test_every_depth_choice_builds():
    space = get_space("tiny")
    base = sample_architectures(space, 0, 1)[0]
    for depth in space.depth_choices:
        data = base.to_dict()
        for s in data["stages"]:
            s["depth"] = depth
            s["connections"] = [
                [["skip_connect", w[0]], ["avg_pool_3x3", w[-1]]]
                for w in (space.window_of(k) for k in range(depth))
            ]
        net = build_network(Architecture.from_dict(data)).eval()
        assert sum(len(st.cells) for st in net.stages) == 3 * depth
        assert net(torch.randn(2, *space.input_shape)).shape == (2, space.num_classes)


def test_export_batch_size_and_atomic_write(tmp_path):
    arch = sample_architectures(get_space("tiny"), 1, 1)[0]
    out = export_onnx(arch, tmp_path / "sub" / "m.onnx", batch_size=4)
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.onnx"]  # no temp files left
