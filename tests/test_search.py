"""The search: relaxations, supernet, bilevel steps, derive + collapse guard, run directory,
bad input, the budget band, and resume after kill -9 (same architecture as uninterrupted)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from searchkit import make_predictor

from hwnas.data.datasets import load_dataset
from hwnas.nets.ops import Zero
from hwnas.search import SearchConfig, Searcher, run_search
from hwnas.search.derive import PARAM_FREE_OPS, derive, param_free_share
from hwnas.search.latency import LatencyTerm
from hwnas.search.relax import relax
from hwnas.space import CELL_OPS, NUM_STAGES, SpaceConfig, get_space, load_architecture
from hwnas.space.encoding import ArchParameters
from predictor import load_predictor
from targets.basics import UserError

DIGITS = get_space("digits")
# A small space for step-level tests: the digits input, 2 nodes, depths 1-2.
MICRO = SpaceConfig(
    name="micro", in_channels=1, input_size=8, num_classes=10, channels=4,
    depth_choices=(1, 2), nodes=2, stem_multiplier=2,
)
FAST = dict(space="digits", dataset="digits", mode="sampled", search_channels=4, subset=64, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_predictor(tmp_path_factory.mktemp("pred"), DIGITS)


def _micro_searcher(**kw) -> Searcher:
    cfg = SearchConfig(space="micro", mode=kw.pop("mode", "full"), batch_size=8, epochs=2, **kw)
    data = load_dataset("digits", MICRO, subset=48, seed=0)
    return Searcher(cfg, MICRO, data)


def _batch(s: Searcher, half, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return s._batch(half, torch.arange(n))


# -- relaxations and supernet ------------------------------------------------------------------
def test_full_relaxation_is_the_encodings_relaxation() -> None:
    alpha = ArchParameters(DIGITS, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    r = relax(alpha, "full")
    enc = alpha.encode()
    n_cell_entries = sum(b.weights.numel() for c in r.cells for b in c)
    flat = torch.cat([b.weights.reshape(-1) for c in r.cells for b in c])
    assert torch.allclose(flat, enc[:n_cell_entries])
    for s in range(NUM_STAGES):
        assert torch.allclose(r.exits[s], torch.softmax(alpha.depth[s], -1))
        assert r.run_depth[s] == DIGITS.max_depth
    assert all(len(b.active) == b.weights.numel() for c in r.cells for b in c)


@pytest.mark.parametrize("k", [1, 2])
def test_sampled_relaxation_draws_two_inputs_k_distinct_ops_one_exit(k: int) -> None:
    alpha = ArchParameters(DIGITS, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    r = relax(alpha, "sampled", k=k, tau=1.0, generator=torch.Generator().manual_seed(1))
    for c in r.cells:
        for b in c:
            inputs = {j for j, _ in b.active}
            assert len(inputs) == 2 and len(b.active) == 2 * k
            for j in inputs:  # K distinct ops per input, each of forward weight 1/K
                ops = [o for jj, o in b.active if jj == j]
                assert len(set(ops)) == k
                for o in ops:
                    assert float(b.weights[j, o].detach()) == pytest.approx(1.0 / k, abs=1e-6)
    for s in range(NUM_STAGES):
        assert len(r.active_exits[s]) == 1 and float(r.exits[s].detach().sum()) == pytest.approx(1.0)
    # straight-through: the hard forward still carries a gradient to every kind of logit
    loss = sum(b.weights.sum() * (j + 1) for c in r.cells for b in c for j, _ in b.active[:1])
    loss = loss + sum((e * torch.arange(3.0)).sum() for e in r.exits)
    loss.backward()
    for kind in ("alpha", "beta", "depth"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(alpha, kind))


def test_supernet_reads_every_logit_and_reuses_the_deploy_ops() -> None:
    s = _micro_searcher()
    x, y = _batch(s, s.a_half)
    F.cross_entropy(s.model.net(x, relax(s.alpha, "full")), y).backward()
    for kind in ("alpha", "beta", "depth", "conn_alpha", "conn_beta"):
        for p in getattr(s.alpha, kind):
            if p.numel() > 2 or kind in ("alpha", "conn_alpha", "depth"):
                assert p.grad is not None and p.grad.abs().sum() > 0, kind
    mods = list(s.model.net.modules())
    assert not any(isinstance(m, Zero) for m in mods)  # beta alone selects inputs
    import hwnas.nets.ops as ops

    kinds = {type(m) for m in mods if type(m).__module__ == "hwnas.nets.ops"}
    assert {ops.SepConv, ops.DilConv, ops.PoolBN, ops.Identity, ops.FactorizedReduce} <= kinds
    cells = list(s.model.net.stages.modules()) + list(s.model.net.reductions.modules())
    assert all(not m.affine for m in cells if isinstance(m, torch.nn.BatchNorm2d))  # search BN
    # the alpha logits are not weights of the supernet (separate optimisers)
    assert not {id(p) for p in s.model.weights()} & {id(p) for p in s.model.arch_parameters()}


@pytest.mark.parametrize("resolution, seen", [(None, 32), (8, 8), (16, 16)])
def test_search_resolution_is_the_supernets_input_size_only(resolution: int | None, seen: int) -> None:
    """A proxy input size changes what the supernet's stem sees, not the searched space."""
    from hwnas.search.supernet import SearchModel

    alpha = ArchParameters(DIGITS, generator=torch.Generator().manual_seed(0))
    model = SearchModel(alpha, 4, resolution)
    shapes: list[tuple[int, ...]] = []
    model.net.stem_conv.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    out = model.net(torch.randn(2, 1, 8, 8), relax(alpha, "full"))
    assert shapes == [(2, 1, seen, seen)] and out.shape == (2, 10)
    assert alpha.encode().shape == ArchParameters(DIGITS).encode().shape
    with pytest.raises(UserError, match="--search-resolution"):
        SearchConfig(space="digits", search_resolution=2).check()


