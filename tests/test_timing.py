"""The measurement protocol: consistent statistics, interleaving, early stop, drift check."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from targets.backends.base import Runner
from targets.basics import UserError
from targets.registry import load_target
from targets.timing import (
    REFERENCE_NAME,
    Measurement,
    Protocol,
    RunnerFailed,
    check_reference_drift,
    fingerprint_key,
    measure_onnx,
    measure_runners,
    percentile,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path / "cache"))


class Spin(Runner):
    """Real work: a busy loop of `us` microseconds (timed for real, never faked)."""

    def __init__(self, us: float, log: list[str] | None = None, name: str = "") -> None:
        self.ns = int(us * 1000)
        self.log = log
        self.name = name
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        if self.log is not None:
            self.log.append(self.name)
        end = time.perf_counter_ns() + self.ns
        while time.perf_counter_ns() < end:
            pass


class FakeClock:
    """A nanosecond clock that only moves when a runner says so: timing tests that do not
    depend on how fast (or how busy) the machine is."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class Tick(Runner):
    """Takes `us` microseconds of fake time per run (cycling through `us` if a list)."""

    def __init__(self, clock: FakeClock, us: float | list[float]) -> None:
        self.clock = clock
        self.us = us if isinstance(us, list) else [us]
        self.calls = 0

    def run(self) -> None:
        self.clock.now += int(self.us[self.calls % len(self.us)] * 1000)
        self.calls += 1


