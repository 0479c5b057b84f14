"""`hwnas export`: trained weights in a self-contained ONNX file, parity, metadata, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _digits_npz, _search_run, cheap_arch

from hwnas.deploy.export import Comparison, export_for_target
from hwnas.space import save_architecture
from hwnas.train.loop import TrainConfig, load_trained, resolve_source, train
from targets.registry import load_target


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deploy")
    arch_path = folder / "arch.json"
    save_architecture(cheap_arch(), arch_path)
    run = folder / "train"
    train(resolve_source(arch_path), TrainConfig(epochs=1, batch_size=16, subset=48), run, progress=False)
    return run


def test_export_a_train_run_runs_on_bare_onnxruntime(cli, trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    code, stdout, stderr = cli("export", trained_run, "--target", "ort-cpu", "--out", out)
    assert code == 0, stderr
    assert "trained weights" in stdout and "parity" in stdout
    info = json.loads((out / "export.json").read_text())
    assert info["weights"] == "trained" and info["parity"]["max_abs_diff"] < 1e-3
    assert "test examples of 'digits'" in info["parity"]["inputs"]

    # A fresh interpreter with onnxruntime and numpy only: nothing of hwnas is imported.
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, onnxruntime as ort
        sess = ort.InferenceSession({str(out / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
        meta = sess.get_modelmeta().custom_metadata_map
        y = sess.run(None, {{sess.get_inputs()[0].name: np.load({str(tmp_path / 'x.npy')!r})}})[0]
        assert not any(m.startswith("hwnas") or m in ("torch", "targets") for m in sys.modules), sorted(sys.modules)
        print(json.dumps({{"meta": meta, "y": y.tolist()}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    got = json.loads(proc.stdout)
    net, arch, _ = load_trained(trained_run)
    assert got["meta"]["hwnas.arch_hash"] == arch.hash
    assert got["meta"]["hwnas.target"] == "ort-cpu" and got["meta"]["hwnas.weights"] == "trained"
    with torch.no_grad():
        expect = net(torch.from_numpy(x)).numpy()
    assert np.allclose(got["y"], expect, atol=1e-4)


def test_bare_architecture_gets_random_weights_said_so(cli, tmp_path: Path) -> None:
    arch_path = tmp_path / "a.json"
    save_architecture(cheap_arch(), arch_path)
    code, stdout, stderr = cli("export", arch_path, "--out", tmp_path / "e", "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["weights"] == "random" and any("random weights" in n for n in info["notes"])
    assert info["predicted_latency_ms"] is None


def test_a_search_run_exports_with_a_parity_batch_of_its_own_data(tmp_path: Path) -> None:
    """Issue 21: a search run's data, not digits, is what its network is checked on."""
    spec = f"npz:{_digits_npz(tmp_path / 'd.npz')}"
    run = _search_run(tmp_path / "s", cheap_arch(), spec)
    res = export_for_target(run, load_target("ort-cpu"), tmp_path / "e")
    assert res.info["weights"] == "random" and f"test examples of '{spec}'" in res.info["parity"]["inputs"]


def test_measure_prints_predicted_and_measured(cli, trained_run: Path, tmp_path: Path) -> None:
    code, stdout, stderr = cli("export", trained_run, "--target", "debug", "--out", tmp_path / "e", "--measure")
    assert code == 0, stderr
    assert "measured" in stdout and "drift-corrected" in stdout
    info = json.loads((tmp_path / "e" / "export.json").read_text())
    m = info["measurement"]
    assert m["measured_ms"] > 0 and m["reference_ms"] and m["reference_ms"] > 0


def test_drift_correction_arithmetic() -> None:
    """corrected = measured x the predictor's baseline reference / this measurement's reference."""
    c = Comparison(predicted_ms=1.0, measured_ms=1.2, reference_ms=0.6, baseline_reference_ms=0.5, stable=True)
    assert c.corrected_ms == pytest.approx(1.0)
    assert c.error_pct(False) == pytest.approx(100 * (1.0 / 1.2 - 1))
    assert c.error_pct(True) == pytest.approx(0.0)
    assert Comparison(1.0, 1.2, None, 0.5, True).corrected_ms is None