def test_sampled_mode_skips_cells_past_the_drawn_exit() -> None:
    s = _micro_searcher(mode="sampled")
    with torch.no_grad():
        s.alpha.depth[0].copy_(torch.tensor([30.0, -30.0]))  # depth 1 almost surely
    calls: list[int] = []
    cells = s.model.net.stages[0].cells
    hooks = [c.cell.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, c in enumerate(cells)]
    x, _ = _batch(s, s.a_half)
    s.model.net(x, relax(s.alpha, "sampled", generator=torch.Generator().manual_seed(0)))
    for h in hooks:
        h.remove()
    assert calls == [0]


def _grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params, strict=True)]


# -- bilevel steps ---------------------------------------------------------------------------
def test_first_order_arch_step_differentiates_the_current_weights() -> None:
    """H-DAS's first-order code takes the gradient on a copy of the network made once at the
    start; ours must see the weights as the weight steps leave them."""
    s = _micro_searcher()
    xv, yv = _batch(s, s.a_half)
    xt, yt = _batch(s, s.w_half)
    initial = copy.deepcopy(s.model.net)
    for _ in range(3):
        s.weight_step(xt, yt)
    grads, _, _ = s.arch_gradient(xv, yv)
    # the same gradient as a fresh autograd pass on the current weights...
    expected = _grad(s.arch_loss(s.model.net(xv, relax(s.alpha, "full")), yv)[0], s.model.arch_parameters())
    for g, e in zip(grads, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-7)
    # ...and not the gradient at the initial weights (so this test can fail)
    stale = _grad(s.arch_loss(initial(xv, relax(s.alpha, "full")), yv)[0], s.model.arch_parameters())
    gap = max(float((g - st).abs().max()) for g, st in zip(grads, stale, strict=True))
    assert gap > 1e-4


