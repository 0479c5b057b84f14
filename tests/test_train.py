"""`hwnas train`: the recipe runs, resumes exactly, counts what it reports, refuses bad input."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper, shape_inference

from hwnas.nets.network import build_network
from hwnas.nets.onnx_export import network_to_onnx
from hwnas.space import Architecture, get_space, sample_architectures, save_architecture
from hwnas.train.loop import (
    TrainConfig,
    count_macs,
    count_params,
    load_checkpoint,
    resolve_source,
    train,
)
from targets.basics import UserError

FAST = ("--subset", "48", "--batch-size", "16", "--no-progress")


def cheap_arch(space_name: str = "digits") -> Architecture:
    """A small network of the space: depth 1 everywhere, pooling and skip ops (fast to train)."""
    space = get_space(space_name)
    cell = ((("max_pool_3x3", 0), ("skip_connect", 1)), (("avg_pool_3x3", 0), ("sep_conv_3x3", 2)),
            (("skip_connect", 1), ("max_pool_3x3", 3)), (("avg_pool_3x3", 2), ("skip_connect", 4)))
    data = {
        "schema": "hwnas.architecture/1",
        "space": space.to_dict(),
        "stages": [
            {"depth": 1, "cell": [[list(e) for e in n] for n in cell], "connections": [[["skip_connect", 0], ["skip_connect", 1]]]}
            for _ in range(3)
        ],
        "reductions": [{"cell": [[list(e) for e in n] for n in cell]} for _ in range(2)],
    }
    return Architecture.from_dict(data)


@pytest.fixture
def arch_file(tmp_path: Path) -> Path:
    path = tmp_path / "arch.json"
    save_architecture(cheap_arch(), path)
    return path


def test_train_writes_a_complete_run(cli, arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, stderr = cli("train", arch_file, "--dataset", "digits", "--epochs", "1", "--out", out, *FAST)
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} >= {"config.json", "architecture.json", "checkpoint.pt", "log.csv", "summary.json"}
    summary = json.loads((out / "summary.json").read_text())
    arch = cheap_arch()
    assert summary["arch_hash"] == arch.hash and summary["epochs"] == 1 and summary["seed"] == 0
    assert summary["params"] == count_params(build_network(arch))
    assert summary["flops"] > 0 and 0.0 <= summary["test_accuracy"] <= 1.0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 1 and float(rows[0]["test_accuracy"]) == pytest.approx(summary["test_accuracy"])
    ckpt = load_checkpoint(out / "checkpoint.pt")  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["arch_hash"] == arch.hash
    assert "test accuracy" in stdout


def test_resume_is_exact(tmp_path: Path) -> None:
    """Interrupted after epoch 1 and resumed = uninterrupted, bit for bit (weights and log),
    with every random part of the recipe on: augmentation, cutout, drop-path, aux head."""
    arch = cheap_arch()
    cfg = TrainConfig(epochs=2, batch_size=16, subset=48, drop_path=0.3, aux_weight=0.4, cutout=3, seed=5)
    src = resolve_source(_save(arch, tmp_path / "a.json"))
    full = train(src, cfg, tmp_path / "full", progress=False)
    part = train(src, cfg, tmp_path / "part", progress=False, stop_after=1)
    assert part.summary == {} and not (tmp_path / "part" / "summary.json").exists()
    resumed = train(src, cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed.resumed_from == 1
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    log_a = list(csv.DictReader((tmp_path / "full" / "log.csv").open()))
    log_b = list(csv.DictReader((tmp_path / "part" / "log.csv").open()))
    assert drop(log_a) == drop(log_b) and len(log_a) == 2
    assert full.summary["test_accuracy"] == resumed.summary["test_accuracy"]


def _save(arch: Architecture, path: Path) -> Path:
    save_architecture(arch, path)
    return path


def _onnx_macs(model: onnx.ModelProto) -> int:
    """Multiply-adds from the ONNX graph alone (Conv and Gemm nodes, shapes inferred)."""
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output})
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]  # (out, in/groups, kh, kw)
            total += int(np.prod(shapes[node.output[0]])) * int(np.prod(w.shape[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = inits[node.input[1]]
            total += int(np.prod(w.shape))
    return total


@pytest.mark.parametrize("seed", [0, 1])
def test_flops_counted_from_the_network_match_the_onnx_graph(seed: int) -> None:
    arch = sample_architectures(get_space("digits"), seed, 1)[0]
    net = build_network(arch).eval()
    assert count_macs(net, arch.space.input_shape) == _onnx_macs(network_to_onnx(net))


def test_drop_path_and_aux_head_change_training(tmp_path: Path) -> None:
    """Drop-path (ramped linearly, logged) and the auxiliary head are really in the loop."""
    src = resolve_source(_save(cheap_arch(), tmp_path / "a.json"))
    base = TrainConfig(epochs=2, batch_size=16, subset=32, seed=1)
    plain = train(src, base, tmp_path / "plain", progress=False).net.state_dict()
    for name, cfg in (("drop", replace(base, drop_path=0.4)), ("aux", replace(base, aux_weight=0.4))):
        other = train(src, cfg, tmp_path / name, progress=False).net.state_dict()
        assert any(not torch.equal(plain[k], other[k]) for k in plain), name
    log = list(csv.DictReader((tmp_path / "drop" / "log.csv").open()))
    assert [float(r["drop_path"]) for r in log] == [0.0, 0.2]


def test_arch_that_does_not_fit_the_dataset(cli, tmp_path: Path) -> None:
    path = _save(cheap_arch("tiny"), tmp_path / "tiny.json")
    out = tmp_path / "run"
    code, _, stderr = cli("train", path, "--dataset", "digits", "--epochs", "1", "--out", out, *FAST)
    assert code == 2 and "digits" in stderr and "tiny" in stderr
    assert not (out / "checkpoint.pt").exists()


def test_out_dir_guards(cli, arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("train", arch_file, "--epochs", "1", "--out", out, *FAST)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # same config again, no flag: refused (finished run)
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--out", out, *FAST)
    assert code == 2 and "--resume" in stderr and "--force" in stderr
    # another configuration: refused, nothing touched
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--lr", "0.1", "--out", out, *FAST)
    assert code == 2 and "another configuration" in stderr and "lr" in stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a directory of something else
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--out", other, *FAST)
    assert code == 2 and "holds no hwnas run" in stderr
    # resume with nothing to resume
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--out", tmp_path / "new", "--resume", *FAST)
    assert code == 2 and "no run to resume" in stderr
    # --force starts again
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--lr", "0.1", "--out", out, "--force", *FAST)
    assert code == 0, stderr
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.1


def test_corrupted_checkpoint_and_missing_source(cli, arch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("train", arch_file, "--epochs", "2", "--out", out, *FAST)[0] == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (out / "summary.json").unlink()
    code, _, stderr = cli("train", arch_file, "--epochs", "2", "--out", out, "--resume", *FAST)
    assert code == 2 and "not a readable train checkpoint" in stderr
    assert (out / "checkpoint.pt").read_bytes() == b"not a checkpoint"
    code, _, stderr = cli("train", tmp_path / "nope.json", "--epochs", "1", "--out", tmp_path / "r2", *FAST)
    assert code == 2 and "no such file" in stderr


def test_bad_recipe_values(cli, arch_file: Path, tmp_path: Path) -> None:
    for flag, value in (("--epochs", "0"), ("--drop-path", "1.5"), ("--lr", "-1"), ("--batch-size", "0")):
        code, _, stderr = cli("train", arch_file, "--out", tmp_path / "r", "--epochs", "1", *FAST, flag, value)
        assert code == 2 and flag in stderr


def _search_run(path: Path, arch: Architecture, dataset: str) -> Path:
    """A finished search run as `hwnas search` leaves it, as far as `hwnas train` reads it."""
    path.mkdir(parents=True)
    save_architecture(arch, path / "architecture.json")
    config = {"kind": "search", "schema": "hwnas.search-config/1", "search": {"space": arch.space.name, "dataset": dataset}}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _digits_npz(path: Path) -> Path:
    """The user's own data: 8x8 grey digits in an npz (10 classes, 120 images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(path, x=(d.images[:120] * 16).astype(np.uint8), y=d.target[:120])
    return path


