"""Profile a target: sample candidates, export, compile, time in groups, store every row.

Why it is built this way:

* Resumable: candidates come from a seeded stream; architectures that already have a
  'profile' row under this target's fingerprint are skipped, so the same command run again
  (after a crash or `kill -9`) continues to N without duplicates. Each row is committed in
  its own transaction the moment its group is timed.
* Shareable: before a group is exported the profiler *claims* its architectures in the
  store; other profilers on the same store skip claimed ones and stop when the store holds
  N, so two profilers split the work. A claim of a dead profiler is taken over.
* Honest timing: a group of candidates is timed together with `targets.timing.measure_runners`
  (interleaved rounds, the reference network in the same rounds).
* Nothing crashes the run but the user: an export, compile or run failure becomes a
  'failed' row with the error; a runner that fails mid-measurement is dropped and the
  rest of its group is timed again.
* No overlap by default. Exporting the next group in the background while this one is
  timed was measured on the 2-core development host (`bench/profile_throughput.py
  --overlap-check`, tiny space, ort-cpu, default protocol): with an exporter busy beside
  the timing (a thread or a process alike) the group's p10 latency rose by 16-19%, its
  median by 125-163% and its timing wall time doubled, while export is only ~17% of the
  wall time. `overlap=True` (`--overlap`) exports in a background process for hosts where
  that check shows no disturbance (say a GPU target with idle CPU cores). The Ray executor
  overlaps without harm: the driver exports while the device hosts time.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.store import ProfileStore, utc_now
from targets.backends.base import Backend, ModelArtifact, Runner, compile_instances
from targets.errors import UserError
from targets.spec import TargetSpec
from targets.timing import (
    REFERENCE_NAME,
    Measurement,
    Protocol,
    RunnerFailed,
    compile_reference,
    fingerprint_key,
    measure_runners,
    measurement_fingerprint,
)

# Extra timing passes for figures the protocol marks unstable. Off by default: on the
# development host one extra pass cost 20 % of the throughput (65 -> 53 per minute) and did
# not make figures repeat better (docs/benchmarks.md); `hwnas profile --remeasure-unstable N`.
REMEASURE_UNSTABLE = 0
PHASES = ("sample", "export", "compile", "timing", "store", "wait")
_ERROR_CHARS = 2000


# -- plain data ----------------------------------------------------------------------------


@dataclass
class Prepared:
    """A candidate after export: its ONNX file, or the export error."""

    candidate: Candidate
    onnx_path: str | None
    error: str | None
    started_at: str
    export_s: float = 0.0


@dataclass
class Result:
    """The outcome of one candidate: a measurement, or the error that stopped it."""

    arch_hash: str
    status: str  # "ok" | "failed"
    error: str | None
    measurement: dict[str, Any] | None
    started_at: str
    finished_at: str


@dataclass
class GroupOutcome:
    results: list[Result]
    compile_s: float = 0.0
    timing_s: float = 0.0
    remeasured: int = 0  # unstable figures timed once more
    fingerprint: dict[str, Any] | None = None
    host: str = ""
    pid: int = 0


@dataclass
class ProfileSummary:
    """What one `run_profile` did; `to_dict()` is what `hwnas profile --json` prints."""

    run_id: str
    executor: str
    target_name: str
    fingerprint_key: str
    requested: int
    done_before: int
    done_after: int = 0
    ok: int = 0
    failed: int = 0
    kept_as_repeat: int = 0
    remeasured: int = 0  # unstable figures timed once more before storing
    exhausted: bool = False
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    overlap: bool = False
    device_s: dict[str, float] = field(default_factory=dict)  # Ray: time spent on devices

    @property
    def written(self) -> int:
        return self.ok + self.failed

    @property
    def archs_per_minute(self) -> float:
        return 60.0 * self.written / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["written"] = self.written
        data["archs_per_minute"] = round(self.archs_per_minute, 2)
        total = sum(self.phases.values())
        data["phase_share"] = {
            k: (round(v / self.wall_s, 4) if self.wall_s > 0 else 0.0)
            for k, v in self.phases.items()
        }
        data["phases_total_s"] = round(total, 3)
        return data


def error_text(phase: str, exc: BaseException) -> str:
    text = f"{phase} failed: {type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


# -- export and measurement (shared by the local and the Ray executor) -------------------


def export_group(
    source: CandidateSource, candidates: Sequence[Candidate], directory: str, batch_size: int
) -> list[Prepared]:
    """Write each candidate's ONNX file; an export error is kept, not raised."""
    out: list[Prepared] = []
    for cand in candidates:
        started = utc_now()
        t0 = time.perf_counter()
        path = Path(directory) / f"{cand.arch_hash[:24]}.onnx"
        error: str | None = None
        try:
            source.export(cand.arch_json, path, batch_size)
            if not path.is_file():
                raise RuntimeError(f"the source wrote no file at {path}")
        except Exception as exc:  # noqa: BLE001 - recorded as a failed row
            error = error_text("export", exc)
        out.append(
            Prepared(cand, None if error else str(path), error, started, time.perf_counter() - t0)
        )
    return out


