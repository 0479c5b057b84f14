"""The measurement protocol for noisy, shared hosts (DESIGN.md, "Measuring latency honestly").

(Over 400 lines on purpose: warm-up, interleaved rounds, statistics and the drift rule are
one protocol; split, a reader would hold four files to follow one measurement.)

Warm up every runner; time them in interleaved rounds (every runner, and a fixed
reference network, gets a turn in every round, in a rotating order) so drift of the
host hits all of them alike; report a low order statistic of the per-run times (the
minimum by default: on a busy host it reproduces across processes far better than the
median or even p10, see docs/targets.md); stop adding rounds once the statistic agrees
between even and odd rounds (split-half check), so a quiet host pays little and a noisy
one gets more samples; flag as unstable what did not agree, and everything measured
while the reference network ran slower than its recent baseline on this fingerprint
(the 25th percentile of its last 32 figures there).

A sample is one run timed with the host clock, or, for a device-timed runner (a GPU
target: `Runner.device_timed`), one window of many runs timed by the device's own events
(`Runner.timed_run`); with `Protocol.settle` set, warm-up goes on until two windows in a
row agree, as a GPU needs a while to reach its steady state.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.backends.base import DeviceTiming, ModelArtifact, Runner, compile_instances
from targets.basics import UserError, atomic_write_bytes, strict_json
from targets.cache import cache_dir
from targets.fingerprint import fingerprint_key
from targets.protocol import STAT_RE, Protocol
from targets.reference import REFERENCE_VERSION, build_reference_torch, reference_onnx_path
from targets.registry import create_backend

if TYPE_CHECKING:
    from targets.backends.base import Backend
    from targets.spec import TargetSpec

__all__ = [
    "Measurement",
    "Protocol",
    "RunnerFailed",
    "check_reference_drift",
    "drift_baseline",
    "fingerprint_key",
    "measure_onnx",
    "measure_runners",
    "measurement_fingerprint",
    "percentile",
]

REFERENCE_NAME = "__reference__"
# The clock measure_runners reads by default (nanoseconds). Tests pass their own `clock`
# (or patch this) so that no test depends on how fast the machine is.
DEFAULT_CLOCK: Callable[[], int] = time.perf_counter_ns


def measurement_fingerprint(fp: Mapping[str, Any], protocol: Protocol) -> dict[str, Any]:
    """A device fingerprint plus the timing protocol: what a stored measurement is keyed by.

    The same network timed with `statistic = "median"` and with `"min"` (or with 6 rounds
    and with 20) gives different figures on the same device; with the protocol inside the
    fingerprint, rows of different protocols get different keys, so a profile never
    resumes across protocols and `predictor fit` never pools them silently.
    """
    return {**dict(fp), "protocol": protocol.identity()}


@dataclass(frozen=True)
class Measurement:
    """One network's timing under a protocol; all times in milliseconds."""

    latency_ms: float  # the protocol's statistic (a low percentile by default)
    statistic: str  # e.g. "p10"
    median_ms: float
    p10_ms: float
    min_ms: float
    spread: float  # (p90 - p10) / median over all timed runs
    repetitions: int  # timed runs in total
    rounds: int
    reference_ms: float | None  # reference network's same statistic in the same rounds
    stable: bool
    # the device clock (MHz; a GPU's SM clock) read while this runner was timed: median of
    # the readings, None where the runner cannot read one (CPU targets). Kept beside the
    # figure, never in the fingerprint: it describes the moment, not the platform.
    clock_mhz: float | None = None
    reference_spread: float | None = None  # the reference's (p90 - p10) / median, same rounds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunnerFailed(RuntimeError):
    """A runner raised while being timed; `name` says which (the others were not timed)."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"runner {name!r} failed: {type(error).__name__}: {error}")
        self.name = name
        self.error = error


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * (q / 100.0)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def _statistic(sorted_ms: Sequence[float], stat: str) -> float:
    if stat == "min":
        return sorted_ms[0]
    if stat == "median":
        return percentile(sorted_ms, 50.0)
    if stat == "mean":
        return math.fsum(sorted_ms) / len(sorted_ms)
    match = STAT_RE.match(stat)
    assert match is not None  # validated by Protocol
    return percentile(sorted_ms, float(match.group(1)))


def _halves_agree(even: list[float], odd: list[float], protocol: Protocol) -> bool:
    """Split-half check: the statistic of the even rounds and of the odd rounds (both
    spread over the same stretch of time) agree within `tolerance`, i.e. a second
    measurement would most likely give the same figure."""
    if not even or not odd:
        return True
    a = _statistic(sorted(even), protocol.statistic)
    b = _statistic(sorted(odd), protocol.statistic)
    if a <= 0 or b <= 0:
        return a == b
    return abs(a / b - 1.0) <= protocol.tolerance


class _Samples:
    """Per-runner timings, kept by round parity for the split-half check."""

    __slots__ = ("clocks", "even", "odd")

    def __init__(self) -> None:
        self.even: list[float] = []  # nanoseconds per run
        self.odd: list[float] = []
        self.clocks: list[float] = []  # device clock readings (MHz), device-timed runners

    def agree(self, protocol: Protocol) -> bool:
        if self.odd:
            return _halves_agree(self.even, self.odd, protocol)
        # a single round: split its runs instead
        return _halves_agree(self.even[0::2], self.even[1::2], protocol)

    def summarise(
        self,
        protocol: Protocol,
        rounds: int,
        reference_ms: float | None,
        reference_spread: float | None = None,
    ) -> Measurement:
        ms = sorted(t / 1e6 for t in self.even + self.odd)
        median = percentile(ms, 50.0)
        p10 = percentile(ms, 10.0)
        p90 = percentile(ms, 90.0)
        spread = (p90 - p10) / median if median > 0 else 0.0
        stable = self.agree(protocol)
        if protocol.max_spread is not None and spread > protocol.max_spread:
            stable = False
        return Measurement(
            latency_ms=_statistic(ms, protocol.statistic),
            statistic=protocol.statistic,
            median_ms=median,
            p10_ms=p10,
            min_ms=ms[0],
            spread=spread,
            repetitions=len(ms),
            rounds=rounds,
            reference_ms=reference_ms,
            stable=stable,
            clock_mhz=percentile(sorted(self.clocks), 50.0) if self.clocks else None,
            reference_spread=reference_spread,
        )


def _call(name: str, runner: Runner) -> None:
    try:
        runner.run()
    except Exception as exc:  # noqa: BLE001 - re-raised with the runner's name
        raise RunnerFailed(name, exc) from exc


def _timed(name: str, runner: Runner) -> DeviceTiming:
    try:
        return runner.timed_run()
    except Exception as exc:  # noqa: BLE001 - re-raised with the runner's name
        raise RunnerFailed(name, exc) from exc


def _window_ns(name: str, runner: Runner, protocol: Protocol, clock: Callable[[], int]) -> float:
    """One warm-up window's time per run: the device's figure, or the host clock's over
    `runs_per_round` runs."""
    if runner.device_timed:
        return _timed(name, runner).ms_per_run * 1e6
    t0 = clock()
    for _ in range(protocol.runs_per_round):
        _call(name, runner)
    return (clock() - t0) / protocol.runs_per_round


def settle(
    name: str, runner: Runner, protocol: Protocol, clock: Callable[[], int] | None = None
) -> int:
    """Warm up until two windows in a row agree within `protocol.settle`, at most
    `protocol.settle_max` windows; returns the windows spent (0 without `settle`)."""
    if protocol.settle is None:
        return 0
    clock = clock if clock is not None else DEFAULT_CLOCK
    previous: float | None = None
    for i in range(protocol.settle_max):
        now = _window_ns(name, runner, protocol, clock)
        if previous is not None and previous > 0 and abs(now / previous - 1.0) <= protocol.settle:
            return i + 1
        previous = now
    return protocol.settle_max


def measure_runners(
    runners: Mapping[str, Runner],
    protocol: Protocol | None = None,
    reference: Runner | None = None,
    clock: Callable[[], int] | None = None,
) -> dict[str, Measurement]:
    """Time every runner (and `reference`) with `protocol`, interleaved; one Measurement each.

    After `min_rounds`, rounds stop as soon as every runner's statistic agrees between
    even and odd rounds (so a quiet host pays little and a noisy one gets more samples),
    or at `rounds`. All runners always get the same number of rounds and runs. The
    garbage collector is paused while timing (as `timeit` does) so a collection
    triggered by one runner is not charged to another. A runner that raises stops the
    measurement with RunnerFailed naming it: the caller can drop it and re-measure.
    `clock` (nanoseconds; default `DEFAULT_CLOCK`, read at call time) is for tests.
    A device-timed runner's samples come from its `timed_run` (the device's clock) and
    `clock` is not read for them.
    """
    protocol = protocol or Protocol()
    if not runners:
        return {}
    if reference is not None and REFERENCE_NAME in runners:
        raise ValueError(f"runner name {REFERENCE_NAME!r} is reserved for the reference")
    entries: list[tuple[str, Runner]] = list(runners.items())
    if reference is not None:
        entries.append((REFERENCE_NAME, reference))
    samples = {name: _Samples() for name, _ in entries}
    clock = clock if clock is not None else DEFAULT_CLOCK
    n = len(entries)
    done = 0
    min_rounds = min(protocol.min_rounds, protocol.rounds)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name, runner in entries:
            for _ in range(runner.instances):  # warm every instance
                for _ in range(protocol.warmup):
                    _call(name, runner)
                settle(name, runner, protocol, clock)
                runner.next_turn()
        while done < protocol.rounds:
            # Rotate the order so no runner always follows the same one (cache effects)
            # or always sits at the same point of a round.
            for k in range(n):
                name, runner = entries[(done + k) % n]
                runner.next_turn()
                for _ in range(protocol.round_warmup):
                    _call(name, runner)
                s = samples[name]
                bucket = s.even if done % 2 == 0 else s.odd
                if runner.device_timed:
                    for _ in range(protocol.runs_per_round):
                        timing = _timed(name, runner)
                        bucket.append(timing.ms_per_run * 1e6)
                        if timing.clock_mhz is not None:
                            s.clocks.append(timing.clock_mhz)
                    continue
                run = runner.run
                for _ in range(protocol.runs_per_round):
                    t0 = clock()
                    try:
                        run()
                    except Exception as exc:  # noqa: BLE001
                        raise RunnerFailed(name, exc) from exc
                    bucket.append(clock() - t0)
            done += 1
            if done >= min_rounds and all(s.agree(protocol) for s in samples.values()):
                break
    finally:
        if gc_was_enabled:
            gc.enable()

    ref_ms: float | None = None
    ref_spread: float | None = None
    if reference is not None:
        ref = samples[REFERENCE_NAME].summarise(protocol, done, None)
        ref_ms, ref_spread = ref.latency_ms, ref.spread
    return {name: samples[name].summarise(protocol, done, ref_ms, ref_spread) for name in runners}


def _baseline_path(directory: str | Path | None = None) -> Path:
    # Not "reference-baselines.json": earlier hwnas kept the best figure alone there, and
    # an older hwnas sharing this cache would overwrite a history written into that file.
    return cache_dir(directory) / "reference-recent.json"


#: Reference figures kept per fingerprint (the most recent ones) for the drift baseline.
DRIFT_HISTORY = 32
#: Figures needed before the drift rule judges: fewer, and one group's figure would be the
#: whole baseline (a fast first group would flag every later one).
DRIFT_MIN_HISTORY = 4
#: The baseline is this percentile of the recent figures: low enough that a slow stretch is
#: seen, high enough that no single fast group pins it.
DRIFT_PERCENTILE = 25.0


def drift_baseline(history: Sequence[float]) -> float | None:
    """The reference figure a measurement is compared with: the 25th percentile of the recent
    figures (None while fewer than DRIFT_MIN_HISTORY were seen)."""
    figures = sorted(float(v) for v in history if v and v > 0)
    if len(figures) < DRIFT_MIN_HISTORY:
        return None
    return percentile(figures, DRIFT_PERCENTILE)


def _read_history(value: Any) -> list[float]:
    """Recent figures of one cache entry (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0]