def test_second_order_reduces_to_first_order_at_zero_learning_rate_and_differs_otherwise() -> None:
    s1 = _micro_searcher(second_order=True, w_lr=0.0, w_lr_min=0.0)
    s0 = _micro_searcher()
    xv, yv = _batch(s1, s1.a_half)
    xt, yt = _batch(s1, s1.w_half)
    g2, _, _ = s1.arch_gradient(xv, yv, xt, yt)
    g1, _, _ = s0.arch_gradient(xv, yv)
    for a, b in zip(g2, g1, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
    s2 = _micro_searcher(second_order=True, w_lr=0.5)
    g3, _, _ = s2.arch_gradient(xv, yv, xt, yt)
    assert max(float((a - b).abs().max()) for a, b in zip(g3, g1, strict=True)) > 1e-5


def test_optimiser_defaults_are_dartss_and_hdass() -> None:
    cfg = SearchConfig(space="digits")
    assert (cfg.w_lr, cfg.w_lr_min, cfg.w_momentum, cfg.w_weight_decay, cfg.w_grad_clip) == (0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (cfg.a_lr, tuple(cfg.a_betas), cfg.a_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    assert not cfg.second_order
    # H-DAS's price of a cell in its schedule; joint leaves depth to the CE and the latency term
    assert SearchConfig(space="digits", schedule="hdas").depth_weight == 0.4
    assert SearchConfig(space="digits", schedule="joint").depth_weight == 0.0
    assert SearchConfig(space="digits", schedule="joint", depth_penalty=0.2).to_json()["depth_penalty"] == 0.2


def test_depth_penalty_is_weight_times_expected_cells() -> None:
    s = _micro_searcher(depth_penalty=0.4)
    with torch.no_grad():
        for p in s.alpha.depth:
            p.copy_(torch.tensor([0.0, 0.0]))
    assert float(s.depth_loss().detach()) == pytest.approx(0.4 * NUM_STAGES * 1.5)
    s.depth_loss().backward()
    assert all(float(p.grad[1]) > 0 > float(p.grad[0]) for p in s.alpha.depth)  # deeper costs more


# -- derive and the collapse guard -------------------------------------------------------------
def test_collapse_guard_caps_parameter_free_edges_per_cell() -> None:
    alpha = ArchParameters(DIGITS, init_scale=0.0)
    with torch.no_grad():
        for p in alpha.alpha:  # a collapsed search: skip everywhere, sep_conv_3x3 second
            p[:, CELL_OPS.index("skip_connect")] = 5.0
            p[:, CELL_OPS.index("sep_conv_3x3")] = 1.0
    raw, none = derive(alpha, None)
    assert param_free_share(raw) == 1.0 and none == []
    arch, log = derive(alpha, 2)
    for g in [st.cell for st in arch.stages] + list(arch.reductions):
        ops = [op for node in g for op, _ in node]
        assert sum(op in PARAM_FREE_OPS for op in ops) == 2
        assert ops.count("sep_conv_3x3") == len(ops) - 2
    assert param_free_share(arch) == pytest.approx(2 / 8)
    assert len(log) == 5 * 6 and "skip_connect" in log[0] and "sep_conv_3x3" in log[0]


# -- the run directory, CLI, bad input --------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_cli_search_writes_the_run_directory(cli, predictor: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-weight", "0.5",
        "--search-channels", "4", "--epochs", "2", "--subset", "64", "--batch-size", "16", "--mode", "sampled",
        "--out", out, "--no-progress", "--seed", "3", "--search-resolution", "8", "--arch-lr", "0.003",
    )
    assert code == 0, err
    assert "search done" in stdout and "epoch 2/2" in err
    assert {"config.json", "log.csv", "checkpoint.pt", "architecture.json", "summary.json"} <= set(os.listdir(out))
    arch = load_architecture(out / "architecture.json")  # validates
    summary = json.loads((out / "summary.json").read_text())
    for key in ("predicted_latency_ms", "val_accuracy", "epochs", "seed", "mode", "latency_weight"):
        assert key in summary
    assert summary["epochs"] == 2 and summary["seed"] == 3 and summary["mode"] == "sampled"
    assert json.loads((out / "config.json").read_text())["search"]["mode"] == "sampled"
    assert summary["architecture_hash"] == arch.hash
    lines = (out / "log.csv").read_text().splitlines()
    header = lines[0].split(",")
    for col in ("w_loss", "a_loss", "train_acc", "val_acc", "relaxed_ms", "derived_ms", "latency_weight",
                "depth_stage0", "depth_stage2", "param_free_share", "seconds"):
        assert col in header
    assert len(lines) == 3
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 2 and len(ck["rows"]) == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["search"]["latency_weight"] == 0.5 and cfg["resolved"]["latency"]["latency0_ms"] > 0
    assert cfg["resolved"]["search_resolution"] == 8 and cfg["search"]["a_lr"] == 0.003
    # DARTS's argmax and the guard by default; the run's latency price is recorded
    assert cfg["search"]["derive"] == "argmax" and summary["derive"] == "argmax"
    assert summary["latency_price_per_ms"] == pytest.approx(0.5 / cfg["resolved"]["latency"]["latency0_ms"])
    assert summary["priced_changes"] == [] and isinstance(summary["collapse_guard"], list)
    # the same run again without --resume is refused, and nothing changes
    before = _snapshot(out)
    code, _, err = cli("search", "--space", "digits", "--predictor", predictor, "--epochs", "2", "--out", out)
    assert code == 2 and "--resume" in err and _snapshot(out) == before
    # --resume with another config: refused, named, nothing changes
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-weight", "0.9",
        "--search-channels", "4", "--epochs", "2", "--subset", "64", "--batch-size", "16", "--mode", "sampled",
        "--out", out, "--resume", "--seed", "3",
    )
    assert code == 2 and "another config" in err and "latency_weight" in err and _snapshot(out) == before
    # a corrupted checkpoint: one clear message, the file left as it was
    (out / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    before = _snapshot(out)
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-weight", "0.5",
        "--search-channels", "4", "--epochs", "2", "--subset", "64", "--batch-size", "16", "--mode", "sampled",
        "--out", out, "--resume", "--seed", "3", "--search-resolution", "8", "--arch-lr", "0.003",
    )
    assert code == 2 and "not a readable search checkpoint" in err and "checkpoint.pt" in err and _snapshot(out) == before
    assert len(err.strip().splitlines()) == 1


def test_cli_search_derive_priced_is_never_slower_than_the_argmax_of_its_logits(
    cli, predictor: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-weight", "8", "--derive", "priced",
        "--search-channels", "4", "--epochs", "1", "--subset", "64", "--batch-size", "16", "--out", out,
        "--no-progress", "--seed", "1", "--search-resolution", "8", "--arch-lr", "0.003",
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["derive"] == "priced" and all(line.startswith("latency price") for line in summary["priced_changes"])
    alpha = ArchParameters(DIGITS)
    alpha.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["alpha"])
    term = LatencyTerm(load_predictor(predictor), DIGITS)
    argmax_ms = term.derived_ms(derive(alpha, 2)[0])
    assert summary["predicted_latency_ms"] <= argmax_ms + 1e-6
    assert (summary["predicted_latency_ms"] < argmax_ms - 1e-6) == bool(summary["priced_changes"])


def test_bad_input_is_refused_before_the_run_directory_is_touched(cli, predictor: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-weight", "1",
        "--latency-budget", "2", "--epochs", "1", "--out", out,
    )
    assert code == 2 and "both given" in err and not out.exists()
    code, _, err = cli("search", "--space", "digits", "--predictor", predictor, "--derive", "best", "--epochs", "1",
                       "--out", out)
    assert code == 2 and "--derive" in err and "priced" in err and not out.exists()
    code, _, err = cli("search", "--space", "digits", "--predictor", predictor, "--derive", "priced", "--epochs", "1",
                       "--out", out)
    assert code == 2 and "--latency-weight" in err and not out.exists()
    with pytest.raises(UserError, match="both given"):
        SearchConfig(space="digits", predictor=str(predictor), latency_weight=1, latency_budget_ms=2).check()
    # a predictor fitted on another space
    code, _, err = cli("search", "--space", "tiny", "--predictor", predictor, "--epochs", "1", "--out", out)
    assert code == 2 and "space" in err and not out.exists()
    # a predictor fitted for another target
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--target", "trt-fp16", "--epochs", "1", "--out", out
    )
    assert code == 2 and "target" in err and not out.exists()
    # a budget out of reach: the range is in the message
    code, _, err = cli(
        "search", "--space", "digits", "--predictor", predictor, "--latency-budget", "0.01", "--epochs", "1", "--out", out
    )
    assert code == 2 and "out of reach" in err and " ms" in err and not out.exists()
    # a dataset of the wrong shape for the space (3 channels; digits takes 1), an empty one
    import numpy as np

    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((20, 8, 8, 3), np.float32), y=np.arange(20) % 10)
    code, _, err = cli(
        "search", "--space", "digits", "--dataset", f"npz:{rgb}", "--predictor", predictor, "--epochs", "1",
        "--out", out,
    )
    assert code == 2 and "channel" in err and not out.exists()
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 8, 8), np.float32), y=np.zeros(0, np.int64))
    code, _, err = cli(
        "search", "--space", "digits", "--dataset", f"npz:{empty}", "--predictor", predictor, "--epochs", "1",
        "--out", out,
    )
    assert code == 2 and "empty" in err and not out.exists()
    # --resume with nothing to resume
    code, _, err = cli("search", "--space", "digits", "--predictor", predictor, "--epochs", "1", "--out", out, "--resume")
    assert code == 2 and "no search run" in err and not out.exists()