def measure_group(
    backend: Backend,
    protocol: Protocol,
    source: CandidateSource | None,
    prepared: Sequence[Prepared],
    reference: Runner | None,
    remeasure_unstable: int = REMEASURE_UNSTABLE,
) -> GroupOutcome:
    """Compile and time a group together; every candidate gets a Result, none raises.

    Figures the protocol marks unstable (its even and odd rounds disagree: the host was
    busy) are timed again, together, up to `remeasure_unstable` times; the last figure is
    kept, with its own stable flag.
    """
    outcome = GroupOutcome(results=[])
    failed: dict[str, str] = {p.candidate.arch_hash: p.error for p in prepared if p.error}
    runners: dict[str, Runner] = {}
    measured: dict[str, Measurement] = {}
    t0 = time.perf_counter()
    try:
        for p in prepared:
            h = p.candidate.arch_hash
            if h in failed or p.onnx_path is None:
                continue
            build = partial(source.build_torch, p.candidate.arch_json) if source else None
            try:
                runner = compile_instances(
                    backend, ModelArtifact(Path(p.onnx_path), build_torch=build), protocol.sessions
                )
            except Exception as exc:  # noqa: BLE001
                failed[h] = error_text("compile", exc)
                continue
            runners[h] = runner
            try:
                runner.run()  # one untimed pass: a model that cannot run fails here, alone
            except Exception as exc:  # noqa: BLE001
                failed[h] = error_text("run", exc)
                runners.pop(h).close()
        outcome.compile_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        todo = dict(runners)
        while todo:
            try:
                measured.update(measure_runners(todo, protocol, reference))
                break
            except RunnerFailed as exc:
                if exc.name == REFERENCE_NAME or exc.name not in todo:
                    for h in todo:
                        failed[h] = error_text("timing", exc)
                    break
                failed[exc.name] = error_text("run", exc.error)
                todo.pop(exc.name)
            except Exception as exc:  # noqa: BLE001 - a backend error fails the group, not the run
                for h in todo:
                    failed[h] = error_text("timing", exc)
                break
        for _ in range(remeasure_unstable):
            again = {
                h: runners[h] for h, m in measured.items() if not m.stable and h not in failed
            }
            if not again:
                break
            try:
                measured.update(measure_runners(again, protocol, reference))
            except Exception:  # noqa: BLE001 - keep the first figures rather than none
                break
            outcome.remeasured += len(again)
        outcome.timing_s = time.perf_counter() - t1
    finally:
        for runner in runners.values():
            with contextlib.suppress(Exception):  # closing must not hide the results
                runner.close()
    finished = utc_now()
    for p in prepared:
        h = p.candidate.arch_hash
        if h in measured and h not in failed:
            m = measured[h]
            outcome.results.append(Result(h, "ok", None, m.to_dict(), p.started_at, finished))
        else:
            err = failed.get(h) or "timing failed: no measurement"
            outcome.results.append(Result(h, "failed", err, None, p.started_at, finished))
    return outcome