def check_reference_drift(
    results: Mapping[str, Measurement],
    fp_key: str,
    protocol: Protocol | None = None,
    directory: str | Path | None = None,
) -> dict[str, Measurement]:
    """Mark every result unstable when the host ran slow throughout the measurement.

    The split-half check cannot see a slowdown that lasts the whole measurement (a
    neighbour saturating the memory bus for seconds). The reference network can: its
    recent figures are kept per fingerprint (the last DRIFT_HISTORY, in the cache
    directory), and a measurement whose reference ran more than `drift_tolerance` above
    their 25th percentile (`drift_baseline`) is not trusted. Not the best figure ever
    seen: on a shared host one fast moment would pin that, and every later group would
    read as drifted (a fresh-clone demo lost 261 of 300 rows so, docs/benchmarks.md). Call
    this after `measure_runners` with the target's fingerprint key.

    With `protocol.drift_spread`, the allowance is the larger of `drift_tolerance` and
    that many times the reference's own spread in this measurement: a reference that
    scatters by 2 % round to round (a quiet GPU) is not drifted at +2.5 %, while a
    slowdown (a second process on the GPU, a lower clock) moves it far beyond both.
    """
    import json

    protocol = protocol or Protocol()
    out = dict(results)
    ref = next((m.reference_ms for m in out.values() if m.reference_ms is not None), None)
    if protocol.drift_tolerance is None or ref is None or ref <= 0:
        return out
    path = _baseline_path(directory)
    key = f"{fp_key}:{protocol.statistic}:ref-v{REFERENCE_VERSION}"
    try:
        store = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not isinstance(store, dict):
            store = {}
    except (OSError, ValueError):
        store = {}  # a corrupt file only loses the baseline, never a measurement
    history = _read_history(store.get(key))
    baseline = drift_baseline(history)
    store[key] = (history + [float(ref)])[-DRIFT_HISTORY:]
    # a read-only cache only disables drift detection, never a measurement
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, strict_json(store, indent=1, sort_keys=True).encode())
    if baseline is not None and ref > baseline * (1.0 + drift_allowance(out.values(), protocol)):
        out = {k: replace(m, stable=False) for k, m in out.items()}
    return out