def test_out_holding_a_train_or_main_job_run_is_named_not_offered_resume(cli, predictor: Path, tmp_path: Path) -> None:
    """Issue 21: a train run and an `hwnas run` directory as --out both read as 'a search run;
    continue it with --resume', advice that then failed."""
    from hwnas.mainjob.config import MainJobConfig

    main_old = {k: v for k, v in MainJobConfig(out=tmp_path / "r1").to_json().items() if k != "kind"}
    dirs = {
        "a train run (hwnas train)": {"kind": "train", "schema": "hwnas.train/1", "arch_hash": "ab", "config": {}},
        "a main-job run (hwnas run)": main_old,  # written before config.json carried its kind
    }
    for i, (what, config) in enumerate(dirs.items()):
        out = tmp_path / f"r{i}"
        out.mkdir()
        (out / "config.json").write_text(json.dumps(config))
        before = _snapshot(out)
        for extra in ((), ("--resume",)):
            code, _, err = cli("search", "--space", "digits", "--predictor", predictor, "--epochs", "1", "--out", out, *extra)
            assert code == 2 and f"holds {what}, not a search run; choose another --out" in err, err
            assert "--resume" not in err.split("not a search run")[1] and _snapshot(out) == before


def test_budget_run_lands_in_the_band(predictor: Path) -> None:
    from hwnas.search.discrete import reachable_range
    from hwnas.search.latency import LatencyTerm
    from predictor import load_predictor

    term = LatencyTerm(load_predictor(predictor), DIGITS)
    lo, hi = reachable_range(term, seed=0)
    budget = lo + 0.35 * (hi - lo)
    res = run_search(SearchConfig(**FAST, predictor=str(predictor), latency_budget_ms=budget, epochs=1), None, progress=False)
    got = res.summary["predicted_latency_ms"]
    assert budget * 0.95 <= got <= budget * 1.05
    assert got == pytest.approx(term.derived_ms(res.architecture))
    assert res.summary["latency_budget_ms"] == budget and "latency_weight" not in res.summary
    assert res.summary["repair"] and "band" in res.summary["repair"][0]