class Boom(Runner):
    def __init__(self, after: int) -> None:
        self.left = after

    def run(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ValueError("kaput")


def tiny_onnx(path: Path, batch: int | str = 1, channels: int = 8) -> Path:
    """A conv -> relu -> global pool net made with onnx.helper (deterministic weights)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    w = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels, 1, 1])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


FAST = Protocol(warmup=2, min_rounds=3, rounds=3, runs_per_round=4)


def test_statistics_are_consistent() -> None:
    clock = FakeClock()
    runners = {"a": Tick(clock, [200, 260]), "b": Tick(clock, [400, 410, 500])}
    results = measure_runners(runners, FAST, reference=Tick(clock, 300), clock=clock)
    assert set(results) == {"a", "b"}
    for m in results.values():
        assert isinstance(m, Measurement)
        assert 0 < m.min_ms <= m.p10_ms <= m.median_ms
        assert m.repetitions == m.rounds * FAST.runs_per_round == 12
        assert m.rounds == 3
        assert m.statistic == "min" and m.latency_ms == m.min_ms
        assert m.reference_ms == pytest.approx(0.3)
        assert m.spread >= 0
    assert results["a"].min_ms == pytest.approx(0.2) and results["b"].min_ms == pytest.approx(0.4)
    assert results["a"].median_ms == pytest.approx(0.23)  # 6 runs of 0.2 and 6 of 0.26
    assert results["a"].reference_ms == results["b"].reference_ms
    assert runners["a"].calls == 2 + 3 * (1 + 4)  # warm-up + rounds x (turn warm-up + runs)


def test_no_reference_means_no_reference_ms() -> None:
    results = measure_runners({"a": Spin(50)}, FAST)
    assert results["a"].reference_ms is None


def test_percentile_statistic_and_custom_protocol() -> None:
    proto = Protocol(warmup=0, min_rounds=2, rounds=2, runs_per_round=5, statistic="p10")
    m = measure_runners({"a": Spin(100)}, proto)["a"]
    assert m.statistic == "p10" and m.latency_ms == m.p10_ms
    assert m.repetitions == 10


def test_rounds_are_interleaved_and_rotated() -> None:
    log: list[str] = []
    runners = {n: Spin(1, log, n) for n in ("a", "b", "c")}
    proto = Protocol(warmup=0, min_rounds=3, rounds=3, runs_per_round=1, round_warmup=0)
    measure_runners(runners, proto)
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_stops_early_when_halves_agree_and_not_before_min_rounds() -> None:
    clock = FakeClock()
    proto = Protocol(warmup=1, min_rounds=2, rounds=50, runs_per_round=5, tolerance=0.5)
    m = measure_runners({"a": Tick(clock, 100)}, proto, clock=clock)["a"]
    assert m.rounds == 2 and m.repetitions == 10 and m.stable  # halves agree at once
    # halves that disagree run to `rounds`: every run slower than the one before
    slower = [100 * 2**k for k in range(60)]
    m = measure_runners({"a": Tick(clock, slower)}, proto.with_(tolerance=0.01, rounds=6), clock=clock)["a"]
    assert m.rounds == 6 and not m.stable


def test_runner_failure_names_the_runner() -> None:
    with pytest.raises(RunnerFailed) as info:
        measure_runners({"good": Spin(10), "bad": Boom(after=3)}, FAST)
    assert info.value.name == "bad"
    assert isinstance(info.value.error, ValueError)


def test_reserved_reference_name() -> None:
    with pytest.raises(ValueError):
        measure_runners({REFERENCE_NAME: Spin(1)}, FAST, reference=Spin(1))


def test_max_spread_marks_unstable() -> None:
    clock = FakeClock()
    proto = replace(FAST, max_spread=0.2)
    assert measure_runners({"a": Tick(clock, 50)}, proto, clock=clock)["a"].stable
    m = measure_runners({"a": Tick(clock, [50, 50, 100])}, proto, clock=clock)["a"]
    assert m.spread > 0.2 and not m.stable


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rounds": 0},
        {"runs_per_round": -1},
        {"warmup": 1.5},
        {"statistic": "p101"},
        {"statistic": "fastest"},
        {"tolerance": 0},
        {"reference": "yes"},
    ],
)
def test_protocol_validation(kwargs: dict) -> None:
    with pytest.raises(UserError):
        Protocol(**kwargs)


def test_min_rounds_is_capped_at_rounds() -> None:
    m = measure_runners({"a": Spin(5)}, Protocol(warmup=0, rounds=2, runs_per_round=2))["a"]
    assert m.rounds == 2 and m.repetitions == 4


def test_protocol_overrides() -> None:
    assert Protocol.from_overrides({"rounds": 7}).rounds == 7
    with pytest.raises(UserError, match="protocol.rundz"):
        Protocol.from_overrides({"rundz": 1}, where="x.toml")
    assert Protocol.for_target(load_target("debug")).rounds == 3


def test_percentile_matches_numpy() -> None:
    import numpy as np

    values = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3])
    for q in (0, 10, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_fingerprint_key_is_canonical() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": "z"}}
    b = {"a": {"x": "z", "y": [1, 2]}, "b": 1}
    assert fingerprint_key(a) == fingerprint_key(b)
    assert fingerprint_key(a) != fingerprint_key({**a, "b": 2})


def _m(ref: float) -> Measurement:
    return Measurement(1.0, "min", 1.1, 1.0, 1.0, 0.1, 10, 2, ref, True)


def test_reference_drift_marks_unstable(tmp_path: Path) -> None:
    proto = Protocol()

    def stable(ref: float, key: str = "k", p: Protocol = proto) -> bool:
        return check_reference_drift({"a": _m(ref)}, key, p, tmp_path)["a"].stable

    # the first figures only build the baseline: none is judged against a lone figure
    assert all(stable(r) for r in (1.0, 5.0, 1.0, 1.0))
    assert stable(1.03)  # within 5 % of the baseline (25th percentile of recent figures)
    assert not stable(1.2)  # a group timed while the host ran slow
    assert stable(0.9)
    assert stable(1.0)  # one fast group does not move the baseline to itself
    assert stable(5.0, key="other")  # another fingerprint has its own history
    off = replace(proto, drift_tolerance=None)
    assert stable(50.0, p=off)
    stored = json.loads((tmp_path / "reference-recent.json").read_text())
    assert stored[next(k for k in stored if k.startswith("k:"))][-3:] == [1.2, 0.9, 1.0]


def test_reference_drift_one_fast_group_cannot_pin_the_baseline(tmp_path: Path) -> None:
    """The fresh-clone demo's failure: a fast first group (0.498 ms), then a host that
    settles at ~0.58 ms. The best-ever rule flagged every later group; the recent-baseline
    rule flags none of them, yet still flags a real slowdown among them."""
    proto = Protocol()
    figures = [0.498] + [0.58 + 0.01 * ((i * 7) % 3 - 1) for i in range(40)]
    flags = [check_reference_drift({"a": _m(r)}, "k", proto, tmp_path)["a"].stable for r in figures]
    assert all(flags)
    assert not check_reference_drift({"a": _m(0.70)}, "k", proto, tmp_path)["a"].stable
    history = json.loads((tmp_path / "reference-recent.json").read_text())
    assert all(len(v) <= 32 for v in history.values())  # bounded, most recent kept


def test_reference_drift_keeps_its_history_apart_from_older_hwnas(tmp_path: Path) -> None:
    """An earlier hwnas kept the best figure alone in reference-baselines.json; the history
    lives in a file of its own, so an older hwnas sharing the cache cannot overwrite it (nor
    the other way round), and a corrupt history only loses the history."""
    old = tmp_path / "reference-baselines.json"
    old.write_text(json.dumps({"k:min:ref-v1": 1e-9}))  # would flag everything as drift
    assert all(check_reference_drift({"a": _m(0.6)}, "k", Protocol(), tmp_path)["a"].stable for _ in range(6))
    assert json.loads(old.read_text()) == {"k:min:ref-v1": 1e-9}
    (tmp_path / "reference-recent.json").write_text("{not json")
    assert check_reference_drift({"a": _m(9.0)}, "k", Protocol(), tmp_path)["a"].stable


def test_measure_onnx_with_reference(tmp_path: Path) -> None:
    spec = load_target("ort-cpu")
    paths = [
        tiny_onnx(tmp_path / "a.onnx", channels=4),
        tiny_onnx(tmp_path / "b.onnx", channels=128),
    ]
    proto = Protocol(warmup=2, min_rounds=2, rounds=2, runs_per_round=4)
    a, b = measure_onnx(paths, spec, proto)
    for m in (a, b):
        assert 0 < m.min_ms <= m.p10_ms <= m.median_ms
        assert m.repetitions == m.rounds * proto.runs_per_round
        assert m.reference_ms is not None and m.reference_ms > 0
    assert a.reference_ms == b.reference_ms  # one reference figure: timed in the same rounds
    assert b.latency_ms > a.latency_ms  # 32x the work


def test_measure_onnx_bad_paths(tmp_path: Path) -> None:
    spec = load_target("debug")
    with pytest.raises(UserError, match="no such file"):
        measure_onnx([tmp_path / "missing.onnx"], spec)
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(UserError, match="not an ONNX file"):
        measure_onnx([tmp_path / "model.txt"], spec)


def test_sessions_rotate_per_turn_and_every_instance_is_warmed():
    """protocol.sessions = K: K compiled instances per model, a different one each turn."""
    from targets.backends.base import RotatingRunner, Runner
    from targets.timing import Protocol, measure_runners

    class Counting(Runner):
        def __init__(self) -> None:
            self.calls = 0
            self.closed = False

        def run(self) -> None:
            self.calls += 1
            sum(range(2000))  # real work to time

        def close(self) -> None:
            self.closed = True

    inner = [Counting() for _ in range(3)]
    rot = RotatingRunner(inner)
    proto = Protocol(warmup=2, min_rounds=6, rounds=6, runs_per_round=4, round_warmup=1, reference=False, sessions=3)
    (m,) = measure_runners({"a": rot}, proto).values()
    assert m.repetitions == 6 * 4
    # each instance: 2 warm-up runs + 2 turns x (1 round warm-up + 4 timed runs)
    assert [r.calls for r in inner] == [2 + 2 * 5] * 3
    rot.close()
    assert all(r.closed for r in inner)
    with pytest.raises(UserError, match="sessions"):
        Protocol(sessions=0)