def drift_allowance(results: Iterable[Measurement], protocol: Protocol) -> float:
    """How far (a fraction) the reference may be above its baseline (see check_reference_drift)."""
    allowed = float(protocol.drift_tolerance or 0.0)
    if protocol.drift_spread is not None:
        spread = next((m.reference_spread for m in results if m.reference_spread is not None), None)
        if spread is not None:
            allowed = max(allowed, protocol.drift_spread * spread)
    return allowed


def _check_onnx_path(path: Path) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the path of an ONNX model (.onnx)")
    if path.suffix.lower() != ".onnx":
        raise UserError(f"{path}: not an ONNX file (expected a .onnx file)")
    return path


def compile_reference(backend: Backend, spec: TargetSpec) -> Runner:
    """The reference network compiled for `spec` (same backend, same batch size)."""
    cache = spec.options.get("cache_dir") if spec.backend != "torch" else None
    path = reference_onnx_path(spec.batch_size, cache)
    return backend.compile(ModelArtifact(path, build_torch=build_reference_torch))


def measure_onnx(
    models: Sequence[Path | str | ModelArtifact],
    spec: TargetSpec,
    protocol: Protocol | None = None,
    *,
    backend: Backend | None = None,
    names: Sequence[str] | None = None,
) -> list[Measurement]:
    """Compile each model for `spec` and time them together (one protocol run), with the
    reference network in the same rounds and its drift checked.

    A model is an ONNX path, or a ModelArtifact (which can also build the torch module for
    the eager backend). `backend` reuses one the caller opened for `spec`. A model that
    fails while timed is a UserError naming it (by `names`, default its ONNX path).
    """
    protocol = protocol or Protocol.for_target(spec)
    artifacts = [m if isinstance(m, ModelArtifact) else ModelArtifact(Path(m)) for m in models]
    for artifact in artifacts:
        _check_onnx_path(Path(artifact.onnx_path))
    backend = backend or create_backend(spec)
    runners: dict[str, Runner] = {}
    reference: Runner | None = None
    try:
        for i, artifact in enumerate(artifacts):
            try:
                runners[str(i)] = compile_instances(backend, artifact, protocol.sessions)
            except UserError as exc:
                # say which of the user's models (an architecture JSON is exported to a
                # temporary ONNX file whose name means nothing to them)
                name = names[i] if names else None
                if name is None or name in str(exc):
                    raise
                raise UserError(f"{name}: {exc}") from None
        if protocol.reference:
            reference = compile_reference(backend, spec)
        try:
            results = measure_runners(runners, protocol, reference)
        except RunnerFailed as exc:
            which = (
                "the reference network"
                if exc.name == REFERENCE_NAME
                else (names or [str(a.onnx_path) for a in artifacts])[int(exc.name)]
            )
            raise UserError(
                f"{which}: failed while running on target {spec.name}: {exc.error}"
            ) from None
        if reference is not None:
            results = check_reference_drift(
                results,
                fingerprint_key(backend.fingerprint()),
                protocol,
                spec.options.get("cache_dir"),
            )
    finally:
        for runner in runners.values():
            runner.close()
        if reference is not None:
            reference.close()
    return [results[str(i)] for i in range(len(artifacts))]
