"""Profiling runs: rows, failures, resume after kill -9, two profilers on one store, repeat."""

from __future__ import annotations

import ast
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest

import profiling.groups
from profiling.candidates import Candidate, CandidateSource
from profiling.groups import measure_group
from profiling.repeat import repeat_measurements
from profiling.results import Prepared
from profiling.runner import ProfileSettings, run_profile
from profiling.store import ProfileStore
from profiling.synthetic import SyntheticCandidates
from targets.backends.base import Backend, ModelArtifact, Runner
from targets.basics import UserError
from targets.fingerprint import fingerprint_key
from targets.registry import load_target
from targets.timing import Measurement, Protocol

ROOT = Path(__file__).resolve().parents[1]


def _fast_overrides() -> dict[str, int]:
    """A tiny protocol (fields the Protocol of targets/ knows), so tests take seconds."""
    want = {"warmup": 1, "min_rounds": 2, "rounds": 2, "runs_per_round": 3, "round_warmup": 0}
    known = {f.name for f in fields(Protocol)}
    return {k: v for k, v in want.items() if k in known}


FAST = Protocol.from_overrides(_fast_overrides())
QUIET = ProfileSettings(progress=False, protocol=FAST)
FAST_TOML = 'name = "debug-fast"\nbackend = "debug"\ndevice = "debug"\n[protocol]\n' + "".join(
    f"{k} = {v}\n" for k, v in _fast_overrides().items()
)

SLOWER = json.dumps({**_fast_overrides(), "rounds": 3, "runs_per_round": 8})
# A profiler in its own process, for the kill -9 and concurrency tests.
PROFILER = """
import json, sys
from profiling.runner import ProfileSettings, run_profile
from profiling.store import ProfileStore
from profiling.synthetic import SyntheticCandidates
from targets.registry import load_target
from targets.timing import Protocol
db, n, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
proto = Protocol.from_overrides(json.loads(sys.argv[4]))
settings = ProfileSettings(seed=0, group_size=group, progress=False, protocol=proto)
with ProfileStore(db) as st:
    s = run_profile(SyntheticCandidates(fail_every=9), load_target("debug"), st, n, settings=settings)
print(json.dumps(s.to_dict()))
"""


@pytest.fixture
def debug():
    return load_target("debug")