# -- resume after kill -9 ----------------------------------------------------------------------
def _cli_argv(predictor: Path, out: Path, epochs: int) -> list[str]:
    return [
        "search", "--space", "digits", "--predictor", str(predictor), "--latency-weight", "0.3",
        "--search-channels", "4", "--epochs", str(epochs), "--subset", "64", "--batch-size", "16", "--mode", "sampled",
        "--out", str(out), "--seed", "5", "--threads", "1", "--no-progress",
    ]


@pytest.mark.slow  # ~15-19 s
def test_resume_after_kill_9_ends_with_the_uninterrupted_architecture(predictor: Path, tmp_path: Path) -> None:
    epochs = 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = tmp_path / "full"  # uninterrupted, in this process (one thread, as the CLI runs)
    cfg = SearchConfig(**{**FAST, "seed": 5}, predictor=str(predictor), latency_weight=0.3, epochs=epochs)
    run_search(cfg, full, progress=False)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", *_cli_argv(predictor, cut, epochs)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cut / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists()
    done = torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= done < epochs
    subprocess.run([sys.executable, "-m", "hwnas", *_cli_argv(predictor, cut, epochs), "--resume"], check=True,
                   env=env, capture_output=True)
    assert (cut / "architecture.json").read_text() == (full / "architecture.json").read_text()
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    for k, v in a["alpha"].items():
        assert torch.equal(v, b["alpha"][k]), k
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a["rows"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in b["rows"]
    ]


def test_sampled_all_inputs_draws_one_op_on_every_input_weighted_by_beta() -> None:
    """GDAS's variant (--all-inputs): every candidate input is computed, each through its own
    drawn op, weighted by the soft edge weights (so beta gets an exact gradient)."""
    alpha = ArchParameters(DIGITS, init_scale=1.0, generator=torch.Generator().manual_seed(0))
    r = relax(alpha, "sampled", k=1, tau=1.0, generator=torch.Generator().manual_seed(1), sample_inputs=False)
    full = relax(alpha, "full")
    for c, cf in zip(r.cells, full.cells, strict=True):
        for b, bf in zip(c, cf, strict=True):
            n_in = b.weights.shape[0]
            assert sorted(j for j, _ in b.active) == list(range(n_in))  # one op per input
            for j, o in b.active:  # forward weight = the full relaxation's edge weight
                assert float(b.weights[j, o].detach()) == pytest.approx(float(bf.weights[j].sum().detach()), rel=1e-5)
    loss = sum(b.weights[j, o] * (j + 1) for c in r.cells for b in c for j, o in b.active)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in alpha.beta)
    s = _micro_searcher(mode="sampled", sample_inputs=False)
    x, _ = _batch(s, s.w_half)
    assert s.model.net(x, s.relaxed()).shape == (8, 10)
