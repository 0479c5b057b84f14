"""The main job's deployment half (search x2, train x2, export, measure) and `hwnas report`.

The predictor is fitted on synthetic latencies of `digits` architectures (no profiling: that
half of `hwnas run` has its own tests); search, training, export and measurement are real,
at toy sizes (one epoch on tens of images) on the `debug` target (real ONNX Runtime timing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_predictor_hwnas import synthetic_latency

from hwnas.mainjob import deploy_steps as pipeline
from hwnas.mainjob.config import MainJobConfig
from hwnas.mainjob.report import summary_markdown
from hwnas.space import get_space, sample_architectures
from hwnas.space.encoding import encode, encoding_layout
from predictor import MLPConfig, build_header, fit_predictor, load_profiles, save_predictor
from predictor.synthetic import write_store
from targets.basics import UserError
from targets.registry import load_target


@pytest.fixture(scope="module")
def digits_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = get_space("digits")
    layout = encoding_layout(space)
    archs = sample_architectures(space, 0, 300)
    X = np.stack([encode(a) for a in archs])
    y = synthetic_latency(X, layout)
    folder = tmp_path_factory.mktemp("digits_predictor")
    db = folder / "digits.db"
    write_store(
        db,
        [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)],
        space_name=space.name, space_key=space.key, space_config=space.to_dict(), layout=layout, target="debug",
    )  # fmt: skip
    ds = load_profiles(db, "debug")
    result = fit_predictor(ds, cfg=MLPConfig(members=1, max_epochs=60), baselines=("lut",), seed=0)
    path = folder / "digits.pt"
    save_predictor(path, result.model, build_header(result.model, ds, result.report))
    return path


def _reachable_budget(predictor_path: Path) -> float:
    """A budget a third of the way up the predictor's reachable range (so it binds)."""
    from hwnas.search.discrete import reachable_range
    from hwnas.search.latency import LatencyTerm
    from predictor import load_predictor

    lo, hi = reachable_range(LatencyTerm(load_predictor(predictor_path), get_space("digits")), seed=0)
    return round(lo + (hi - lo) / 3, 4)