def test_tensorrt_target_writes_onnx_and_skips_the_engine_without_tensorrt(trained_run: Path, tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed: the engine path needs a GPU run")
    except ImportError:
        pass
    res = export_for_target(trained_run, load_target("trt-fp32"), tmp_path / "trt")
    assert res.onnx_path.is_file() and res.engine_path is None
    assert any("TensorRT engine skipped" in n for n in res.notes)
    assert not (tmp_path / "trt" / "model.engine").exists()


def test_wrong_kind_of_directory_and_unfinished_run(cli, trained_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, _, stderr = cli("export", empty, "--out", tmp_path / "e1")
    assert code == 2 and "no network to export" in stderr
    main_like = tmp_path / "main"
    main_like.mkdir()
    (main_like / "config.json").write_text(json.dumps({"kind": "main"}))
    code, _, stderr = cli("export", main_like, "--out", tmp_path / "e2")
    assert code == 2 and "a main-job run (hwnas run)" in stderr
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "architecture.json", "checkpoint.pt"):
        (unfinished / name).write_bytes((trained_run / name).read_bytes())
    code, _, stderr = cli("export", unfinished, "--out", tmp_path / "e3")
    assert code == 2 and "not finished" in stderr and "--resume" in stderr
    assert not (tmp_path / "e3").exists()


def test_corrupted_checkpoint_is_refused(cli, trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for p in trained_run.iterdir():
        (run / p.name).write_bytes(p.read_bytes())
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    code, _, stderr = cli("export", run, "--out", tmp_path / "e")
    assert code == 2 and "not a readable train checkpoint" in stderr
    (run / "checkpoint.pt").unlink()
    code, _, stderr = cli("export", run, "--out", tmp_path / "e")
    assert code == 2 and "no checkpoint" in stderr
    assert not (tmp_path / "e").exists()


def test_out_dir_holding_another_export_needs_force(cli, trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    assert cli("export", trained_run, "--out", out)[0] == 0
    before = (out / "model.onnx").read_bytes()
    arch_path = tmp_path / "a.json"
    save_architecture(cheap_arch(), arch_path)
    code, _, stderr = cli("export", arch_path, "--out", out)
    assert code == 2 and "another configuration" in stderr and "--force" in stderr
    assert (out / "model.onnx").read_bytes() == before
    assert cli("export", trained_run, "--out", out)[0] == 0  # same configuration: fine
    code, _, stderr = cli("export", arch_path, "--out", out, "--force")
    assert code == 0, stderr
    assert json.loads((out / "export.json").read_text())["weights"] == "random"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    code, _, stderr = cli("export", trained_run, "--out", other)
    assert code == 2 and "--force" in stderr


def test_a_search_run_as_out_is_named_and_force_makes_it_an_export(cli, tmp_path: Path) -> None:
    """Issue 21: export --force over a search run left its config.json, so the directory
    still read as a search run and the next export was refused again."""
    from hwnas.rundir import run_kind

    run = _search_run(tmp_path / "s", cheap_arch(), "digits")
    code, _, stderr = cli("export", run / "architecture.json", "--out", run)
    assert code == 2 and "holds a search run (hwnas search), not an export run" in stderr and "--force" in stderr
    assert cli("export", run / "architecture.json", "--out", run, "--force")[0] == 0
    assert run_kind(run) == "export" and not (run / "config.json").exists()
    code, _, stderr = cli("export", run / "architecture.json", "--out", run)  # the same export again
    assert code == 0, stderr


# -- your own data: a 3-class npz through search -> train -> export (README 'Your own data') -----
def test_three_class_data_searches_trains_and_exports_its_own_network(cli, tmp_path: Path) -> None:
    """`--space digits --dataset npz:3 classes` searches `digits-3class` with the digits
    predictor (the head's size barely changes latency: said, not refused); config.json and
    architecture.json record the variant, so `train RUN` and `export RUN` rebuild the same
    network, whose classifier has 3 outputs."""
    from searchkit import make_predictor

    from hwnas.space import get_space

    rng = np.random.default_rng(0)
    y = np.arange(36) % 3
    np.savez(tmp_path / "d3.npz", x=rng.integers(0, 256, (36, 8, 8), dtype=np.uint8), y=y)
    data = f"npz:{tmp_path / 'd3.npz'}"
    pred = make_predictor(tmp_path, get_space("digits"), n=60)
    code, _, err = cli(
        "search", "--space", "digits", "--dataset", data, "--predictor", pred, "--epochs", "1", "--subset", "12",
        "--search-resolution", "8", "--search-channels", "2", "--batch-size", "6", "--threads", "1",
        "--device", "cpu", "--no-progress", "--out", tmp_path / "s",
    )  # fmt: skip
    assert code == 0, err
    assert "fitted on space 'digits' (10 classes); this network ('digits-3class') has 3: its predictions hold" in err
    resolved = json.loads((tmp_path / "s" / "config.json").read_text())["resolved"]
    assert resolved["space"]["name"] == "digits-3class" and resolved["space"]["num_classes"] == 3
    assert resolved["deploy_space"]["num_classes"] == 3 and "predictor_note" in resolved
    assert json.loads((tmp_path / "s" / "architecture.json").read_text())["space"]["name"] == "digits-3class"

    code, _, err = cli(
        "train", tmp_path / "s", "--dataset", data, "--epochs", "1", "--subset", "12", "--batch-size", "6",
        "--aux-weight", "0", "--threads", "1", "--device", "cpu", "--no-progress", "--out", tmp_path / "t",
    )  # fmt: skip
    assert code == 0, err
    net, arch, _ = load_trained(tmp_path / "t")
    assert arch.space == get_space("digits-3class")
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)

    code, out, err = cli("export", tmp_path / "t", "--out", tmp_path / "e", "--predictor", pred)
    assert code == 0, err
    assert "note: the predictor was fitted on space 'digits' (10 classes)" in out
    info = json.loads((tmp_path / "e" / "export.json").read_text())
    assert info["space"] == "digits-3class" and info["predicted_latency_ms"] > 0
    import onnx

    model = onnx.load(tmp_path / "e" / "model.onnx")
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 3]

    # `hwnas predictor predict` holds the same rule: a note, not a refusal
    code, out, err = cli("predictor", "predict", pred, tmp_path / "s" / "architecture.json")
    assert code == 0 and "its predictions hold" in err, err

    # RGB data of 3 classes on the 1-channel network the run searched: one line, exit 2
    np.savez(tmp_path / "rgb.npz", x=np.zeros((12, 8, 8, 3), dtype=np.uint8), y=np.arange(12) % 3)
    # (the run itself refuses other data than it searched; its architecture file takes any)
    code, _, err = cli("train", tmp_path / "s", "--dataset", f"npz:{tmp_path / 'rgb.npz'}", "--epochs", "1",
                       "--out", tmp_path / "t2", "--device", "cpu")  # fmt: skip
    assert code == 2 and "architecture.json --dataset" in err
    code, _, err = cli("train", tmp_path / "s" / "architecture.json", "--dataset", f"npz:{tmp_path / 'rgb.npz'}",
                       "--epochs", "1", "--out", tmp_path / "t2", "--device", "cpu")  # fmt: skip
    assert code == 2 and "no axis of 1 channels for space 'digits-3class'" in err and "`hwnas search`" in err
    assert not (tmp_path / "t2").exists()
