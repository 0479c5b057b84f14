"""Bringing up a new target (issue 10): target files, messages, files, progress, start-up, transfer."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictor.synthetic import SyntheticSpace, make_synthetic_store, write_store
from targets.basics import UserError
from targets.progress import Progress
from targets.registry import builtin_targets, load_target
from targets.spec import load_target_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def real_store(path: Path, n: int) -> Path:
    """A profile store written through ProfileStore (what `db stats|export` open)."""
    from test_store import row

    from profiling.store import ProfileStore

    with ProfileStore(path) as store:
        store.bind_space("s", "sk", {"name": "s"}, ["a", "b"])
        for i in range(n):
            store.insert_measurement(row(i))
    return path


def one_line(stderr: str) -> str:
    assert stderr.startswith("hwnas: error: ") and stderr.count("\n") == 1, stderr
    return stderr


# -- target files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", builtin_targets())
def test_show_output_is_a_target_file_that_loads_back(cli, tmp_path: Path, name: str) -> None:
    code, out, err = cli("targets", "show", name)
    assert code == 0, err
    path = tmp_path / "my.toml"
    path.write_text(out)
    spec, builtin = load_target(str(path)), load_target(name)
    assert spec.name == builtin.name and spec.settings() == builtin.settings()
    assert "none" not in out  # the old output wrote `max_spread = none`: invalid TOML


def test_show_then_check_a_file_target(cli, tmp_path: Path) -> None:
    code, out, _ = cli("targets", "show", "debug")
    path = tmp_path / "mine.toml"
    path.write_text(out.replace('name = "debug"', 'name = "my-debug"'))
    code, out, err = cli("targets", "check", path)
    assert code == 0, err
    assert "my-debug" in out and "reference network" in out


def test_file_target_may_not_reuse_a_builtin_name_with_other_settings(cli, tmp_path: Path) -> None:
    code, out, _ = cli("targets", "show", "ort-cpu")
    same = tmp_path / "same.toml"
    same.write_text(out)
    assert load_target(str(same)).settings() == load_target("ort-cpu").settings()
    other = tmp_path / "other.toml"
    other.write_text(out.replace("threads = 1", "threads = 2", 1))
    for argv in (("targets", "show", other), ("targets", "check", other)):
        code, _, err = cli(*argv)
        assert code == 2
        msg = one_line(err)
        assert "'ort-cpu'" in msg and "threads 1 there, 2 here" in msg and "own name" in msg
    with pytest.raises(UserError, match="own name"):
        load_target(other)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('name = "x"\nbackend = "debug"\nthreads = "two"\n', r"line 3: key 'threads'"),
        ('name = "x"\nbackend = "debug"\n\n[options]\ninput_sed = 1\n', r"line 5: unknown key 'options.input_sed'"),
        ('name = "x"\nbackend = "debug"\n[protocol]\nrounds = 0\n', r"line 4: key 'protocol.rounds'"),
        ('name = "x"\nbackend = "debug"\n[protocol]\nmax_spread = none\n', r"line 4: key 'max_spread': invalid TOML"),
    ],
)
def test_errors_name_the_line_and_the_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(str(path)) + ": " + where):
        load_target_file(path)


# -- files and output ----------------------------------------------------------------------


def test_files_honour_the_umask(cli, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    make_synthetic_store(db, 60, seed=1)
    real_store(tmp_path / "r.db", 3)
    old = os.umask(0o027)
    try:
        assert cli("arch", "sample", "--space", "tiny", "-n", "1", "--out", tmp_path / "a")[0] == 0
        assert cli("db", "export", "--db", tmp_path / "r.db", "--out", tmp_path / "x.csv")[0] == 0
        code, _, err = cli(
            "predictor", "fit", "--db", db, "--target", "ort-cpu", "--out", tmp_path / "p.pt",
            "--no-baselines", "--members", "1", "--max-epochs", "20",
        )  # fmt: skip
        assert code == 0, err
    finally:
        os.umask(old)
    made = [*(tmp_path / "a").glob("*.json"), tmp_path / "x.csv", tmp_path / "p.pt"]
    assert len(made) == 3
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_db_export_to_stdout(cli, tmp_path: Path) -> None:
    db = real_store(tmp_path / "p.db", 30)
    code, out, err = cli("db", "export", "--db", db, "--out", "-")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 30 and "latency_ms" in rows[0]
    assert not Path("-").exists()
    code, _, err = cli("db", "export", "--db", db, "--out", "-", "--format", "parquet")
    assert code == 2 and "standard output" in one_line(err)


def test_no_torch_text_when_a_file_is_not_a_predictor(cli, tmp_path: Path) -> None:
    import datetime

    import torch

    pickled = tmp_path / "objects.pt"
    torch.save({"when": datetime.datetime(2026, 1, 1)}, pickled)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip file at all")
    arch = tmp_path / "a.json"
    arch.write_text("{}")
    for path in (pickled, junk):
        code, _, err = cli("predictor", "predict", path, arch)
        msg = one_line(err)
        assert code == 2 and str(path) in msg and "hwnas predictor file" in msg
        ours = msg.replace(str(path), "FILE")
        assert "weights_only" not in ours and "torch" not in ours


# -- the one rule for sample counts ---------------------------------------------------------


def test_sample_counts_follow_one_rule(cli, tmp_path: Path) -> None:
    from predictor.dataset import MIN_SAMPLES, MIN_SAMPLES_INIT, samples_rule

    rule = samples_rule()
    code, _, err = cli(
        "profile", "--space", "tiny", "--target", "debug", "--samples", "0", "--db", tmp_path / "p.db"
    )
    assert code == 2 and rule in one_line(err)
    assert not (tmp_path / "p.db").exists()
    code, _, err = cli("run", "--out", tmp_path / "run", "--samples", str(MIN_SAMPLES - 1))
    assert code == 2 and rule in one_line(err)
    code, _, err = cli(
        "run", "--out", tmp_path / "run", "--samples", str(MIN_SAMPLES_INIT - 1),
        "--init", tmp_path / "known.pt",
    )  # fmt: skip
    assert code == 2 and rule in one_line(err)
    code, _, err = cli("run", "--out", tmp_path / "run", "--samples", "60", "--max-samples", "55")
    assert code == 2 and "--max-samples 55 is below --samples 60" in one_line(err)
    assert not (tmp_path / "run").exists()
    db = tmp_path / "small.db"
    make_synthetic_store(db, MIN_SAMPLES - 1, target="my-ort2")
    target = tmp_path / "my-ort2.toml"
    target.write_text('name = "my-ort2"\nbackend = "onnxruntime"\nthreads = 2\n')
    code, _, err = cli("predictor", "fit", "--db", db, "--target", target, "--out", tmp_path / "x.pt")
    msg = one_line(err)
    assert code == 2 and rule in msg
    assert f"--target {target} " in msg  # the hint's command works: the file, not the bare name


def test_no_baselines_report_says_so(cli, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    make_synthetic_store(db, 80, seed=3)
    code, out, err = cli(
        "predictor", "fit", "--db", db, "--target", "ort-cpu", "--out", tmp_path / "p.pt",
        "--no-baselines", "--members", "1", "--max-epochs", "20",
    )  # fmt: skip
    assert code == 0, err
    assert "no baselines fitted" in out and "with baselines" not in out


# -- progress --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_off_a_terminal_prints_a_line_every_10_s_or_5_percent() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress(1000, "profile t", clock=clock, stream=out, tty=False)
    clock.t = 1.0
    bar.update(100, ok=100, unstable=3)  # 10 % but only 1 s in: too soon
    assert out.getvalue() == ""
    clock.t = 3.0
    bar.update(120, ok=120, unstable=3)  # >= 5 % and >= 2 s: a line
    line = out.getvalue().strip()
    assert line.startswith("profile t: 120/1000 arch (12%)")
    assert "40.0 arch/s" in line and "ETA 22 s" in line and "unstable 3" in line
    clock.t = 14.0
    bar.update(125, ok=125, unstable=4)  # 0.5 % but 11 s: a line
    assert out.getvalue().count("\n") == 2
    clock.t = 15.0
    bar.update(130)
    bar.close()  # a last line with the final count
    assert out.getvalue().count("\n") == 3 and "130/1000" in out.getvalue().splitlines()[-1]


def test_progress_is_silent_for_short_work_and_when_disabled() -> None:
    clock, out = Clock(), io.StringIO()
    bar = Progress(10, "x", clock=clock, stream=out, tty=False)
    for i in range(10):
        clock.t = i * 0.1
        bar.update(i + 1)
    bar.close()
    off = Progress(10, "x", clock=clock, stream=out, tty=False, enabled=False)
    clock.t = 100.0
    off.update(5)
    off.close()
    assert out.getvalue() == ""


def test_progress_on_a_terminal_is_a_tqdm_bar() -> None:
    out = io.StringIO()
    bar = Progress(10, "repeat t", stream=out, tty=True)
    bar.update(5, ok=5)
    bar.close()
    assert "repeat t" in out.getvalue() and "5/10" in out.getvalue()


# -- start-up ------------------------------------------------------------------------------

LIGHT = [
    ["--version"],
    ["--help"],
    ["space", "list"],
    ["space", "show", "tiny"],
    ["targets", "list"],
    ["targets", "show", "ort-cpu"],
    ["arch", "sample", "--space", "tiny", "-n", "2", "--out", "{tmp}/archs"],
    ["db", "stats", "--db", "{tmp}/p.db"],
    ["db", "export", "--db", "{tmp}/p.db", "--out", "{tmp}/p.csv"],
    ["predictor", "fit", "--help"],
]


def test_light_commands_import_neither_torch_nor_onnxruntime(tmp_path: Path) -> None:
    real_store(tmp_path / "p.db", 10)
    probe = (
        "import sys\n"
        "from hwnas.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy), 'CODE=' + str(code), file=sys.stderr)\n"
    )
    for argv in LIGHT:
        args = [a.format(tmp=tmp_path) for a in argv]
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path
        )
        assert "HEAVY= CODE=0" in proc.stderr or "HEAVY= CODE=None" in proc.stderr, (args, proc.stderr)


# -- transfer to a new target ------------------------------------------------------------------


def _target_b(space: SyntheticSpace, x: np.ndarray) -> float:
    """Another target: 1.7x slower, and its 5x5 separable convolutions relatively dearer."""
    layout = space.layout()
    sep5 = sum(x[i] for i, n in enumerate(layout) if n.endswith("syn_sepconv5"))
    return 1.7 * space.latency_ms(x) * (1.0 + 0.03 * sep5)


def _store_b(path: Path, n: int, seed: int) -> None:
    space = SyntheticSpace()
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(n):
        x = space.sample(rng)
        enc = [int(v) for v in x]
        samples.append((f"{seed}-{k:05d}".ljust(64, "0"), json.dumps(enc), enc, _target_b(space, x)))
    write_store(
        path, samples, space_name=space.name, space_key=space.key, space_config=space.config(),
        layout=space.layout(), seed=seed, target="new-target", fingerprint_variant=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hwnas.cli import main

    folder = tmp_path_factory.mktemp("known")
    make_synthetic_store(folder / "a.db", 500, seed=5)
    out = folder / "known.pt"
    argv = ["predictor", "fit", "--db", str(folder / "a.db"), "--target", "ort-cpu",
            "--out", str(out), "--no-baselines", "--members", "2", "--max-epochs", "80"]  # fmt: skip
    assert main(argv) == 0
    return out


def test_transfer_needs_few_profiles_of_the_new_target(cli, known: Path, tmp_path: Path) -> None:
    from predictor import load_predictor
    from predictor.metrics import regression_metrics
    from predictor.transfer import adapt

    new = tmp_path / "b.db"
    _store_b(new, 60, seed=7)
    held = tmp_path / "held.db"
    _store_b(held, 300, seed=8)
    out = tmp_path / "b.pt"
    code, stdout, err = cli(
        "predictor", "fit", "--db", new, "--target", "new-target", "--init", known,
        "--out", out, "--no-baselines",
    )  # fmt: skip
    assert code == 0, err
    assert "adapted from" in stdout and "known predictor as is" in stdout
    model = load_predictor(out)
    assert model.header["transfer"]["from_target"] == "ort-cpu"
    assert model.header["target_name"] == "new-target"

    from predictor import ProfileQuery, load_profiles

    ds = load_profiles(held, "new-target", ProfileQuery(min_samples=1))
    before = regression_metrics(ds.latency_ms, load_predictor(known).predict_ms(ds.X))
    after = regression_metrics(ds.latency_ms, model.predict_ms(ds.X))
    assert before["mape"] > 30 and after["mape"] < 8, (before["mape"], after["mape"])
    # Same seed, same result; another method stays available.
    again, _ = adapt(load_predictor(known), *_xy(new), seed=0)
    assert np.allclose(again.predict_ms(ds.X[:20]), model.predict_ms(ds.X[:20]), rtol=1e-5)


def _xy(db: Path) -> tuple[np.ndarray, np.ndarray]:
    from predictor import ProfileQuery, load_profiles

    ds = load_profiles(db, "new-target", ProfileQuery(min_samples=1))
    idx = np.concatenate([ds.indices("train"), ds.indices("val")])
    return ds.X[idx], ds.latency_ms[idx]


def test_transfer_refuses_a_predictor_of_another_space(cli, known: Path, tmp_path: Path) -> None:
    other = SyntheticSpace(channels=(8, 16, 32))
    db = tmp_path / "other.db"
    make_synthetic_store(db, 60, seed=1, space=other)
    code, _, err = cli(
        "predictor", "fit", "--db", db, "--target", "ort-cpu", "--init", known, "--out", tmp_path / "x.pt"
    )
    assert code == 2 and "same space" in one_line(err)