def test_a_search_run_trains_on_its_own_data(cli, tmp_path: Path) -> None:
    """Issue 21: `hwnas train RUN` after a search on npz data trained on digits in silence."""
    spec = f"npz:{_digits_npz(tmp_path / 'd.npz')}"
    run = _search_run(tmp_path / "s", cheap_arch(), spec)
    out = tmp_path / "t"
    code, stdout, stderr = cli("train", run, "--epochs", "1", "--out", out, *FAST)
    assert code == 0, stderr
    assert json.loads((out / "config.json").read_text())["config"]["dataset"] == spec
    assert json.loads((out / "summary.json").read_text())["dataset"] == spec and spec in stdout
    # a train run trained again keeps that data too
    assert resolve_source(out).dataset == spec
    # other data named on the command line: refused in one line naming both, nothing written
    code, _, stderr = cli("train", run, "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "t2", *FAST)
    assert code == 2 and spec in stderr and "digits" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t2").exists()
    # ... and the way it offers to train the architecture on other data works
    assert f"hwnas train {run / 'architecture.json'} --dataset digits" in stderr
    code, _, stderr = cli("train", run / "architecture.json", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "t2", *FAST)
    assert code == 0, stderr
    assert json.loads((tmp_path / "t2" / "config.json").read_text())["config"]["dataset"] == "digits"


def test_a_space_without_default_data_asks_for_it(cli, tmp_path: Path) -> None:
    """An architecture of 'tiny' without --dataset: told to pass one, not a digits mismatch."""
    path = _save(cheap_arch("tiny"), tmp_path / "tiny.json")
    code, _, stderr = cli("train", path, "--epochs", "1", "--out", tmp_path / "r", *FAST)
    assert code == 2 and "--dataset" in stderr and "'tiny'" in stderr and "digits" not in stderr
    assert not (tmp_path / "r").exists()


def test_a_search_run_as_out_is_named_and_force_writes_over_it(cli, arch_file: Path, tmp_path: Path) -> None:
    """Issue 21: a search run as `train --out` read as an 'unknown' run; --force, as offered, works."""
    run = _search_run(tmp_path / "s", cheap_arch(), "digits")
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--out", run, *FAST)
    assert code == 2 and "holds a search run (hwnas search), not a train run" in stderr and "--force" in stderr
    code, _, stderr = cli("train", arch_file, "--epochs", "1", "--out", run, "--force", *FAST)
    assert code == 0, stderr
    from hwnas.rundir import run_kind

    assert run_kind(run) == "train"


def test_a_run_on_a_relative_path_trained_from_elsewhere(cli, tmp_path: Path, monkeypatch) -> None:
    """A search run recorded `npz:d.npz` as typed: from another directory it says so, and
    takes the same file named from there (and nothing else)."""
    from hwnas.train.runs import resolve_dataset

    _digits_npz(tmp_path / "d.npz")
    run = _search_run(tmp_path / "s", cheap_arch(), "npz:d.npz")
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset(resolve_source(run), None) == "npz:d.npz"
    assert resolve_dataset(resolve_source(run), f"npz:{tmp_path / 'd.npz'}") == "npz:d.npz"
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")
    code, _, stderr = cli("train", run, "--epochs", "1", "--out", tmp_path / "t", *FAST)
    assert code == 2 and "relative to where it ran" in stderr and "--dataset npz:PATH" in stderr
    assert not (tmp_path / "t").exists()
    assert resolve_dataset(resolve_source(run), "npz:../d.npz") == "npz:../d.npz"
    with pytest.raises(UserError, match="drop --dataset"):
        resolve_dataset(resolve_source(run), "npz:../other.npz")
