"""The relaxed encoding's meaning: the expected latency of the architectures drawn from the
same logits (`ArchParameters.sample`), and a predictor calibrated to it."""

from __future__ import annotations

import json

import numpy as np
import torch

from hwnas.space import NUM_CELL_INPUTS, get_space, sample_architectures
from hwnas.space.encoding import ArchParameters, encode, encoding_layout

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


# -- the calibrated latency loss ---------------------------------------------------------------
def _nonlinear_predictor(seed: int = 0):
    """A predictor made deliberately nonlinear (a random tanh MLP with large weights on the
    tiny layout's count features): f(E[x]) and E[f(x)] differ by several percent."""
    from predictor.features import build_feature_layout
    from predictor.model import LatencyPredictor, MLPConfig

    layout = build_feature_layout(encoding_layout(SPACE))
    model = LatencyPredictor(layout, MLPConfig(members=1, hidden=(24,), activation="tanh"))
    gen = torch.Generator().manual_seed(seed)
    X = torch.stack([torch.as_tensor(encode(a)) for a in sample_architectures(SPACE, 11, 200)])
    f = X @ model.feature_matrix
    std = f.std(0)
    model.set_normalisation(f.mean(0).numpy(), torch.where(std > 0, std, 1.0).numpy(), 2.0)
    with torch.no_grad():
        w0, w1 = model.weights
        w0.copy_(torch.randn(w0.shape, generator=gen) * 0.15)
        model.biases[0].copy_(torch.randn(model.biases[0].shape, generator=gen))
        w1.copy_(torch.randn(w1.shape, generator=gen).abs() * 0.1)
        model.biases[1].fill_(0.5)
    model.eval()
    model.requires_grad_(False)
    return model


def test_calibration_makes_relaxed_prediction_the_expected_latency() -> None:
    from hwnas.search.predictor_check import calibrate_predictor, relaxed_calibration

    model = _nonlinear_predictor()
    judge = {"scales": (0.0, 1.0, 10.0), "n": 20, "samples": 48, "seed": 7}
    before = relaxed_calibration(model, SPACE, **judge)
    onehot = torch.stack([torch.as_tensor(encode(a)) for a in sample_architectures(SPACE, 2, 50)])
    discrete = model(onehot)
    assert abs(before[0]["mean_gap"]) > 0.02, before[0]  # the test can see a miscalibration

    report = calibrate_predictor(model, SPACE, points=180, samples=48, seed=0)
    assert report["n_points"] == 180 and abs(report["val_mean_gap_after"]) < abs(report["val_mean_gap_before"])
    after = relaxed_calibration(model, SPACE, **judge)  # seeds the fit never saw
    assert torch.equal(model(onehot), discrete)  # one-hot predictions unchanged, bit for bit
    for b, a in zip(before, after, strict=True):
        print(
            f"scale {a['scale']}: mean gap {b['mean_gap']:+.4f} -> {a['mean_gap']:+.4f}, "
            f"median abs gap {b['median_abs_gap']:.4f} -> {a['median_abs_gap']:.4f}"
        )
        assert abs(a["mean_gap"]) < 0.02, a
        # per relaxation: includes the 48-draw mean's own noise (a few % for this function)
        assert a["median_abs_gap"] < max(0.03, b["median_abs_gap"]), a
    assert abs(after[0]["mean_gap"]) < abs(before[0]["mean_gap"]) / 3
    assert after[-1]["spearman"] > 0.9


def test_fit_cli_stores_the_correction_and_old_files_still_load(tmp_path, cli) -> None:
    from test_predictor_search_api import _store

    from predictor.io import load_predictor, read_header

    db = tmp_path / "tiny.db"
    _store(db, n=100)
    common = ("--db", db, "--target", "ort-cpu", "--no-baselines", "--members", "1", "--max-epochs", "5")
    out = tmp_path / "cal.pt"
    code, stdout, err = cli(
        "predictor", "fit", *common, "--out", out, "--relaxed-points", "36", "--relaxed-samples", "8"
    )
    assert code == 0, err
    assert "relaxed encodings: calibrated" in stdout
    model = load_predictor(out)
    assert model.header["relaxed_correction"]["n_points"] == 36
    assert float(model.relax_w.abs().sum()) > 0

    plain = tmp_path / "plain.pt"
    code, _, err = cli("predictor", "fit", *common, "--out", plain, "--relaxed-points", "0")
    assert code == 0, err
    assert load_predictor(plain).header["relaxed_correction"] is None
    assert float(load_predictor(plain).relax_w.abs().sum()) == 0

    # a file written before the correction existed: no relax_w tensor; loads uncalibrated
    header, state = read_header(plain)
    state.pop("relax_w")
    torch.save({"header": json.dumps(header), "state_dict": state}, tmp_path / "old.pt")
    old = load_predictor(tmp_path / "old.pt")
    X = torch.stack([torch.as_tensor(encode(a)) for a in sample_architectures(SPACE, 1, 4)])
    assert torch.equal(old(X), load_predictor(plain)(X))