@pytest.fixture(scope="module")
def main_run(digits_predictor: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A main-job run directory with the deployment half really run (toy sizes)."""
    out = tmp_path_factory.mktemp("main")
    cfg = MainJobConfig(
        out=out, space="digits", seed=0, progress=False, search_epochs=1, search_subset=96, train_epochs=1,
        train_subset=48, latency_weight=None, latency_budget=_reachable_budget(digits_predictor),
        search_resolution=None, search_mode="full", dataset="digits",
    )  # fmt: skip
    summary = {
        "space": "digits", "target": "debug", "seed": 0, "dataset": "digits", "steps": {},
        "repeat": {"median_abs_pct": 1.0, "within_10pct": 1.0, "measured": 3,
                   "items": [{"old_ms": 1.0, "new_ms": 1.01}, {"old_ms": 2.0, "new_ms": 1.98}, {"old_ms": 1.5, "new_ms": 1.53}]},
        "scatter": {"test": [[1.0, 1.05], [2.0, 1.9], [1.5, 1.52]]},
        "predictor_test": {"mlp": {"mape": 3.0, "within_10": 95.0, "spearman": 0.97, "n": 45}},
    }  # fmt: skip
    pipeline.deploy_steps(cfg, load_target("debug"), digits_predictor, summary, 5, 7)
    (out / "config.json").write_text(json.dumps({"kind": "main", "space": "digits", "target": "debug", "seed": 0}))
    (out / "summary.json").write_text(json.dumps(summary))
    return out


@pytest.mark.slow  # the main_run fixture: ~30 s
def test_deploy_steps_search_train_export_measure(main_run: Path) -> None:
    summary = json.loads((main_run / "summary.json").read_text())
    nets = summary["networks"]
    assert set(nets) == {"plain", "latency"}
    for key, n in nets.items():
        for sub in ("search", "train", "export"):
            assert (main_run / f"{sub}-{key}").is_dir(), (key, sub)
        assert (main_run / f"export-{key}" / "model.onnx").is_file()
        assert n["measured_ms"] > 0 and n["params"] > 0 and n["flops"] > 0 and 0 <= n["test_accuracy"] <= 1
        trained = json.loads((main_run / f"train-{key}" / "summary.json").read_text())
        assert trained["arch_hash"] == n["arch_hash"]
    # the budget search ran beside the plain one and met its band
    assert nets["latency"]["search_setting"].startswith("latency budget")
    budget = float(nets["latency"]["search_setting"].split()[2])
    assert budget * 0.95 - 1e-9 <= nets["latency"]["predicted_ms"] <= budget * 1.05 + 1e-9
    assert nets["plain"]["search_setting"] == "weight 0"
    comp = summary["comparison"]
    assert "speedup_pct" in comp and comp["floor_pct"] == pytest.approx(np.percentile([1.0, 1.0, 2.0], 90), rel=1e-6)


@pytest.mark.slow  # the main_run fixture: ~30 s
def test_report_renders_every_section(main_run: Path, cli) -> None:
    code, stdout, stderr = cli("report", main_run)
    assert code == 0, stderr
    page = (main_run / "report.html").read_text()
    for section in ("The two networks", "Latency predictor", "Search curves", "Architectures"):
        assert section in page, section
    assert page.count("data:image/png;base64,") == 4  # scatter, curves, two architectures
    for png in ("report-scatter.png", "report-search.png", "report-arch-plain.png", "report-arch-latency.png"):
        data = (main_run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    summary = json.loads((main_run / "summary.json").read_text())
    md = summary_markdown(summary)
    assert "latency-aware" in md and "plain" in md and "| network |" in md
    assert "no data in this run" not in page


def test_report_refuses_other_kinds_of_directory(cli, tmp_path: Path) -> None:
    code, _, stderr = cli("report", tmp_path / "none")
    assert code == 2 and "no such run directory" in stderr
    train_like = tmp_path / "train"
    train_like.mkdir()
    (train_like / "config.json").write_text(json.dumps({"kind": "train"}))
    code, _, stderr = cli("report", train_like)
    assert code == 2 and "a train run (hwnas train)" in stderr and "hwnas run" in stderr
    unfinished = tmp_path / "main"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"kind": "main"}))
    code, _, stderr = cli("report", unfinished)
    assert code == 2 and "not finished" in stderr
    assert not (unfinished / "report.html").exists()


def test_run_refuses_an_out_dir_of_another_run(cli, tmp_path: Path) -> None:
    train_like = tmp_path / "t"
    train_like.mkdir()
    (train_like / "config.json").write_text(json.dumps({"kind": "train"}))
    code, _, stderr = cli("run", "--out", train_like, "--no-progress")
    assert code == 2 and "a train run (hwnas train)" in stderr
    other = tmp_path / "m"
    other.mkdir()
    cfg = {"kind": "main", "space": "digits", "target": "ort-cpu", "seed": 1, "dataset": "digits"}
    (other / "config.json").write_text(json.dumps(cfg))
    code, _, stderr = cli("run", "--out", other, "--seed", "0", "--no-progress")
    assert code == 2 and "another configuration" in stderr and "seed" in stderr
    assert json.loads((other / "config.json").read_text()) == cfg
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "x.txt").write_text("mine")
    code, _, stderr = cli("run", "--out", foreign, "--no-progress")
    assert code == 2 and "--force" in stderr
    code, _, stderr = cli("run", "--space", "tiny", "--out", tmp_path / "n", "--no-progress")
    assert code == 2 and "--dataset" in stderr


def test_predictor_stamp_ignores_creation_time_not_weights(digits_predictor: Path, tmp_path: Path) -> None:
    """A second main run refits the same predictor from the same store: its searches are
    reused only if the weights are the same, whatever the file's creation time."""
    import torch

    from predictor import load_predictor

    model = load_predictor(digits_predictor)
    header = dict(model.header)
    header["created_at"] = "2000-01-01T00:00:00Z"
    again = tmp_path / "again.pt"
    save_predictor(again, model, header)
    assert again.read_bytes() != digits_predictor.read_bytes()
    assert pipeline.predictor_weights_sha256(again) == pipeline.predictor_weights_sha256(digits_predictor)
    with torch.no_grad():
        next(iter(model.parameters())).add_(1e-3)
    changed = tmp_path / "changed.pt"
    save_predictor(changed, model, header)
    assert pipeline.predictor_weights_sha256(changed) != pipeline.predictor_weights_sha256(digits_predictor)


def test_parallel_children_report_the_failing_ones_message(tmp_path: Path) -> None:
    """One child fails: its last line is the error, and the other, still running, is stopped."""
    import subprocess
    import sys
    import time

    from targets.basics import UserError

    def start(code: str):
        def go(log: Path) -> subprocess.Popen[str]:
            return subprocess.Popen([sys.executable, "-c", code], stderr=log.open("w"), text=True)

        return go

    pid_file = tmp_path / "slow.pid"
    slow = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(120)"
    bad = (  # fails only once the slow child runs, whatever the host's speed
        f"import pathlib, sys, time\nwhile not pathlib.Path({str(pid_file)!r}).exists(): time.sleep(0.05)\n"
        "print('hwnas: error: dataset x is empty', file=sys.stderr); sys.exit(2)"
    )
    jobs = {
        "bad": {"run": tmp_path / "bad", "epochs": 1, "start": start(bad)},
        "slow": {"run": tmp_path / "slow", "epochs": 1, "start": start(slow)},
    }
    with pytest.raises(UserError, match="search of the bad network failed: hwnas: error: dataset x is empty"):
        pipeline.run_in_parallel(tmp_path, jobs, False, "search", "val_acc")
    status = Path(f"/proc/{pid_file.read_text()}/status")
    for _ in range(200):  # SIGTERM sent: the child is gone or a zombie within moments
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the still-running child was not stopped")


def test_an_unfinished_run_names_the_command_that_continues_it(cli, tmp_path: Path, monkeypatch) -> None:
    """`hwnas report` on an unfinished run offered `hwnas run --out RUN`, which ran the default
    settings (another space: refused; other --samples: another job). The line it offers now,
    followed, asks for the run's own settings."""
    import shlex

    from hwnas import rundir
    from hwnas.mainjob import job

    run = tmp_path / "r1"
    data = tmp_path / "d.npz"  # the main job reads the data's shape first (its space variant)
    np.savez(data, x=np.zeros((20, 8, 8, 3), dtype=np.uint8), y=np.arange(20) % 10)
    asked = MainJobConfig(out=run, space="tiny", samples=60, dataset=f"npz:{data}", search_epochs=2, deploy=False)
    run.mkdir()
    rundir.write_config(run, asked.resolved().to_json())
    code, _, stderr = cli("report", run)
    assert code == 2 and "not finished" in stderr
    line = stderr.split("run `", 1)[1].split("` again", 1)[0]
    seen = []
    monkeypatch.setattr(job, "run_main_job", seen.append)
    assert cli(*shlex.split(line)[1:])[0] == 0
    (cfg,) = seen
    assert job._check(cfg).to_json() == {**asked.resolved().to_json(), "progress": cfg.progress}


def test_the_main_job_profiles_the_space_the_data_needs(cli, tmp_path: Path, monkeypatch) -> None:
    """`hwnas run --space tiny --dataset npz:(3 classes)` profiles, fits and searches
    `tiny-3class` (so its predictor is fitted on the network that ships), recorded in
    config.json; a single class is refused before anything is written."""
    from dataclasses import replace

    from hwnas.mainjob import job
    from hwnas.nets.profile_source import SpaceCandidates
    from profiling.store import ProfileStore

    np.savez(tmp_path / "d3.npz", x=np.zeros((30, 8, 8, 3), dtype=np.uint8), y=np.arange(30) % 3)
    cfg = job._check(MainJobConfig(out=tmp_path / "m", space="tiny", dataset=f"npz:{tmp_path / 'd3.npz'}", target="debug", progress=False))
    assert cfg.space == "tiny-3class" and cfg.to_json()["space"] == "tiny-3class"
    source = SpaceCandidates(cfg.space)
    assert source.space == get_space("tiny-3class") and source.space.num_classes == 3
    (tmp_path / "m").mkdir()
    monkeypatch.setattr(job, "min_samples", lambda init=False: 1)  # two profiles (stable or not: host speed) do here
    job._profile(replace(cfg, samples=2, include_unstable=True), load_target("debug"), source, {"steps": {}}, 7)
    with ProfileStore(tmp_path / "m" / "profile.db") as store:
        binding = store.space_binding()
    assert binding is not None and binding["space_name"] == "tiny-3class" and binding["space_config"]["num_classes"] == 3

    # --init with a predictor of tiny: the run profiles tiny-3class, so it is refused before profiling
    from searchkit import make_predictor

    tiny_pt = make_predictor(tmp_path, get_space("tiny"), n=60)
    with pytest.raises(UserError, match=r"--init .*fitted on space 'tiny', but this run profiles 'tiny-3class'"):
        job._check(replace(cfg, space="tiny", init=tiny_pt, out=tmp_path / "i"))
    assert not (tmp_path / "i").exists()

    np.savez(tmp_path / "d1.npz", x=np.zeros((30, 8, 8, 3), dtype=np.uint8), y=np.zeros(30, dtype=int))
    code, _, stderr = cli("run", "--space", "tiny", "--dataset", f"npz:{tmp_path / 'd1.npz'}", "--out", tmp_path / "one", "--no-progress")
    assert code == 2 and "at least 2 classes" in stderr and not (tmp_path / "one").exists()
