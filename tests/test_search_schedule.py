"""Schedules (`--schedule hdas|joint`): H-DAS's phases hold what they do not search, resume
finds its phase, bad input is refused; and a depth the gradient can move in `joint`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from searchkit import make_predictor
from test_search import MICRO, _batch, _snapshot

from hwnas.data.datasets import load_dataset
from hwnas.search import SearchConfig, Searcher, run_search
from hwnas.search import schedule as S
from hwnas.search.latency import WeightedLatency
from hwnas.space import NUM_STAGES, STAGE_OPS, get_space, sample_architectures
from hwnas.space.encoding import ArchParameters, encode

DIGITS = get_space("digits")
FAST = dict(space="digits", dataset="digits", search_channels=4, subset=64, batch_size=16, search_resolution=8,
            a_lr=3e-3, seed=0)


def _searcher(phase_name: str = "joint", cells=None, **kw) -> Searcher:
    schedule = "joint" if phase_name == "joint" else "hdas"
    cfg = SearchConfig(space="micro", schedule=schedule, batch_size=8, epochs=2, **kw)
    data = load_dataset("digits", MICRO, subset=48, seed=0)
    phase = next(p for p in S.phases(schedule, cfg.epochs) if p.name == phase_name)
    return Searcher(cfg, MICRO, data, phase=phase, cells=cells)


def _values(ps) -> list[torch.Tensor]:
    return [p.detach().clone() for p in ps]


def test_phases_split_the_epochs_and_the_chain_is_darts_8_layers() -> None:
    a, b = S.phases("hdas", 5)
    assert (a.name, a.epochs, a.train_cells, a.train_stages) == ("cells", 3, True, False)
    assert (b.name, b.epochs, b.first_epoch, b.train_cells, b.depth_objective) == ("stages", 2, 3, False, "hdas")
    (j,) = S.phases("joint", 5)
    assert j.epochs == 5 and j.train_cells and j.train_stages
    assert S.chain_depth(DIGITS) == 2 and S.chain_depth(get_space("cifar")) == 4  # nearest 2 it allows


def test_cells_phase_searches_cells_in_a_fixed_chain() -> None:
    s = _searcher("cells")
    r = s.relaxed()
    skip = STAGE_OPS.index("skip_connect")
    for st in range(NUM_STAGES):  # every stage at 2 cells, each fed the previous two states by skip
        assert r.run_depth[st] == 2 and r.active_exits[st] == [MICRO.depth_choices.index(2)]
        for k in range(2):
            start = MICRO.window_of(k).start
            assert r.slots[st][k].active == [(k - start, skip), (k + 1 - start, skip)]
    stage_before = _values(list(s.alpha.depth) + list(s.alpha.conn_alpha) + list(s.alpha.conn_beta))
    cell_before = _values(list(s.alpha.alpha) + list(s.alpha.beta))
    xv, yv = _batch(s, s.a_half)
    for _ in range(2):
        s.arch_step(xv, yv)
    after = list(s.alpha.depth) + list(s.alpha.conn_alpha) + list(s.alpha.conn_beta)
    assert all(torch.equal(a, b) for a, b in zip(stage_before, after, strict=True))  # held
    assert any(not torch.equal(a, b) for a, b in zip(cell_before, list(s.alpha.alpha) + list(s.alpha.beta), strict=True))


def test_stages_phase_holds_the_cells_one_hot_and_takes_hdas_depth_step() -> None:
    cells = sample_architectures(MICRO, 3, 1)[0]
    s = _searcher("stages", cells=cells)
    n_cell = sum(p.numel() for p in list(s.alpha.alpha))  # cell block of the encoding: alpha's layout
    enc = s.alpha.encode().detach()
    assert torch.allclose(enc[:n_cell], torch.as_tensor(encode(cells))[:n_cell], atol=1e-6)
    r = s.relaxed()
    assert all(len(b.active) == 2 for c in r.cells for b in c)  # only the genotype's ops run
    held = _values(list(s.alpha.alpha) + list(s.alpha.beta))
    depth0 = _values(s.alpha.depth)
    xv, yv = _batch(s, s.a_half)
    _, parts = s.arch_step(xv, yv)
    assert "depth_objective" in parts
    assert all(torch.equal(a, b) for a, b in zip(held, list(s.alpha.alpha) + list(s.alpha.beta), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(depth0, s.alpha.depth, strict=True))
    arch = s.alpha.derive()
    assert [st.cell for st in arch.stages] == [st.cell for st in cells.stages] and arch.reductions == cells.reductions


def test_hdas_depth_is_cal_depth() -> None:
    """H-DAS's cal_depth, transcribed for window 3 and depth choices 1..3 at uniform logits."""
    alpha = ArchParameters(DIGITS, init_scale=0.0)
    d = [0.0, 0.0, 0.5]  # cell 0: mean over its 2 inputs of (0 + 1) / 2 ... x (1 + 0 p1)
    d.append((1 + 1 + 1.5) / 3 / 3 * (1 + 1 / 3))  # cell 1: window 0..2, x (1 + 1 P(depth 2))
    d.append((1 + 1.5 + 1 + d[3]) / 3 / 3 * (1 + 2 / 3))  # cell 2: window 1..3, x (1 + 2 P(depth 3))
    assert float(S.hdas_depth(alpha, 0).detach()) == pytest.approx(sum(d) / 3, rel=1e-5)
    loss = S.hdas_depth_loss(alpha, 0.4)
    assert float(loss.detach()) == pytest.approx(-3 * sum(d) / 3 + 0.4 * 3 * 2.0, rel=1e-5)