def profile_hashes(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT arch_hash FROM measurements WHERE kind='profile'")]
    finally:
        conn.close()


def test_profile_stores_one_row_per_candidate(tmp_path: Path, debug) -> None:
    src = SyntheticCandidates(fail_every=4)
    with ProfileStore(tmp_path / "p.db") as st:
        s = run_profile(src, debug, st, 10, settings=replace(QUIET, seed=3, group_size=4))
        rows = list(st.rows())
    assert (s.ok, s.failed, s.done_before, s.done_after) == (8, 2, 0, 10)
    assert s.archs_per_minute > 0 and s.phases["timing"] > 0 and s.phases["export"] > 0
    assert len(rows) == 10 and len({r["arch_hash"] for r in rows}) == 10
    for r in rows:
        assert r["kind"] == "profile" and r["target_name"] == "debug"
        assert r["space_name"] == "synthetic" and r["space_key"] == src.space_key
        assert len(json.loads(r["encoding"])) == len(src.encoding_layout)
        assert json.loads(r["fingerprint"])["backend"] == "debug"
        assert r["run_id"] == s.run_id and r["pid"] == os.getpid() and r["host"]
        assert r["started_at"] <= r["finished_at"]
        if r["status"] == "ok":
            assert r["error"] is None and r["statistic"] == FAST.statistic
            assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"]
            assert r["min_ms"] <= r["latency_ms"] and r["reference_ms"] > 0
            assert r["repetitions"] == r["rounds"] * FAST.runs_per_round and r["spread"] >= 0
        else:
            assert r["error"].startswith("export failed: RuntimeError: synthetic export failure")
            assert r["latency_ms"] is None


def test_compile_failure_is_recorded(tmp_path: Path, debug) -> None:
    src = SyntheticCandidates(fail_every=3, fail_mode="compile")
    with ProfileStore(tmp_path / "p.db") as st:
        s = run_profile(src, debug, st, 6, settings=QUIET)
        failed = list(st.rows(status="failed"))
    assert (s.ok, s.failed) == (4, 2)
    assert all(r["error"].startswith("compile failed:") for r in failed)


class _FlakyRunner(Runner):
    def __init__(self, fail_after: int | None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def run(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("device fell over")


class _FlakyBackend(Backend):
    name = "flaky"

    def check_available(self) -> None:
        pass

    def fingerprint(self) -> dict:
        return {"backend": "flaky"}

    def compile(self, model: ModelArtifact) -> Runner:
        stem = Path(model.onnx_path).stem
        if stem == "nocompile":
            raise ValueError("bad model")
        return _FlakyRunner({"badfirst": 0, "badlater": 3}.get(stem))


def test_measure_group_isolates_failures(debug) -> None:
    """compile, first-run and mid-measurement failures fail one candidate; the rest is timed."""
    names = ["good1", "nocompile", "badfirst", "badlater", "good2"]
    prepared = [
        Prepared(Candidate(n, "{}", []), f"/nowhere/{n}.onnx", None, "t0") for n in names
    ] + [Prepared(Candidate("noexport", "{}", []), None, "export failed: X: y", "t0")]
    out = measure_group(_FlakyBackend(debug), FAST, None, prepared, reference=None)
    got = {r.arch_hash: r for r in out.results}
    assert [r.arch_hash for r in out.results] == names + ["noexport"]
    assert got["good1"].status == got["good2"].status == "ok"
    m = got["good1"].measurement
    assert m["repetitions"] == m["rounds"] * FAST.runs_per_round
    assert got["nocompile"].error == "compile failed: ValueError: bad model"
    assert got["badfirst"].error == "run failed: RuntimeError: device fell over"
    assert got["badlater"].error == "run failed: RuntimeError: device fell over"
    assert got["noexport"].error == "export failed: X: y"


def test_rerun_continues_to_n_without_duplicates(tmp_path: Path, debug) -> None:
    src = SyntheticCandidates(fail_every=5)
    db = tmp_path / "p.db"
    with ProfileStore(db) as st:
        first = run_profile(src, debug, st, 7, settings=QUIET)
        again = run_profile(src, debug, st, 7, settings=QUIET)
        more = run_profile(src, debug, st, 16, settings=QUIET)
    assert first.written == 7 and again.written == 0 and again.done_before == 7
    assert more.written == 9 and more.done_after == 16
    hashes = profile_hashes(db)
    assert len(hashes) == 16 == len(set(hashes))
    # retry_failed measures the failed ones again (and only those count as missing)
    with ProfileStore(db) as st:
        failed_before = st.count_rows(status="failed")
        retry = run_profile(src, debug, st, 16, settings=replace(QUIET, retry_failed=True))
    assert retry.done_before == 16 - failed_before
    assert retry.written >= failed_before


def test_overlap_exports_in_a_background_process(tmp_path: Path, debug) -> None:
    with ProfileStore(tmp_path / "p.db") as st:
        s = run_profile(
            SyntheticCandidates(fail_every=4), debug, st, 6,
            settings=replace(QUIET, group_size=2, overlap=True),
        )  # fmt: skip
        assert (s.overlap, s.ok, s.failed, s.done_after) == (True, 5, 1, 6)
        assert len({r["arch_hash"] for r in st.rows()}) == 6 and st.live_claims(s.fingerprint_key) == 0


def test_broken_target_stops_with_one_error(tmp_path: Path, debug) -> None:
    src = SyntheticCandidates(fail_every=1, fail_mode="compile")  # every model is corrupt
    with ProfileStore(tmp_path / "p.db") as st:
        with pytest.raises(UserError, match="last 4 architectures all failed.*--retry-failed"):
            run_profile(
                src, debug, st, 20,
                settings=replace(QUIET, group_size=2, max_failures_in_a_row=4),
            )  # fmt: skip
        assert st.count_rows(status="failed") == 4  # recorded, nothing lost
        assert st.live_claims(st.fingerprints()[0]["fingerprint_key"]) == 0


def test_small_space_stops_when_exhausted(tmp_path: Path, debug) -> None:
    class ThreeArchs(SyntheticCandidates):
        def sample(self, seed: int, index: int) -> Candidate:
            return super().sample(seed, index % 3)

    with ProfileStore(tmp_path / "p.db") as st, pytest.warns(RuntimeWarning, match="no new"):
        s = run_profile(ThreeArchs(), debug, st, 5, settings=QUIET)
    assert s.exhausted and s.done_after == 3


def test_space_mismatch_refused_nothing_lost(tmp_path: Path, debug) -> None:
    with ProfileStore(tmp_path / "p.db") as st:
        run_profile(SyntheticCandidates(), debug, st, 3, settings=QUIET)
        other = SyntheticCandidates(resolution=8, name="synthetic-8")
        with pytest.raises(UserError, match="'synthetic'.*'synthetic-8'.*new --db"):
            run_profile(other, debug, st, 3, settings=QUIET)
        assert st.count_rows() == 3 and st.integrity_check() == "ok"


def test_bad_arguments(tmp_path: Path, debug) -> None:
    with ProfileStore(tmp_path / "p.db") as st:
        for kwargs in ({"executor": "slurm"}, {"group_size": 0}, {"address": "x:1"}):
            with pytest.raises(UserError):
                run_profile(SyntheticCandidates(), debug, st, 1, settings=replace(QUIET, **kwargs))


def test_kill_9_loses_nothing_and_rerun_continues(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    script = tmp_path / "profiler.py"
    script.write_text(PROFILER)
    n = 40
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(n), "2", SLOWER], cwd=ROOT, stdout=subprocess.PIPE
    )
    seen: list[tuple] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    conn = sqlite3.connect(db, timeout=5)
                    seen = conn.execute("SELECT id, arch_hash, latency_ms FROM measurements").fetchall()
                    conn.close()
                except sqlite3.OperationalError:
                    pass
            if len(seen) >= 6 or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "profiler finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with ProfileStore(db) as st:
        assert st.integrity_check() == "ok"
        after_kill = {(r["id"], r["arch_hash"], r["latency_ms"]) for r in st.rows()}
        assert set(seen) <= after_kill  # every committed row survived
        assert len(after_kill) < n
        assert st.live_claims(next(iter(st.fingerprints()))["fingerprint_key"]) == 0  # dead
    out = subprocess.run(
        [sys.executable, str(script), str(db), str(n), "2", SLOWER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(out.stdout)
    assert summary["done_before"] == len(after_kill) and summary["done_after"] == n
    hashes = profile_hashes(db)
    assert len(hashes) == n == len(set(hashes))
    with ProfileStore(db) as st:
        assert set(seen) <= {(r["id"], r["arch_hash"], r["latency_ms"]) for r in st.rows()}


def test_two_profilers_share_one_store(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    script = tmp_path / "profiler.py"
    script.write_text(PROFILER)
    n = 30
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(n), "2", SLOWER],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    summaries = [json.loads(o[0]) for o in outs]
    with ProfileStore(db) as st:
        assert st.integrity_check() == "ok"
        rows = list(st.rows())
        assert all(r["latency_ms"] or r["status"] == "failed" for r in rows)
    hashes = profile_hashes(db)
    assert len(hashes) == n == len(set(hashes))  # exactly N, no architecture twice
    assert sum(s["written"] for s in summaries) == len(rows)
    assert {r["run_id"] for r in rows} <= {s["run_id"] for s in summaries}


def test_repeat_report(tmp_path: Path, debug) -> None:
    src = SyntheticCandidates(fail_every=4)
    with ProfileStore(tmp_path / "p.db") as st:
        run_profile(src, debug, st, 8, settings=QUIET)
        report = repeat_measurements(src, debug, st, 4, seed=1, progress=False, protocol=FAST)
        repeats = list(st.rows(kind="repeat"))
        with pytest.raises(UserError, match="no ok measurement"):
            other = replace(debug, name="debug-b", batch_size=2)  # another fingerprint
            repeat_measurements(src, other, st, 2, progress=False, protocol=FAST)
        with pytest.raises(UserError, match="synthetic"):
            repeat_measurements(SyntheticCandidates(resolution=8), debug, st, 2, progress=False)
    assert report.measured == 4 and report.failed == 0 and len(repeats) == 4
    assert 0.0 <= report.within_5pct <= report.within_10pct <= 1.0
    assert report.median_abs_pct >= 0
    assert report.normalised["n"] == 4
    assert {i["arch_hash"] for i in report.items} == {r["arch_hash"] for r in repeats}
    for item in report.items:
        assert item["pct_diff"] == pytest.approx(
            (item["new_ms"] - item["old_ms"]) / item["old_ms"] * 100
        )
    json.dumps(report.to_dict())


def test_profiling_imports_targets_only() -> None:
    for path in (ROOT / "profiling").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("hwnas", "predictor"), (path.name, name)


def test_synthetic_source_is_a_candidate_source() -> None:
    src = SyntheticCandidates()
    assert isinstance(src, CandidateSource)
    a, b = src.sample(0, 5), src.sample(0, 5)
    assert a == b and len(a.encoding) == len(src.encoding_layout)
    import copy  # deepcopy goes through the pickle protocol: sources must travel to Ray

    assert copy.deepcopy(src).space_key == src.space_key


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def fast_target(tmp_path: Path) -> Path:
    path = tmp_path / "debug-fast.toml"
    path.write_text(FAST_TOML)
    return path


def test_cli_profile_stats_export_repeat(cli, tmp_path: Path, fast_target: Path) -> None:
    db = tmp_path / "p.db"
    args = ["profile", "--space", "tiny", "--target", fast_target, "--db", db, "--no-progress"]
    code, out, err = cli(*args, "--samples", "3")
    assert code == 0, err
    assert "3 architectures" in out and "3 of 3" in out
    code, out, err = cli(*args, "--samples", "3", "--json")
    assert code == 0 and json.loads(out)["written"] == 0
    code, out, _ = cli("db", "stats", "--db", db)
    assert code == 0 and "space tiny" in out and "debug-fast" in out
    code, out, _ = cli("db", "stats", "--db", db, "--json")
    stats = json.loads(out)
    assert stats["rows"] == 3 and stats["targets"][0]["profile_ok"] == 3
    code, out, _ = cli("db", "export", "--db", db, "--format", "csv", "--out", tmp_path / "r.csv")
    assert code == 0 and (tmp_path / "r.csv").read_text().count("\n") >= 4
    # the store's target is not a built-in: repeat asks for --target
    code, _, err = cli("db", "repeat", "--db", db, "-n", "2")
    assert code == 2 and "--target" in err
    code, out, err = cli(
        "db", "repeat", "--db", db, "-n", "2", "--target", fast_target, "--json", "--no-progress"
    )
    assert code == 0, err
    rep = json.loads(out)
    assert rep["measured"] == 2 and {"within_5pct", "within_10pct", "median_abs_pct"} <= set(rep)


def test_cli_bad_input_exits_2_and_keeps_rows(cli, tmp_path: Path, fast_target: Path) -> None:
    db = tmp_path / "p.db"
    base = ["profile", "--samples", "2", "--no-progress"]
    code, _, err = cli(*base, "--space", "tiny", "--target", "nope", "--db", db)
    assert code == 2 and "unknown target 'nope'" in err and not db.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli(*base, "--space", "tiny", "--target", fast_target, "--db", blocker / "p.db")
    assert code == 2 and err.startswith("hwnas: error:")
    assert cli(*base, "--space", "tiny", "--target", fast_target, "--db", db)[0] == 0
    code, _, err = cli(*base, "--space", "digits", "--target", fast_target, "--db", db)
    assert code == 2 and "'tiny'" in err and "'digits'" in err and "new --db" in err
    code, _, err = cli("db", "stats", "--db", tmp_path / "missing.db")
    assert code == 2 and "no profile store" in err
    code, _, err = cli("db", "stats", "--db", fast_target)
    assert code == 2 and "not a hwnas profile store" in err
    with ProfileStore(db) as st:
        assert st.count_rows() == 2 and st.integrity_check() == "ok"


def test_cli_locked_store(cli, tmp_path: Path, fast_target: Path, monkeypatch) -> None:
    import profiling.store

    db = tmp_path / "p.db"
    ProfileStore(db).close()
    monkeypatch.setattr(profiling.store, "DEFAULT_TIMEOUT", 0.2)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, _, err = cli(
            "profile", "--space", "tiny", "--target", fast_target, "--db", db,
            "--samples", "1", "--no-progress",
        )  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and "locked" in err


def test_unstable_figures_are_timed_again(debug, monkeypatch: pytest.MonkeyPatch) -> None:
    """The protocol marks a figure unstable when its even and odd rounds disagree; the
    profiler times those once more before storing, and counts them.

    The clock is injected: every reading advances it a little more than the one before,
    so each timed run takes longer than the previous one and the even rounds' minimum is
    always below the odd rounds' (with a real clock and a runner this fast, both halves
    could show the very same minimum and agree even at 1e-12)."""
    import targets.timing

    class Slowing:
        def __init__(self) -> None:
            self.now, self.step = 0, 1_000_000

        def __call__(self) -> int:
            self.now += self.step
            self.step += 1
            return self.now

    monkeypatch.setattr(targets.timing, "DEFAULT_CLOCK", Slowing())
    names = ["a", "b", "c"]
    prepared = [Prepared(Candidate(n, "{}", []), f"/nowhere/{n}.onnx", None, "t0") for n in names]
    strict = FAST.with_(tolerance=1e-12)  # halves never agree to 1e-12: all unstable
    backend = _FlakyBackend(debug)
    out = measure_group(backend, strict, None, prepared, reference=None, remeasure_unstable=1)
    assert out.remeasured == 3
    assert [r.status for r in out.results] == ["ok"] * 3
    out = measure_group(backend, strict, None, prepared, reference=None, remeasure_unstable=0)
    assert out.remeasured == 0
    lenient = FAST.with_(tolerance=10.0)  # halves always agree: nothing to re-time
    assert measure_group(backend, lenient, None, prepared, None, remeasure_unstable=1).remeasured == 0


def _scripted_timing(monkeypatch, stable: list[bool], reference_ms: float | None = None):
    """Replace the timing under measure_group by scripted figures: the k-th timing pass
    marks every runner stable[k] (no dependence on this host's speed)."""
    calls: list[list[str]] = []

    def fake(runners, protocol, reference=None):
        calls.append(sorted(runners))
        ok = stable[min(len(calls), len(stable)) - 1]
        return {
            name: Measurement(1.0, "min", 1.1, 1.0, 1.0, 0.1, 6, 2, reference_ms, ok)
            for name in runners
        }

    monkeypatch.setattr(profiling.groups, "measure_runners", fake)
    return calls


def test_remeasure_times_only_unstable_figures_and_keeps_the_last(debug, monkeypatch) -> None:
    names = ["a", "b", "c"]
    prepared = [Prepared(Candidate(n, "{}", []), f"/nowhere/{n}.onnx", None, "t0") for n in names]
    backend = _FlakyBackend(debug)
    calls = _scripted_timing(monkeypatch, [False, True])
    out = measure_group(backend, FAST, None, prepared, reference=None, remeasure_unstable=2)
    assert out.remeasured == 3 and calls == [names, names]  # stable after one more pass
    assert all(r.measurement["stable"] for r in out.results)  # the last figure is kept
    calls = _scripted_timing(monkeypatch, [False])
    out = measure_group(backend, FAST, None, prepared, reference=None, remeasure_unstable=0)
    assert out.remeasured == 0 and len(calls) == 1
    assert not any(r.measurement["stable"] for r in out.results)


def _seed_baseline(cache: Path, spec, reference_ms: float) -> None:
    """Pretend this fingerprint's reference ran in `reference_ms` in its recent groups."""
    from targets.reference import REFERENCE_VERSION
    from targets.registry import create_backend

    key = fingerprint_key(create_backend(spec).fingerprint())
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "reference-recent.json"
    path.write_text(json.dumps({f"{key}:min:ref-v{REFERENCE_VERSION}": [reference_ms] * 8}))


def test_local_profile_applies_the_reference_drift_check(tmp_path: Path, debug) -> None:
    """A group whose reference ran slower than its recent baseline on this fingerprint is
    stored unstable (as `hwnas measure` flags it); recent figures are kept per fingerprint."""
    cache = tmp_path / "cache"
    spec = replace(debug, options={**debug.options, "cache_dir": str(cache)})
    src = SyntheticCandidates()
    with ProfileStore(tmp_path / "p.db") as st:
        run_profile(src, spec, st, 4, settings=replace(QUIET, group_size=2))
        first = [r for r in st.rows() if r["status"] == "ok"]
        (recent,) = json.loads((cache / "reference-recent.json").read_text()).values()
        assert sorted(recent) == sorted({r["reference_ms"] for r in first})  # one per group
        _seed_baseline(cache, spec, 1e-9)  # no real run comes near: the host 'drifted'
        run_profile(src, spec, st, 8, settings=replace(QUIET, group_size=2))
        new = [r for r in st.rows() if r["status"] == "ok"][len(first) :]
    assert len(new) == 4 and all(r["reference_ms"] > 0 and r["stable"] == 0 for r in new)


def test_repeat_applies_the_reference_drift_check(tmp_path: Path, debug) -> None:
    cache = tmp_path / "cache"
    spec = replace(debug, options={**debug.options, "cache_dir": str(cache)})
    with ProfileStore(tmp_path / "p.db") as st:
        run_profile(SyntheticCandidates(), spec, st, 3, settings=QUIET)
        _seed_baseline(cache, spec, 1e-9)
        repeat_measurements(SyntheticCandidates(), spec, st, 3, progress=False, protocol=FAST)
        rows = list(st.rows(kind="repeat", status="ok"))
    assert len(rows) == 3 and all(r["stable"] == 0 for r in rows)


def test_cli_profile_given_architectures_measures_those_the_store_lacks(cli, tmp_path: Path, fast_target: Path) -> None:
    """`--architectures`: profile where a search went (its derived architectures), each once."""
    from hwnas.space import get_space, sample_architectures, save_architecture

    db = tmp_path / "p.db"
    args = ["profile", "--space", "tiny", "--target", fast_target, "--db", db, "--no-progress"]
    assert cli(*args, "--samples", "2", "--seed", "5")[0] == 0
    with ProfileStore(db) as st:
        stored = sorted(st.done_hashes(st.rows(kind="profile").__next__()["fingerprint_key"], include_failed=True))
    archs = sample_architectures(get_space("tiny"), 5, 2) + sample_architectures(get_space("tiny"), 77, 2)
    assert sorted(a.hash for a in archs[:2]) == stored  # the first two are in the store already
    files = []
    for i, a in enumerate(archs + archs[-1:]):  # the last one twice
        files.append(tmp_path / f"a{i}.json")
        save_architecture(a, files[-1])
    code, out, err = cli(*args, "--architectures", *files, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["written"] == 2 and data["done_after"] == 4
    with ProfileStore(db) as st:
        assert {r["arch_hash"] for r in st.rows(kind="profile")} == {a.hash for a in archs}
    code, out, err = cli(*args, "--architectures", *files)  # again: nothing left to do
    assert code == 0 and "profiled 0 architectures" in out and "4 distinct architectures given, 4" in out
    # bad input: another space's architecture, a missing file, both ways of choosing
    other = tmp_path / "digits.json"
    save_architecture(sample_architectures(get_space("digits"), 0, 1)[0], other)
    code, _, err = cli(*args, "--architectures", files[0], other)
    assert code == 2 and str(other) in err and "'digits'" in err and "--space digits" in err
    code, _, err = cli(*args, "--architectures", tmp_path / "missing.json")
    assert code == 2 and "no such file" in err
    with pytest.raises(SystemExit) as exc:  # argparse: one way of choosing what to profile
        cli(*args, "--samples", "3", "--architectures", files[0])
    assert exc.value.code == 2
    with ProfileStore(db) as st:
        assert st.count_rows() == 4 and st.integrity_check() == "ok"
