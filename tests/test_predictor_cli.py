"""`hwnas predictor fit|eval` and the learning-curve bench on small synthetic stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from predictor.synthetic import SyntheticSpace, make_synthetic_store

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("--members", "2", "--max-epochs", "40")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("predictor_cli") / "profiles.db"
    make_synthetic_store(path, 400, seed=11)
    return path


def test_fit_prints_table_then_eval_and_json(cli, small_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ort.pt"
    code, stdout, stderr = cli(
        "predictor", "fit", "--db", small_store, "--target", "ort-cpu", "--out", out, *QUICK
    )
    assert code == 0, stderr
    for word in (
        "mlp",
        "lut",
        "random_forest",
        "gradient_boosting",
        "sk_mlp",
        "re-measure",
        "MAPE %",
        "<=10 %",
        "Kendall",
    ):
        assert word in stdout, word
    assert out.is_file()

    code, stdout, stderr = cli("predictor", "eval", out, "--db", small_store)
    assert code == 0, stderr
    assert "mlp" in stdout and "test split" in stdout

    code, stdout, stderr = cli(
        "predictor", "eval", out, "--db", small_store, "--json", "--split", "all"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    # the architectures the predictor was fitted on are scored apart from the others
    held, trained = report["test"]["mlp"]["n"], report["training_rows"]["n"]
    assert report["split"] == "all" and held + trained == 400 and 0 < held < trained
    assert report["training_rows"]["metrics"]["n"] == trained

    # Same seed, same result; --json is machine-readable.
    again = tmp_path / "again.pt"
    code, stdout, _ = cli(
        "predictor",
        "fit",
        "--db",
        small_store,
        "--target",
        "ort-cpu",
        "--out",
        again,
        "--space",
        "synthetic",
        "--no-baselines",
        "--json",
        *QUICK,
    )
    assert code == 0
    data = json.loads(stdout)
    assert set(data["test"]) == {"mlp"} and data["dataset"]["space_name"] == "synthetic"
    code, stdout2, _ = cli(
        "predictor",
        "fit",
        "--db",
        small_store,
        "--target",
        "ort-cpu",
        "--out",
        again,
        "--no-baselines",
        "--json",
        *QUICK,
    )
    assert json.loads(stdout2)["test"] == data["test"]


def test_bad_input_exits_2_with_one_message(cli, small_store: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    make_synthetic_store(empty, 0)
    mixed = tmp_path / "mixed.db"
    make_synthetic_store(mixed, 60, seed=1)
    make_synthetic_store(mixed, 60, seed=2, fingerprint_variant=1)
    failed = tmp_path / "failed.db"
    make_synthetic_store(failed, 40, only_failed=True)
    tiny = tmp_path / "tiny.db"
    make_synthetic_store(tiny, 20)
    out = tmp_path / "p.pt"
    cases = [
        (["--db", empty], "no profile measurements"),
        (["--db", tiny], "has 20 profiled architectures.*needs at least 50"),
        (["--db", failed], "no successful profile measurement"),
        (["--db", mixed], "mixes 2 fingerprints"),
        (["--db", small_store, "--space", "cifar"], "no measurements of space 'cifar'"),
        (["--db", small_store, "--max-train", "5000"], "budget of 5000"),
        (["--db", tmp_path / "nope.db"], "does not exist"),
    ]
    import re

    for args, msg in cases:
        code, _, stderr = cli(
            "predictor", "fit", "--target", "ort-cpu", "--out", out, *args, *QUICK
        )
        assert code == 2, (args, stderr)
        assert stderr.startswith("hwnas: error: ") and stderr.count("\n") == 1, stderr
        assert re.search(msg, stderr), (msg, stderr)
    assert not out.exists()

    code, _, _ = cli(
        "predictor",
        "fit",
        "--db",
        mixed,
        "--target",
        "ort-cpu",
        "--out",
        out,
        "--allow-mixed",
        "--no-baselines",
        *QUICK,
    )
    assert code == 0 and out.is_file()

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, _, stderr = cli("predictor", "eval", bad, "--db", small_store)
    assert code == 2 and "not a readable hwnas predictor" in stderr

    # A predictor of one space refuses a store of another.
    other = tmp_path / "other_space.db"
    make_synthetic_store(other, 60, space=SyntheticSpace(name="wide", channels=(32, 64, 128)))
    code, _, stderr = cli("predictor", "eval", out, "--db", other)
    assert code == 2 and "space" in stderr


def test_learning_curve_bench(small_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "lc"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "learning_curve.py"),
            "--db",
            str(small_store),
            "--target",
            "ort-cpu",
            "--sizes",
            "100,200,5000",
            "--baselines",
            "lut,gradient_boosting",
            "--members",
            "2",
            "--max-epochs",
            "40",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    md = (out / "learning_curve.md").read_text()
    assert "| 100 |" in md and "| 200 |" in md and "Skipped sizes" in md and "re-measure" in md
    data = json.loads((out / "learning_curve.json").read_text())
    assert [r["size"] for r in data["results"]] == [100, 200] and data["skipped"] == [5000]
    assert (out / "learning_curve.png").stat().st_size > 10_000