# -- a depth the gradient can move (joint) ---------------------------------------------------------
class DeepTask(Searcher):
    """A task on which the deeper stage helps, standing in for the CE: 0.3 x P(depth 1) per
    stage, whose gradient on the depth logits (0.075 at uniform logits) is the size measured
    for the CE's on digits (0.007-0.10, docs/benchmarks.md); deterministic, so the test
    checks the objective's balance, not a training run."""

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.3 * sum(self.alpha.depth_probs(s)[0] for s in range(NUM_STAGES)) + 0.0 * logits.sum()


class CellCost:
    """A latency term that prices depth: 0.5 ms + 0.25 ms per expected cell."""

    latency0_ms = 0.5 + 0.25 * 1.5 * NUM_STAGES

    def predicted_ms(self, alpha: ArchParameters) -> torch.Tensor:
        return 0.5 + 0.25 * S.expected_cells(alpha)

    def derived_ms(self, arch) -> float:
        return 0.5 + 0.25 * sum(st.depth for st in arch.stages)


def _depths_after(steps: int, latency_weight: float | None = None, **kw) -> list[int]:
    cfg = SearchConfig(space="micro", batch_size=8, epochs=2, a_lr=0.1, **kw)
    data = load_dataset("digits", MICRO, subset=48, seed=0)
    term = CellCost() if latency_weight is not None else None
    penalty = WeightedLatency(term, latency_weight) if term is not None else None  # type: ignore[arg-type]
    s = DeepTask(cfg, MICRO, data, term, penalty)
    xv, yv = _batch(s, s.a_half, 2)
    for _ in range(steps):
        s.arch_step(xv, yv)
    return [st.depth for st in s.alpha.derive().stages]


def test_joint_depth_follows_the_task_and_the_latency_not_the_penalty() -> None:
    assert _depths_after(10) == [2, 2, 2]  # the deeper stage helps: chosen
    assert _depths_after(10, latency_weight=5.0) == [1, 1, 1]  # latency priced high: fewer
    # H-DAS's 0.4 x expected cells alone outweighs the task: the minimum everywhere
    assert _depths_after(10, depth_penalty=0.4) == [1, 1, 1]