def make_row(
    *,
    kind: str,
    candidate: Candidate,
    source: CandidateSource,
    spec: TargetSpec,
    fingerprint: dict[str, Any],
    result: Result,
    run_id: str,
    host: str,
    pid: int,
) -> dict[str, Any]:
    """One `measurements` row from a Result (the store adds the id)."""
    m = result.measurement or {}
    return {
        "kind": kind,
        "arch_hash": candidate.arch_hash,
        "arch_json": candidate.arch_json,
        "encoding": list(candidate.encoding),
        "space_name": source.space_name,
        "space_key": source.space_key,
        "target_name": spec.name,
        "fingerprint": fingerprint,
        "fingerprint_key": fingerprint_key(fingerprint),
        "status": result.status,
        "error": result.error,
        "latency_ms": m.get("latency_ms"),
        "statistic": m.get("statistic"),
        "median_ms": m.get("median_ms"),
        "p10_ms": m.get("p10_ms"),
        "min_ms": m.get("min_ms"),
        "spread": m.get("spread"),
        "repetitions": m.get("repetitions"),
        "rounds": m.get("rounds"),
        "reference_ms": m.get("reference_ms"),
        "stable": m.get("stable"),
        "host": host,
        "pid": pid,
        "run_id": run_id,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
    }


def open_backend(spec: TargetSpec) -> Backend:
    from targets.registry import create_backend

    return create_backend(spec)


