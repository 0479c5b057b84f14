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
from test_train import cheap_arch

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
    assert code == 2 and "'main' run" in stderr
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
