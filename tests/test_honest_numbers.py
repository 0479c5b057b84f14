"""Issue 8: drift-corrected comparisons, protocol-keyed rows, small-n statistics, checksummed
predictor files, GPU provider checks, and `hwnas run`'s repeat in a new process."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.space import get_space, sample_architectures, save_architecture
from hwnas.space.encoding import encode, encoding_layout
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    fit_predictor,
    load_profiles,
    save_predictor,
)
from predictor.drift import CORRECTED, RAW, compare, corrected_ms, predictor_baseline
from predictor.metrics import MIN_FOR_STATISTICS, error_ratio, regression_metrics, summary_line
from predictor.synthetic import write_store
from targets.basics import RuntimeMissing, UserError
from targets.registry import load_target
from targets.timing import Protocol, fingerprint_key, measurement_fingerprint


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


def _latency(X: np.ndarray) -> np.ndarray:
    """A smooth latency of the encoding (no network is timed to fit these predictors)."""
    w = np.linspace(0.001, 0.02, X.shape[1])
    return 0.5 + X @ w


def _tiny_store(path: Path, seed: int, n: int, scale: float = 1.0, reference: float = 0.5):
    """A store of `n` tiny-space architectures; `scale` and `reference` mimic a host that
    ran `scale`x slower, its reference network `reference` ms (0.5 in write_store)."""
    space = get_space("tiny")
    archs = sample_architectures(space, seed, n)
    X = np.stack([encode(a) for a in archs])
    y = _latency(X) * scale
    write_store(
        path,
        [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, y, strict=True)],
        space_name=space.name,
        space_key=space.key,
        space_config=space.to_dict(),
        layout=encoding_layout(space),
        noise=0.005,
        seed=seed,
    )
    if reference != 0.5:
        con = sqlite3.connect(path)
        con.execute("UPDATE measurements SET reference_ms=?", (reference,))
        con.commit()
        con.close()
    return space, archs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("honest")
    db = folder / "train.db"
    space, archs = _tiny_store(db, 0, 140)
    ds = load_profiles(db, "ort-cpu")
    result = fit_predictor(ds, cfg=MLPConfig(members=1, max_epochs=60), baselines=(), seed=0)
    path = folder / "p.pt"
    save_predictor(path, result.model, build_header(result.model, ds, result.report))
    return space, archs, ds, path, folder


# -- the shared drift correction and the small-n rule ------------------------------------------


def test_corrected_is_latency_times_baseline_over_reference() -> None:
    assert corrected_ms(2.0, 0.6, 0.5) == pytest.approx(2.0 * 0.5 / 0.6)
    assert corrected_ms(2.0, None, 0.5) is None and corrected_ms(2.0, 0.6, None) is None
    assert predictor_baseline({"label": "reference", "reference_baseline_ms": 0.5}) == 0.5
    assert predictor_baseline({"label": "raw", "reference_baseline_ms": None}) is None

    pred = np.full(12, 1.0)
    measured = np.full(12, 1.2)  # the host ran 20 % slow, and so did its reference
    out = compare(pred, measured, [0.6] * 12, 0.5)
    assert out[RAW]["mape"] == pytest.approx(100 * (1 - 1 / 1.2))
    assert out[CORRECTED]["mape"] == pytest.approx(0.0, abs=1e-9) and out["note"] is None
    raw_only = compare(pred, measured, [None] * 12, 0.5)
    assert raw_only[CORRECTED] is None and "no reference network" in raw_only["note"]
    assert "raw latency" in compare(pred, measured, [0.6] * 12, None)["note"]


def test_fewer_than_ten_architectures_get_no_rank_statistic_or_ratio() -> None:
    t = np.arange(1.0, 10.0)  # n = 9
    small = regression_metrics(t, t * 1.01)
    assert small["n"] == 9 and math.isnan(small["spearman"]) and math.isnan(small["kendall"])
    assert error_ratio(small, small) is None
    assert "Spearman" not in summary_line(small) and "n=9" in summary_line(small)
    big = regression_metrics(np.arange(1.0, 11.0), np.arange(1.0, 11.0) * 1.02)
    assert MIN_FOR_STATISTICS == 10 and big["spearman"] == pytest.approx(1.0)
    assert error_ratio(big, big) == pytest.approx(1.0) and "Spearman" in summary_line(big)


# -- protocol-keyed rows -------------------------------------------------------------------


def test_protocol_is_part_of_the_fingerprint_key() -> None:
    fp = {"backend": "onnxruntime", "threads": 1}
    base = Protocol()
    key = fingerprint_key(measurement_fingerprint(fp, base))
    assert key != fingerprint_key(measurement_fingerprint(fp, base.with_(statistic="median")))
    assert key != fingerprint_key(measurement_fingerprint(fp, base.with_(rounds=7)))
    # only the stable flag changes: same figures, same key
    assert key == fingerprint_key(measurement_fingerprint(fp, base.with_(drift_tolerance=0.2)))


def test_rows_of_two_protocols_are_never_pooled_silently(tmp_path: Path) -> None:
    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from profiling.synthetic import SyntheticCandidates
    from targets.registry import load_target

    fast = Protocol(warmup=1, min_rounds=2, rounds=2, runs_per_round=3, round_warmup=0)
    db = tmp_path / "p.db"
    debug = load_target("debug")
    with ProfileStore(db) as st:
        quiet = ProfileSettings(progress=False, protocol=fast)
        a = run_profile(SyntheticCandidates(), debug, st, 3, settings=quiet)
        b = run_profile(
            SyntheticCandidates(), debug, st, 3,
            settings=ProfileSettings(progress=False, protocol=fast.with_(statistic="median")),
        )  # fmt: skip
        assert a.fingerprint_key != b.fingerprint_key
        assert b.done_before == 0 and b.written == 3  # not resumed across protocols
        stored = {json.loads(r["fingerprint"])["protocol"]["statistic"] for r in st.rows()}
    assert stored == {"min", "median"}
    with pytest.raises(UserError, match="mixes 2 fingerprints.*--allow-mixed"):
        load_profiles(db, "debug", ProfileQuery(min_samples=1))
    # every row, whatever the protocol's stability flag on this host (unstable rows are left
    # out of fitting by default)
    pooled = ProfileQuery(min_samples=1, allow_mixed=True, include_unstable=True)
    assert len(load_profiles(db, "debug", pooled)) == 3


# -- the predictor file's checksum ---------------------------------------------------------


def test_flipped_bytes_are_one_clear_error(cli, fitted, tmp_path: Path) -> None:
    from predictor import load_predictor

    space, archs, _, path, _ = fitted
    data = path.read_bytes()
    model = load_predictor(path)
    arch_file = tmp_path / "a.json"
    save_architecture(archs[0], arch_file)
    # a byte inside a weight tensor, and one inside the header text
    weight = next(iter(model.state_dict().values())).contiguous().numpy().tobytes()[:16]
    at_weight = data.find(weight)
    at_header = data.find(b'"target_name": "ort-cpu"') + len('"target_name": "ort-')
    assert at_weight > 0 and at_header > 100
    for pos in (at_weight + 3, at_header):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        broken = tmp_path / f"broken{pos}.pt"
        broken.write_bytes(bytes(bad))
        with pytest.raises(UserError, match="checksum|corrupted|not a readable"):
            load_predictor(broken)
        code, out, err = cli("predictor", "predict", broken, arch_file)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("hwnas: error: ") and str(broken) in err
    # the weight flip is caught by the checksum itself (the zip is still readable)
    bad = bytearray(data)
    bad[at_weight + 3] ^= 0x5A
    (tmp_path / "w.pt").write_bytes(bytes(bad))
    with pytest.raises(UserError, match="sha256 checksum"):
        load_predictor(tmp_path / "w.pt")


# -- predict, eval: the baseline, training rows, raw and drift-corrected -------------------------


def test_predict_json_gives_reference_and_training_membership(cli, fitted, tmp_path: Path) -> None:
    space, archs, ds, path, _ = fitted
    train = [a for a, s in zip(ds.hashes, ds.split, strict=True) if s == 0][:2]
    by_hash = {a.hash: a for a in archs}
    fresh = sample_architectures(space, 999, 2)
    files = []
    for i, arch in enumerate([by_hash[h] for h in train] + fresh):
        f = tmp_path / f"{i}.json"
        save_architecture(arch, f)
        files.append(f)
    code, out, err = cli("predictor", "predict", path, *files, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["in_training"] for r in rows] == [True, True, False, False]
    assert all(r["reference_ms"] == pytest.approx(0.5) for r in rows)  # write_store's reference
    assert "2 of 4 architectures are in the predictor's training data" in err


def test_eval_uses_the_predictors_baseline_and_reports_both(cli, fitted, tmp_path: Path) -> None:
    _, _, _, path, _ = fitted
    # Other architectures, timed on a host running 2x slow: latencies and reference doubled.
    slow = tmp_path / "slow.db"
    _tiny_store(slow, 5, 40, scale=2.0, reference=1.0)
    code, out, err = cli("predictor", "eval", path, "--db", slow, "--split", "all", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["comparison"] == "drift-corrected"
    assert rep["dataset"]["reference_baseline_ms"] == pytest.approx(0.5)  # header's, not 1.0
    assert rep["training_rows"]["n"] == 0 and rep["training_rows"]["known"]
    corrected, raw = rep["test"]["mlp"], rep["raw"]["mlp"]
    assert corrected["n"] == raw["n"] == 40
    assert raw["mape"] > 40 and corrected["mape"] < raw["mape"] / 3
    code, out, _ = cli("predictor", "eval", path, "--db", slow, "--split", "all")
    assert code == 0 and "drift-corrected" in out and "raw (stored latency" in out


def test_eval_sets_training_rows_apart(cli, fitted) -> None:
    _, _, ds, path, folder = fitted
    code, out, err = cli("predictor", "eval", path, "--db", folder / "train.db", "--split", "all", "--json")
    assert code == 0, err
    rep = json.loads(out)
    tr = rep["training_rows"]
    n_test = ds.counts()["test"]
    assert tr["n"] == len(ds) - n_test and tr["of"] == len(ds)
    assert rep["test"]["mlp"]["n"] == n_test and tr["metrics"]["n"] == tr["n"]
    code, out, _ = cli("predictor", "eval", path, "--db", folder / "train.db", "--split", "all")
    assert f"{tr['n']} of the {len(ds)} scored architectures are in the predictor's training" in out


# -- measure: arch hash, --predictor ---------------------------------------------------------


def test_measure_json_hash_and_predictor_comparison(cli, fitted, tmp_path: Path) -> None:
    from hwnas.nets.onnx_export import export_onnx

    space, _, _, path, _ = fitted
    arch, other = sample_architectures(space, 4242, 2)
    arch_file = tmp_path / "a.json"
    save_architecture(arch, arch_file)
    onnx_file = export_onnx(other, tmp_path / "b.onnx")
    code, out, err = cli(
        "measure", arch_file, onnx_file, "--target", "debug", "--json", "--predictor", path
    )
    assert code == 0, err
    a, b = json.loads(out)
    assert a["arch_hash"] == arch.hash and b["arch_hash"] == other.hash  # from the metadata
    expect = fit_pred = None
    from predictor import load_predictor

    fit_pred = load_predictor(path).predict_ms(np.stack([encode(arch), encode(other)]))
    for row, expect in zip((a, b), fit_pred, strict=True):
        assert row["predicted_ms"] == pytest.approx(float(expect), rel=1e-5)
        assert row["predictor_reference_ms"] == pytest.approx(0.5)
        assert row["reference_ms"] > 0
        assert row["corrected_ms"] == pytest.approx(row["latency_ms"] * 0.5 / row["reference_ms"])
        assert row["error_pct"] == pytest.approx(100 * (row["predicted_ms"] / row["latency_ms"] - 1))
        assert row["corrected_error_pct"] == pytest.approx(
            100 * (row["predicted_ms"] / row["corrected_ms"] - 1)
        )
    code, out, _ = cli("measure", arch_file, "--target", "debug", "--predictor", path)
    assert code == 0 and "raw:" in out and "drift-corrected:" in out and "n=1" in out
    assert "Spearman" not in out  # one architecture: no rank statistic


# -- GPU paths (no GPU here: fakes) -----------------------------------------------------------


def test_ort_refuses_a_session_that_fell_back_to_another_provider(tmp_path: Path, monkeypatch) -> None:
    from test_timing import tiny_onnx

    from targets.backends.base import ModelArtifact
    from targets.backends.onnxruntime import OnnxRuntimeBackend, check_session_providers
    from targets.registry import load_target

    class FellBack:
        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    model = tiny_onnx(tmp_path / "m.onnx")
    for target, wanted, library in (
        ("ort-cuda", "CUDAExecutionProvider", "libcudnn"),
        ("ort-trt", "TensorrtExecutionProvider", "libnvinfer"),
    ):
        backend = OnnxRuntimeBackend(load_target(target))
        monkeypatch.setattr(backend, "create_session", lambda path: FellBack())
        with pytest.raises(RuntimeMissing) as info:
            backend.compile(ModelArtifact(model))
        msg = str(info.value)
        assert wanted in msg and library in msg and "hwnas[gpu]" in msg and "\n" not in msg

    class OnCuda:
        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    check_session_providers(OnCuda(), "CUDAExecutionProvider", "ort-cuda", model)  # no error
    with pytest.raises(RuntimeMissing):  # TensorRT wanted, CUDA got: still a fallback
        check_session_providers(OnCuda(), "TensorrtExecutionProvider", "ort-trt", model)


def test_torch_runner_synchronises_its_own_device(monkeypatch) -> None:
    from targets.backends.torch_eager import _TorchRunner

    seen: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    runner = _TorchRunner(torch.nn.Identity(), [torch.zeros(1)], torch.device("cuda:1"))
    runner.run()
    assert seen == [torch.device("cuda:1")]
    _TorchRunner(torch.nn.Identity(), [torch.zeros(1)], torch.device("cpu")).run()
    assert len(seen) == 1  # CPU: nothing to wait for


# -- unstable rows, and `hwnas run`'s repeat step ------------------------------------------------


def test_unstable_rows_are_counted_by_reason() -> None:
    from predictor.dataset import describe_unstable, unstable_counts

    rows = [
        {"stable": 1, "reference_ms": 1.00},
        {"stable": 0, "reference_ms": 1.01},  # reference near its best: split-half
        {"stable": 0, "reference_ms": 1.20},  # reference 20 % slow: drift
        {"stable": None, "reference_ms": None},
    ]
    c = unstable_counts(rows)
    assert c == {"unstable_rows": 2, "unstable_reference_drift": 1, "unstable_split_half": 1}
    text = describe_unstable({**c, "ok_profile_rows": 4})
    assert "2 of 4" in text and "1 split-half" in text and "1 reference drift" in text
    # left out of the fit: the fit kept 2 of the 4 rows, and 2 of 4 were flagged (not "2 of 2")
    left_out = describe_unstable({**c, "ok_profile_rows": 2, "include_unstable": False})
    assert "2 of 4" in left_out and "left out" in left_out


def test_run_repeats_in_a_new_process_and_survives_failures(cli, tmp_path: Path) -> None:
    from hwnas.mainjob.job import remeasure_in_child
    from hwnas.mainjob.summary import describe_repeat

    toml = tmp_path / "debug-fast.toml"
    toml.write_text(
        'name = "debug-fast"\nbackend = "debug"\ndevice = "debug"\n[protocol]\n'
        "warmup = 1\nmin_rounds = 2\nrounds = 2\nruns_per_round = 3\nround_warmup = 0\n"
    )
    db = tmp_path / "p.db"
    base = ["profile", "--space", "tiny", "--target", toml, "--db", db, "--no-progress"]
    assert cli(*base, "--samples", "2")[0] == 0
    rep = remeasure_in_child(db, str(toml), 2, 0, tmp_path / "repeat.log")
    assert rep["measured"] == 2 and rep["process"] != os.getpid()
    assert any("in process" in line for line in describe_repeat(rep))
    # every repeat failed, or the child failed: one clear line each, no crash
    failed = {"measured": 0, "failed": 2, "items": [{"error": "run failed: X: boom"}]}
    assert describe_repeat(failed)[0].startswith("all 2 re-measurements failed (first error: run")
    broken = remeasure_in_child(tmp_path / "missing.db", str(toml), 2, 0, tmp_path / "repeat.log")
    assert broken["measured"] == 0 and "no profile store" in broken["error"]
    assert describe_repeat(broken)[0].startswith("re-measurement failed:")


# -- the main job profiles until the fit has enough usable architectures ------------------------


def test_usable_architectures_counts_what_the_fit_uses(tmp_path: Path) -> None:
    from predictor import usable_architectures
    from predictor.synthetic import make_synthetic_store

    db = tmp_path / "s.db"
    make_synthetic_store(db, 60, seed=3, repeat_fraction=0.0)
    assert usable_architectures(db, "ort-cpu") == 60
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE measurements SET stable = 0 WHERE id % 4 = 0")  # 15 of 60 unstable
    con.close()
    assert usable_architectures(db, "ort-cpu") == 45
    assert usable_architectures(db, "ort-cpu", ProfileQuery(include_unstable=True)) == 60
    with pytest.raises(UserError, match="at least 50"):  # what the fit says: it agrees
        load_profiles(db, "ort-cpu")
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE measurements SET stable = 0")
    con.close()
    assert usable_architectures(db, "ort-cpu") == 0


class _FakeProfiler:
    """run_profile stand-in: the store 'holds' what was asked; `share` of it is usable."""

    def __init__(self, share: float) -> None:
        self.share, self.asked, self.done = share, [], 0

    def run_profile(self, source, spec, store, samples, *, settings=None):
        from types import SimpleNamespace

        self.asked.append(samples)
        written, self.done = max(samples - self.done, 0), max(samples, self.done)
        return SimpleNamespace(written=written, done_after=self.done)

    def usable(self, db, target, query=None) -> int:
        return int(self.share * self.done)


@pytest.mark.parametrize("share", [0.75, 0.3])
def test_main_job_profiles_more_until_the_fit_has_enough(tmp_path: Path, monkeypatch, share: float) -> None:
    """`hwnas run --samples 60` on a busy host (a quarter of the rows unstable) profiled 60
    and stopped at the fit; now step 1 profiles on until 50 are usable."""
    from hwnas.mainjob import job
    from hwnas.mainjob.config import MainJobConfig
    from predictor.dataset import MIN_SAMPLES

    fake = _FakeProfiler(share)
    monkeypatch.setattr(job, "run_profile", fake.run_profile)
    monkeypatch.setattr(job, "usable_architectures", fake.usable)
    cfg = MainJobConfig(out=tmp_path / "r", samples=60, target="debug", progress=False)
    cfg.out.mkdir()
    summary: dict = {"steps": {}}
    job._profile(cfg, load_target("debug"), job.SpaceCandidates("digits"), summary, 7)
    assert fake.asked[0] == 60 and len(fake.asked) >= 2 and fake.asked[-1] <= 3 * 60
    assert summary["profile"]["usable"] >= MIN_SAMPLES
    assert summary["profile"]["in_store"] == fake.done


def test_main_job_says_what_to_do_when_the_cap_is_reached(tmp_path: Path, monkeypatch) -> None:
    from hwnas.mainjob import job
    from hwnas.mainjob.config import MainJobConfig

    fake = _FakeProfiler(0.1)
    monkeypatch.setattr(job, "run_profile", fake.run_profile)
    monkeypatch.setattr(job, "usable_architectures", fake.usable)
    cfg = MainJobConfig(out=tmp_path / "r", samples=60, max_samples=120, target="debug", progress=False)
    cfg.out.mkdir()
    with pytest.raises(UserError) as err:
        job._profile(cfg, load_target("debug"), job.SpaceCandidates("digits"), {"steps": {}}, 7)
    assert fake.asked[-1] == 120
    text = str(err.value)
    assert "only 12 of 120" in text and "--include-unstable" in text and "--max-samples" in text
