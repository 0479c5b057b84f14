from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.space import get_space, sample_architectures
from hwnas.space.encoding import ArchParameters, encode, encoding_layout, encoding_size


@pytest.mark.parametrize("name", ["tiny", "digits", "cifar"])
def test_layout_is_fixed_per_space(name):
    space = get_space(name)
    layout = encoding_layout(space)
    assert len(layout) == len(set(layout)) == encoding_size(space)
    for arch in sample_architectures(space, 0, 10):
        e = encode(arch)
        assert e.shape == (len(layout),) and e.dtype == np.float32
        assert set(np.unique(e)) <= {0.0, 1.0}
        # two edges per node of 5 cells, one depth per stage, two connections per cell
        cells = sum(s.depth for s in arch.stages)
        assert e.sum() == 5 * space.nodes * 2 + 3 + 2 * cells


def test_one_hot_and_argmax_of_relaxed_form_agree():
    space = get_space("tiny")
    for arch in sample_architectures(space, 5, 25):
        params = ArchParameters(space).set_from(arch, strength=12.0)
        assert params.derive() == arch
        relaxed = params.encode().detach().numpy()
        assert np.abs(relaxed - encode(arch)).max() < 1e-3
        assert np.array_equal(encode(params.derive()), encode(arch))


def test_relaxed_encoding_is_differentiable_and_in_range():
    space = get_space("tiny")
    params = ArchParameters(space, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    enc = params.encode()
    assert enc.shape == (encoding_size(space),)
    assert float(enc.detach().min()) >= 0.0 and float(enc.detach().max()) <= 1.0
    weights = torch.linspace(0, 1, enc.numel())
    (enc * weights).sum().backward()
    for group in (params.alpha, params.beta, params.depth, params.conn_alpha, params.conn_beta):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in group)
    derived = params.derive()
    assert derived.space == space  # a valid architecture of the space


def test_relaxed_edge_mass_is_two_edges_per_node_at_any_sharpness():
    """A sharpening beta must not lose edges: the latency term would under-count them."""
    from hwnas.space.encoding import _edge_weights

    gen = torch.Generator().manual_seed(1)
    for n in (2, 3, 4, 5):
        for scale in (0.0, 1.0, 3.0, 10.0, 30.0):
            w = _edge_weights(scale * torch.randn(64, n, generator=gen))
            assert torch.allclose(w.sum(-1), torch.full((64,), 2.0), atol=1e-5)
            assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0 + 1e-6
    space = get_space("tiny")
    params = ArchParameters(space, init_scale=10.0, generator=torch.Generator().manual_seed(2))
    relaxed = params.encode().detach().numpy()
    derived = encode(params.derive())
    cell_part = slice(0, 5 * 98)  # the five cells' edge blocks
    assert abs(relaxed[cell_part].sum() - derived[cell_part].sum()) < 1e-3


def test_a_chosen_input_can_be_displaced_by_the_loss():
    """No flat spot: with one input holding most of the mass (chosen), the loss still reaches
    its logit, and descending a loss that prefers another input makes the chosen one lose
    its place in the top two (the earlier relaxation's weight was the constant 1 there)."""
    from hwnas.space.encoding import _edge_weights

    beta = torch.tensor([3.0, 0.5, 0.0, -0.5], requires_grad=True)  # input 0 holds ~80 %
    assert float(torch.softmax(beta.detach(), -1)[0]) > 0.5
    w = _edge_weights(beta)
    # the loss of an edge on input 0, against input 3: the gradient on the chosen logit
    (w[0] - w[3]).backward()
    assert float(beta.grad[0]) > 1e-3
    assert float(beta.grad.abs().sum()) > 1e-3
    opt = torch.optim.Adam([beta], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        w = _edge_weights(beta)
        (w[0] - w[3]).backward()
        opt.step()
    top = set(torch.topk(torch.softmax(beta.detach(), -1), 2).indices.tolist())
    assert 0 not in top and 3 in top


def test_edge_weights_are_the_inclusion_probabilities_of_two_draws():
    """The relaxed edge weights are what `sample` draws (two inputs without replacement),
    exactly; stable at logits hundreds apart."""
    from hwnas.space.encoding import _edge_weights

    gen = torch.Generator().manual_seed(0)
    beta = 2.0 * torch.randn(5, generator=gen, dtype=torch.float64)
    p = torch.softmax(beta, -1)
    incl = [float(p[j] + sum(p[i] * p[j] / (1 - p[i]) for i in range(5) if i != j)) for j in range(5)]
    assert np.allclose(_edge_weights(beta).numpy(), incl, atol=1e-12)
    far = _edge_weights(torch.tensor([300.0, 300.0, 0.0, -300.0]))
    assert torch.isfinite(far).all() and torch.allclose(far, torch.tensor([1.0, 1.0, 0.0, 0.0]))
