"""`hwnas targets list|show|check` and `hwnas measure` through hwnas.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_timing import tiny_onnx

from hwnas.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ")
    assert err.count("\n") == 1
    return err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ort-cpu", "ort-cpu-all", "torch-cpu", "ort-cuda", "ort-trt", "trt-fp16"):
        assert name in out
    assert main(["targets", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} >= {"ort-cpu", "debug", "trt-fp32"}


def test_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "show", "ort-cpu"]) == 0
    out = capsys.readouterr().out
    assert 'backend = "onnxruntime"' in out and "threads = 1" in out
    assert main(["targets", "show", "debug", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "debug"
    assert data["resolved_protocol"]["rounds"] == 3


def test_show_file_and_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "mine.toml"
    good.write_text('backend = "debug"\n')
    assert main(["targets", "show", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "mine"

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "debug"\nthreads = "four"\n')
    assert main(["targets", "show", str(bad)]) == 2
    err = one_line_error(capsys)
    assert str(bad) in err and "'threads'" in err

    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nbackend = [\n')
    assert main(["targets", "check", str(broken)]) == 2
    err = one_line_error(capsys)
    assert "line" in err and "broken.toml" in err

    assert main(["targets", "show", "nonexistent"]) == 2
    assert "known targets" in one_line_error(capsys)


def test_check_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "check", "debug"]) == 0
    out = capsys.readouterr().out
    assert "fingerprint" in out and "reference network" in out and " ms " in out
    assert main(["targets", "check", "debug", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["available"] is True
    assert len(data["fingerprint_key"]) == 64
    ref = data["reference"]
    assert 0 < ref["min_ms"] <= ref["p10_ms"] <= ref["median_ms"]


def test_check_user_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "box.toml"
    path.write_text(
        'name = "box"\nbackend = "onnxruntime"\n[protocol]\nmin_rounds = 2\nrounds = 2\n'
        "runs_per_round = 3\n"
    )
    assert main(["targets", "check", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"]["name"] == "box"
    assert data["reference"]["repetitions"] == 6


def test_check_missing_runtime_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except Exception:  # noqa: BLE001
        pass
    assert main(["targets", "check", "trt-fp32"]) == 2
    assert "pip install 'hwnas[gpu]'" in one_line_error(capsys)


def test_measure_onnx_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tiny_onnx(tmp_path / "a.onnx")
    b = tiny_onnx(tmp_path / "b.onnx", channels=16)
    assert main(["measure", str(a), str(b), "--target", "debug", "--json", "--seed", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == [str(a), str(b)]
    for r in rows:
        assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"]
        if r["statistic"] in ("min", "p10", "median"):  # the figure is its statistic's column
            assert r["latency_ms"] == r[f"{r['statistic']}_ms"]
        assert r["repetitions"] == r["rounds"] * 5
        assert r["reference_ms"] > 0
        assert len(r["fingerprint_key"]) == 64
        for key in ("median_ms", "p10_ms", "min_ms", "spread", "stable", "statistic"):
            assert key in r
    assert rows[0]["reference_ms"] == rows[1]["reference_ms"]  # timed in the same rounds
    assert main(["measure", str(a), "--target", "debug"]) == 0
    assert "LATENCY_MS" in capsys.readouterr().out


def test_measure_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure", str(tmp_path / "missing.onnx"), "--target", "debug"]) == 2
    assert "no such file" in one_line_error(capsys)
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    assert main(["measure", str(txt), "--target", "debug"]) == 2
    assert "not an ONNX model" in one_line_error(capsys)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("not protobuf")
    assert main(["measure", str(garbage), "--target", "debug"]) == 2
    assert "garbage.onnx" in one_line_error(capsys)
    assert main(["measure", str(garbage), "--target", "nope"]) == 2
    assert "unknown target" in one_line_error(capsys)


def test_measure_architecture_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("hwnas.nets.onnx_export")
    space = pytest.importorskip("hwnas.space")
    if not hasattr(space, "load_architecture"):
        pytest.skip("hwnas.space.load_architecture not written yet")
    out = tmp_path / "arch"
    if main(["arch", "sample", "--space", "tiny", "--seed", "0", "-n", "1", "--out", str(out)]):
        pytest.skip("hwnas arch sample is not available")
    capsys.readouterr()
    [arch] = sorted(out.glob("*.json"))
    assert main(["measure", str(arch), "--target", "debug", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["path"] == str(arch) and row["latency_ms"] > 0
