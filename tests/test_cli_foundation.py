from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.space import load_architecture


def test_space_show(cli):
    code, out, _ = cli("space", "show", "tiny", "--json")
    info = json.loads(out)
    assert code == 0 and info["config"]["name"] == "tiny"
    assert int(info["architectures"]) > 10**50 and info["encoding_size"] > 100
    code, out, _ = cli("space", "show", "cifar")
    assert code == 0 and "architectures    10^" in out


def test_unknown_space_exit_2(cli):
    code, out, err = cli("space", "show", "nope")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown space 'nope'" in err and "tiny" in err


def test_arch_sample_validate_show_export(cli, tmp_path):
    code, out, _ = cli("arch", "sample", "--space", "tiny", "--seed", "4", "-n", "3", "--out", tmp_path / "a", "--json")
    assert code == 0
    files = [r["path"] for r in json.loads(out)]
    assert len(files) == 3
    code, out, _ = cli("arch", "validate", *files)
    assert code == 0 and out.count("ok ") == 3
    code, out, _ = cli("arch", "show", files[0])
    assert code == 0 and "stage 2: depth" in out and "reduction 1:" in out
    code, out, _ = cli("arch", "export", files[0], "--out", tmp_path / "m.onnx")
    assert code == 0 and (tmp_path / "m.onnx").stat().st_size > 1000
    # same seed, same files
    code, out2, _ = cli("arch", "sample", "--space", "tiny", "--seed", "4", "-n", "3", "--out", tmp_path / "b", "--json")
    assert [r["hash"] for r in json.loads(out2)] == [load_architecture(f).hash for f in files]


def test_bad_architecture_file_one_line_exit_2(cli, tmp_path):
    code, out, _ = cli("arch", "sample", "--space", "tiny", "-n", "1", "--out", tmp_path, "--json")
    path = json.loads(out)[0]["path"]
    data = json.loads(Path(path).read_text())
    data["stages"][0]["cell"][0][0][0] = "conv_9x9"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, out, err = cli("arch", "validate", path, str(bad))
    assert code == 2 and "1 of 2 file(s) invalid" in err
    assert "ok " in out and "FAIL" in out and "conv_9x9" in out
    code, _, err = cli("arch", "export", bad, "--out", tmp_path / "x.onnx")
    assert code == 2 and err.count("\n") == 1 and "stages[0].cell[0][0]" in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_nonroot(cli, tmp_path):  # pragma: no cover - CI runs as root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = cli("arch", "sample", "--space", "tiny", "--out", ro / "x")
    assert code == 2 and "cannot write" in err


def test_unwritable_output(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = cli("arch", "sample", "--space", "tiny", "--out", blocker / "sub")
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err


def test_console_script_installed():
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "hwnas"), "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    for group in ("space", "arch"):
        assert group in out