# -- run directory, resume, bad input -------------------------------------------------------------
@pytest.mark.slow
def test_hdas_run_resumes_in_its_phase_with_the_uninterrupted_result(tmp_path: Path) -> None:
    """Cut at the end of phase 1 (checkpoint in phase 'cells', phase 2 not begun) and in
    phase 2: each resumed run ends with the uninterrupted run's architecture and logits."""
    cfg = SearchConfig(**FAST, schedule="hdas", epochs=4)
    full = run_search(cfg, tmp_path / "full", progress=False)
    assert [r["phase"] for r in full.log] == ["cells", "cells", "stages", "stages"]
    assert [r["epoch"] for r in full.log] == [1, 2, 3, 4]
    assert (tmp_path / "full" / "cells_architecture.json").exists()
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["schedule"] == "hdas" and summary["depth_penalty"] == 0.4
    assert json.loads((tmp_path / "full" / "config.json").read_text())["search"]["schedule"] == "hdas"

    class Stop(Exception):
        pass

    for stop_after, phase in ((2, "cells"), (3, "stages")):
        cut = tmp_path / f"cut{stop_after}"

        def stop(searcher, row, n=stop_after):
            if row["epoch"] == n:
                raise Stop

        with pytest.raises(Stop):
            run_search(cfg, cut, progress=False, on_epoch=stop)
        assert torch.load(cut / "checkpoint.pt", weights_only=True)["phase"] == phase
        res = run_search(cfg, cut, resume=True, progress=False)
        assert res.architecture == full.architecture
        for a, b in zip(res.alpha.parameters(), full.alpha.parameters(), strict=True):
            assert torch.equal(a, b)
        assert [r["epoch"] for r in res.log] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_predictor(tmp_path_factory.mktemp("pred"), DIGITS, n=120)


def test_bad_schedule_input_is_refused_and_nothing_written(cli, predictor: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ("--space", "digits", "--predictor", predictor, "--search-channels", "4", "--subset", "64",
              "--batch-size", "16", "--search-resolution", "8", "--no-progress", "--out", out)
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "darts")
    assert code == 2 and "--schedule" in err and "hdas" in err and not out.exists()
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("search", *common, "--epochs", "1", "--schedule", "hdas")
    assert code == 2 and "--epochs" in err and not out.exists()
    # a predictor of another space, for either phase
    tiny = make_predictor(tmp_path, get_space("tiny"), n=60)
    code, _, err = cli("search", *[a if a != predictor else tiny for a in common], "--epochs", "2", "--schedule", "hdas")
    assert code == 2 and "space" in err and not out.exists()
    # a run of H-DAS's phases from the command line, then --resume with another schedule
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "hdas")
    assert code == 0, err
    assert "(cells)" in err and "(stages)" in err
    assert json.loads((out / "config.json").read_text())["search"]["schedule"] == "hdas"
    assert (out / "cells_architecture.json").exists() and (out / "architecture.json").exists()
    before = _snapshot(out)
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "joint", "--resume")
    assert code == 2 and "schedule" in err and "hdas" in err and _snapshot(out) == before
    assert len(err.strip().splitlines()) == 1
    # a run directory made before schedules existed (no "schedule" in config.json) was joint
    doc = json.loads((out / "config.json").read_text())
    del doc["search"]["schedule"]
    (out / "config.json").write_text(json.dumps(doc))
    before = _snapshot(out)
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "hdas", "--resume")
    assert code == 2 and "schedule: run has 'joint'" in err and _snapshot(out) == before
    # ... and, made before --derive (no "derive"), read its architecture by argmax: it resumes
    doc["search"]["schedule"] = "hdas"
    del doc["search"]["derive"]
    (out / "config.json").write_text(json.dumps(doc))
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "hdas", "--resume")
    assert code == 0, err
    # a run made by the other derive rule is another search: refused, nothing changes
    doc["search"]["derive"] = "priced"
    (out / "config.json").write_text(json.dumps(doc))
    before = _snapshot(out)
    code, _, err = cli("search", *common, "--epochs", "2", "--schedule", "hdas", "--resume")
    assert code == 2 and "derive: run has 'priced'" in err and _snapshot(out) == before