def reference_runner(backend: Backend, spec: TargetSpec, protocol: Protocol) -> Runner | None:
    """The reference network, or None (with a warning) when the target cannot run it."""
    if not protocol.reference:
        return None
    try:
        return compile_reference(backend, spec)
    except Exception as exc:  # noqa: BLE001 - profile without drift correction rather than not at all
        warnings.warn(
            f"target {spec.name}: the reference network does not compile ({exc}); "
            "measuring without it (reference_ms stays empty)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


class FailureBreaker:
    """Stops a run whose target fails architecture after architecture.

    Failing architectures are data (stored, and the run goes on), but a long unbroken
    run of compile/run/timing failures means the target itself is broken: better one
    clear error than N failed rows. Export failures are the architecture's, not counted.
    """

    def __init__(self, target_name: str, limit: int) -> None:
        self.target_name, self.limit = target_name, limit
        self.streak = 0
        self.last: str | None = None

    def record(self, result: Result) -> None:
        if result.status == "ok":
            self.streak = 0
        elif not (result.error or "").startswith("export failed"):
            self.streak += 1
            self.last = result.error

    def check(self) -> None:
        if self.limit > 0 and self.streak >= self.limit:
            raise UserError(
                f"target {self.target_name}: the last {self.streak} architectures all failed "
                f"on the target (last error: {self.last}); they are stored as failed rows. "
                f"Fix the target (hwnas targets check {self.target_name}) and rerun with "
                "--retry-failed"
            )


# -- candidate stream and claims -----------------------------------------------------------


class CandidateStream:
    """The seeded stream of candidates, minus those already seen or done.

    Stops (`exhausted`) after `max_scan` indices in a row bring nothing new: a small space
    (or N larger than the space) must end the run, not spin.
    """

    def __init__(
        self, source: CandidateSource, seed: int, skip: set[str], max_scan: int = 2000
    ) -> None:
        self.source = source
        self.seed = seed
        self.seen = set(skip)
        self.index = 0
        self.max_scan = max_scan
        self.exhausted = False
        self.sample_s = 0.0
        self.sample_errors = 0

    def take(self, k: int) -> list[Candidate]:
        out: list[Candidate] = []
        misses = 0
        while len(out) < k and not self.exhausted:
            t0 = time.perf_counter()
            index = self.index
            self.index += 1
            try:
                cand = self.source.sample(self.seed, index)
            except Exception as exc:  # noqa: BLE001 - a broken sample is skipped, a broken source is not
                self.sample_errors += 1
                if self.sample_errors >= 20 and self.sample_errors > index // 2:
                    raise UserError(
                        f"the candidate source of space '{self.source.space_name}' fails to "
                        f"sample ({self.sample_errors} of {index + 1} indices; last: {exc})"
                    ) from exc
                continue
            finally:
                self.sample_s += time.perf_counter() - t0
            if cand.arch_hash in self.seen:
                misses += 1
                if misses >= self.max_scan:
                    self.exhausted = True
                continue
            misses = 0
            self.seen.add(cand.arch_hash)
            out.append(cand)
        return out


class _Claimer:
    """Decides how much work is left and claims the next group in the store."""

    def __init__(
        self,
        store: ProfileStore,
        stream: CandidateStream,
        key: str,
        run_id: str,
        samples: int,
        include_failed: bool,
        poll_s: float = 0.5,
        on_wait: Callable[[int], None] | None = None,
    ) -> None:
        self.store, self.stream, self.key, self.run_id = store, stream, key, run_id
        self.samples, self.include_failed, self.poll_s = samples, include_failed, poll_s
        self.on_wait = on_wait
        self.wait_s = 0.0

    def done(self) -> int:
        return self.store.count_done(self.key, include_failed=self.include_failed)

    def next_group(self, size: int, in_flight: int = 0, wait: bool = True) -> list[Candidate]:
        """Up to `size` claimed candidates; [] when the store holds N or the stream ran dry.

        `in_flight` counts this run's claimed candidates not yet stored (their claims are
        live, so they are already part of `live_claims`). When other profilers hold the
        rest, wait for them (or their claims to go stale) unless `wait` is False.
        """
        while True:
            done = self.done()
            if done >= self.samples:
                return []
            live = self.store.live_claims(self.key)
            need = self.samples - done - live
            if need > 0:
                break
            if live - in_flight <= 0 or not wait:
                return []  # only our own in-flight work is left, or the caller polls
            # Another profiler holds the rest: wait for it (or for its claims to go stale).
            if self.on_wait:
                self.on_wait(done)
            t0 = time.perf_counter()
            time.sleep(self.poll_s)
            self.wait_s += time.perf_counter() - t0
        want = min(size, need)
        got: list[Candidate] = []
        while len(got) < want:
            batch = self.stream.take(want - len(got))
            if not batch:
                break
            claimed = set(
                self.store.claim(
                    self.key,
                    [c.arch_hash for c in batch],
                    self.run_id,
                    include_failed=self.include_failed,
                    limit_total=self.samples,
                )
            )
            got += [c for c in batch if c.arch_hash in claimed]
            if (
                len(claimed) < len(batch)
                and self.store.live_claims(self.key) + self.done() >= self.samples
            ):
                break  # full, counting claims: the rest belongs to other profilers
        return got


def _sweep_dead_workdirs(min_age_s: float = 60.0) -> None:
    """Remove export folders left by profilers that were killed (their pid is gone)."""
    from profiling.store import pid_alive

    now = time.time()
    for path in Path(tempfile.gettempdir()).glob("hwnas-profile-*-*"):
        pid_text = path.name.split("-")[2]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and now - path.stat().st_mtime > min_age_s:
                shutil.rmtree(path, ignore_errors=True)


# -- progress ------------------------------------------------------------------------------


class _Progress:
    """targets.progress.Progress with the profiler's counters (ok, failed, unstable so far)."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        from targets.progress import Progress

        self.bar = Progress(total, desc, initial=initial, enabled=enabled)
        self.unstable = 0

    def note(self, results: Sequence[Result]) -> None:
        """Count the figures the protocol marked unstable (the host was busy)."""
        self.unstable += sum(
            1 for r in results if r.measurement is not None and r.measurement.get("stable") is False
        )

    def set(self, n: int, ok: int, failed: int) -> None:
        self.bar.update(n, ok=ok, failed=failed, unstable=self.unstable)

    def close(self) -> None:
        self.bar.close()


# -- the run -------------------------------------------------------------------------------


def run_profile(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int,
    seed: int = 0,
    executor: str = "local",
    address: str | None = None,
    group_size: int = 8,
    progress: bool = True,
    *,
    overlap: bool = False,
    retry_failed: bool = False,
    protocol: Protocol | None = None,
    max_in_flight: int | None = None,
    max_failures_in_a_row: int = 16,
    remeasure_unstable: int = REMEASURE_UNSTABLE,
) -> ProfileSummary:
    """Measure candidates until the store holds `samples` architectures for this target.

    Counts architectures with a 'profile' row under the target's fingerprint (failed ones
    too, unless `retry_failed`), so a rerun continues where the last one stopped. Stops
    with a UserError after `max_failures_in_a_row` target failures in a row (0: never).
    """
    if samples < 0:
        raise UserError(f"--samples must be >= 0, got {samples}")
    if group_size < 1:
        raise UserError(f"--group-size must be >= 1, got {group_size}")
    if executor not in ("local", "ray"):
        raise UserError(f"unknown executor {executor!r}; use local or ray")
    store.bind_space(
        source.space_name, source.space_key, source.space_config, source.encoding_layout
    )
    protocol = protocol or Protocol.for_target(spec)
    if executor == "ray":
        from profiling.ray_executor import run_profile_ray

        return run_profile_ray(
            source,
            spec,
            store,
            samples,
            seed=seed,
            address=address,
            group_size=group_size,
            progress=progress,
            retry_failed=retry_failed,
            protocol=protocol,
            max_in_flight=max_in_flight,
            breaker=FailureBreaker(spec.cli_ref, max_failures_in_a_row),
        )
    if address is not None:
        raise UserError("--address is for --executor ray")
    breaker = FailureBreaker(spec.cli_ref, max_failures_in_a_row)
    return _run_local(
        source, spec, store, samples, seed, group_size, progress, overlap, retry_failed, protocol,
        breaker, remeasure_unstable,
    )  # fmt: skip


def start_run(
    store: ProfileStore,
    source: CandidateSource,
    spec: TargetSpec,
    key: str,
    samples: int,
    seed: int,
    include_failed: bool,
    *,
    executor: str,
    overlap: bool,
    progress: bool,
    show_waits: bool = False,
) -> tuple[ProfileSummary, _Progress, CandidateStream, _Claimer]:
    """What every executor starts a profile run with: the summary, the progress bar, the
    candidate stream past what the store holds, and the claimer that shares the work."""
    run_id = uuid.uuid4().hex
    done_before = store.count_done(key, include_failed=include_failed)
    summary = ProfileSummary(
        run_id=run_id,
        executor=executor,
        target_name=spec.name,
        fingerprint_key=key,
        requested=samples,
        done_before=done_before,
        overlap=overlap,
    )
    label = f"profile {spec.name}" + ("" if executor == "local" else f" ({executor})")
    bar = _Progress(progress, samples, min(done_before, samples), label)
    stream = CandidateStream(source, seed, store.done_hashes(key, include_failed=include_failed))
    on_wait = (lambda done: bar.set(done, summary.ok, summary.failed)) if show_waits else None
    claimer = _Claimer(store, stream, key, run_id, samples, include_failed, on_wait=on_wait)
    return summary, bar, stream, claimer


def _run_local(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int,
    seed: int,
    group_size: int,
    progress: bool,
    overlap: bool,
    retry_failed: bool,
    protocol: Protocol,
    breaker: FailureBreaker,
    remeasure_unstable: int = REMEASURE_UNSTABLE,
) -> ProfileSummary:
    t_start = time.perf_counter()
    backend = open_backend(spec)
    fp = measurement_fingerprint(backend.fingerprint(), protocol)  # keyed by protocol too
    key = fingerprint_key(fp)
    include_failed = not retry_failed
    host, pid = socket.gethostname(), os.getpid()
    summary, bar, stream, claimer = start_run(
        store, source, spec, key, samples, seed, include_failed,
        executor="local", overlap=overlap, progress=progress, show_waits=True,
    )  # fmt: skip
    run_id = summary.run_id
    phases = summary.phases
    reference: Runner | None = None
    pool: ProcessPoolExecutor | None = None
    try:
        reference = reference_runner(backend, spec, protocol)
        _sweep_dead_workdirs()
        with tempfile.TemporaryDirectory(prefix=f"hwnas-profile-{os.getpid()}-") as tmp:
            if overlap:
                import multiprocessing

                pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

            def claim(in_flight: int = 0, wait: bool = True) -> list[Candidate]:
                t0 = time.perf_counter()
                s0, w0 = stream.sample_s, claimer.wait_s
                group = claimer.next_group(group_size, in_flight, wait=wait)
                phases["sample"] += stream.sample_s - s0
                phases["wait"] += claimer.wait_s - w0
                phases["store"] += (
                    (time.perf_counter() - t0) - (stream.sample_s - s0) - (claimer.wait_s - w0)
                )
                return group

            def export(group: list[Candidate]) -> list[Prepared]:
                t0 = time.perf_counter()
                out = export_group(source, group, tmp, spec.batch_size)
                phases["export"] += time.perf_counter() - t0
                return out

            group = claim()
            prepared = export(group)
            while prepared:
                future: Future[list[Prepared]] | None = None
                nxt: list[Candidate] = []
                if pool is not None:
                    # never sleep for other profilers while our own group waits to be timed
                    nxt = claim(in_flight=len(prepared), wait=False)
                    if nxt:
                        future = pool.submit(export_group, source, nxt, tmp, spec.batch_size)
                outcome = measure_group(
                    backend, protocol, source, prepared, reference, remeasure_unstable
                )
                summary.remeasured += outcome.remeasured
                phases["compile"] += outcome.compile_s
                phases["timing"] += outcome.timing_s
                t0 = time.perf_counter()
                for p, res in zip(prepared, outcome.results, strict=True):
                    row = make_row(
                        kind="profile",
                        candidate=p.candidate,
                        source=source,
                        spec=spec,
                        fingerprint=fp,
                        result=res,
                        run_id=run_id,
                        host=host,
                        pid=pid,
                    )
                    _, stored_kind = store.insert_measurement(row, release_run_id=run_id)
                    if stored_kind != "profile":
                        summary.kept_as_repeat += 1
                    elif res.status == "ok":
                        summary.ok += 1
                    else:
                        summary.failed += 1
                    breaker.record(res)
                    if p.onnx_path:
                        Path(p.onnx_path).unlink(missing_ok=True)
                phases["store"] += time.perf_counter() - t0
                bar.note(outcome.results)
                bar.set(claimer.done(), summary.ok, summary.failed)
                breaker.check()
                if future is None:
                    prepared = export(claim())
                else:
                    t0 = time.perf_counter()
                    try:
                        prepared = future.result()
                    except Exception:  # noqa: BLE001 - a dead export process: export here
                        prepared = []
                    phases["export"] += time.perf_counter() - t0
                    if not prepared:
                        prepared = export(nxt)
            summary.exhausted = stream.exhausted
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if reference is not None:
            reference.close()
        bar.close()
        with contextlib.suppress(UserError):  # locked at exit: the claims die with us
            store.release_claims(run_id)
    summary.done_after = store.count_done(key, include_failed=include_failed)
    summary.wall_s = time.perf_counter() - t_start
    if summary.exhausted and summary.done_after < samples:
        warnings.warn(
            f"space '{source.space_name}' yielded no new architecture in {stream.max_scan} "
            f"samples in a row; stopped at {summary.done_after} of {samples}",
            RuntimeWarning,
            stacklevel=2,
        )
    return summary


# -- repeatability ---------------------------------------------------------------------------


@dataclass
class RepeatReport:
    """How well stored latencies agree with a re-measurement in this (new) process."""

    target_name: str
    fingerprint_key: str
    requested: int
    measured: int
    failed: int
    within_5pct: float | None
    within_10pct: float | None
    median_abs_pct: float | None
    normalised: dict[str, float | None]  # the same figures for latency / reference latency
    run_id: str
    items: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _agreement(pairs: Sequence[tuple[float, float]]) -> dict[str, float | None]:
    diffs = [abs(new - old) / old * 100.0 for old, new in pairs if old > 0]
    if not diffs:
        return {"within_5pct": None, "within_10pct": None, "median_abs_pct": None, "n": 0}
    return {
        "within_5pct": sum(d <= 5.0 for d in diffs) / len(diffs),
        "within_10pct": sum(d <= 10.0 for d in diffs) / len(diffs),
        "median_abs_pct": statistics.median(diffs),
        "n": len(diffs),
    }


def repeat_measurements(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    n: int,
    seed: int = 0,
    group_size: int = 8,
    progress: bool = True,
    *,
    protocol: Protocol | None = None,
) -> RepeatReport:
    """Re-measure `n` stored ok architectures, store them as 'repeat' rows, report agreement.

    Pick them at random (seeded) among the 'profile' rows of this target's fingerprint and
    compare each new latency with the first stored one.
    """
    if n < 1:
        raise UserError(f"-n must be >= 1, got {n}")
    store.check_space(source.space_name, source.space_key, source.encoding_layout)
    protocol = protocol or Protocol.for_target(spec)
    backend = open_backend(spec)
    fp = measurement_fingerprint(backend.fingerprint(), protocol)  # keyed by protocol too
    key = fingerprint_key(fp)
    originals: dict[str, dict[str, Any]] = {}
    for row in store.rows(kind="profile", status="ok", fingerprint_key=key):
        originals.setdefault(row["arch_hash"], row)
    if not originals:
        known = ", ".join(
            f"{f['target_name']} ({f['fingerprint_key'][:12]}, {f['rows']} rows)"
            for f in store.fingerprints()
        )
        raise UserError(
            f"profile store {store.path} has no ok measurement of target '{spec.name}' with "
            f"this host's fingerprint ({key[:12]}); stored: {known or 'nothing'}; "
            "repeat on the machine that profiled, or profile this target first"
        )
    chosen = random.Random(seed).sample(sorted(originals), min(n, len(originals)))
    run_id = uuid.uuid4().hex
    host, pid = socket.gethostname(), os.getpid()
    bar = _Progress(progress, len(chosen), 0, f"repeat {spec.name}")
    items: list[dict[str, Any]] = []
    reference: Runner | None = None
    try:
        reference = reference_runner(backend, spec, protocol)
        with tempfile.TemporaryDirectory(prefix="hwnas-repeat-") as tmp:
            for start in range(0, len(chosen), group_size):
                group = [
                    Candidate(h, originals[h]["arch_json"], json.loads(originals[h]["encoding"]))
                    for h in chosen[start : start + group_size]
                ]
                prepared = export_group(source, group, tmp, spec.batch_size)
                outcome = measure_group(backend, protocol, source, prepared, reference)
                for p, res in zip(prepared, outcome.results, strict=True):
                    row = make_row(
                        kind="repeat",
                        candidate=p.candidate,
                        source=source,
                        spec=spec,
                        fingerprint=fp,
                        result=res,
                        run_id=run_id,
                        host=host,
                        pid=pid,
                    )
                    store.insert_measurement(row)
                    old = originals[res.arch_hash]
                    item: dict[str, Any] = {
                        "arch_hash": res.arch_hash,
                        "status": res.status,
                        "error": res.error,
                        "old_ms": old["latency_ms"],
                        "new_ms": None,
                        "pct_diff": None,
                        "old_reference_ms": old["reference_ms"],
                        "new_reference_ms": None,
                    }
                    if res.measurement is not None:
                        new = float(res.measurement["latency_ms"])
                        item["new_ms"] = new
                        item["new_reference_ms"] = res.measurement.get("reference_ms")
                        if old["latency_ms"]:
                            item["pct_diff"] = (new - old["latency_ms"]) / old["latency_ms"] * 100
                    items.append(item)
                    if p.onnx_path:
                        Path(p.onnx_path).unlink(missing_ok=True)
                bar.note(outcome.results)
                n_ok = sum(i["status"] == "ok" for i in items)
                bar.set(len(items), n_ok, len(items) - n_ok)
    finally:
        if reference is not None:
            reference.close()
        bar.close()
    ok = [i for i in items if i["new_ms"] is not None and i["old_ms"]]
    raw = _agreement([(float(i["old_ms"]), float(i["new_ms"])) for i in ok])
    norm = _agreement(
        [
            (float(i["old_ms"]) / i["old_reference_ms"], i["new_ms"] / i["new_reference_ms"])
            for i in ok
            if i["old_reference_ms"] and i["new_reference_ms"]
        ]
    )
    return RepeatReport(
        target_name=spec.name,
        fingerprint_key=key,
        requested=n,
        measured=len(ok),
        failed=len(items) - len(ok),
        within_5pct=raw["within_5pct"],
        within_10pct=raw["within_10pct"],
        median_abs_pct=raw["median_abs_pct"],
        normalised=norm,
        run_id=run_id,
        items=items,
    )
