"""The relaxed encoding's meaning: the expected latency of the architectures drawn from the
same logits (`ArchParameters.sample`), and a predictor calibrated to it."""

from __future__ import annotations

import numpy as np
import torch

from hwnas.encoding import ArchParameters, encode, encoding_layout
from hwnas.space import NUM_CELL_INPUTS, get_space, sample_architectures

SPACE = get_space("tiny")


def _params(scale: float, seed: int) -> ArchParameters:
    return ArchParameters(SPACE, init_scale=scale, generator=torch.Generator().manual_seed(seed))


def test_sample_is_a_valid_architecture_and_matches_the_vectorised_draw() -> None:
    params = _params(1.0, 0)
    for seed in range(6):
        arch = params.sample(torch.Generator().manual_seed(seed))
        assert arch.space == SPACE
        for stage in arch.stages:
            assert len(stage.connections) == stage.depth
        for g in [s.cell for s in arch.stages] + list(arch.reductions):
            for node in g:
                assert node[0][1] < node[1][1]  # two distinct inputs, in index order
        row = params.sample_encodings(1, torch.Generator().manual_seed(seed))[0]
        assert np.array_equal(encode(arch), row.numpy())
    a = params.sample_encodings(5, torch.Generator().manual_seed(3))
    b = params.sample_encodings(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_sample_at_a_vertex_is_the_vertex() -> None:
    for arch in sample_architectures(SPACE, 4, 5):
        params = ArchParameters(SPACE).set_from(arch, strength=40.0)
        assert params.sample(torch.Generator().manual_seed(0)) == arch


def test_draw_frequencies_follow_the_logits() -> None:
    """Ops and depth by softmax; inputs without replacement in proportion to softmax(beta)."""
    params = _params(1.5, 1)
    n = 20000
    draws = params.sample_encodings(n, torch.Generator().manual_seed(2)).double()
    mean = draws.mean(0).numpy()
    layout = encoding_layout(SPACE)
    tol = 4 * np.sqrt(0.25 / n)  # four standard errors of a frequency
    # depth of stage 1
    idx = [i for i, name in enumerate(layout) if name.startswith("stage1.depth.")]
    assert np.allclose(mean[idx], torch.softmax(params.depth[1], -1).detach().numpy(), atol=tol)
    # node 2 of reduction 0: inclusion probability of each input (successive draws of two)
    k = 2
    p = torch.softmax(params.beta[params._node(3, k)], -1).double().detach().numpy()
    incl = p + np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(len(p)) if i != j) for j in range(len(p))])
    names = [f"reduction0.cell.node{k}.in{j}." for j in range(NUM_CELL_INPUTS + k)]
    got = [mean[[i for i, nm in enumerate(layout) if nm.startswith(pre)]].sum() for pre in names]
    assert np.allclose(got, incl, atol=tol)
    # ops on input 0 of that node, given it was drawn
    ops = [i for i, nm in enumerate(layout) if nm.startswith(names[0])]
    alpha = torch.softmax(params.alpha[params._node(3, k)][0], -1).double().detach().numpy()
    assert np.allclose(mean[ops] / incl[0], alpha, atol=3 * tol)
    # every node draws exactly two inputs; a stage's cell slots exist as deep as the depth
    assert float(draws.sum(1).min()) >= 5 * SPACE.nodes * 2 + 3 + 2 * 3


def test_relaxed_encoding_is_the_draws_mean_at_the_centre() -> None:
    """At the centre inclusion probabilities are exactly 2/n, so encode() is E[one-hot]."""
    params = _params(1e-3, 5)
    draws = params.sample_encodings(20000, torch.Generator().manual_seed(6)).double()
    assert np.allclose(draws.mean(0).numpy(), params.encode().detach().double().numpy(), atol=0.02)
