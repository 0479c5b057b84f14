"""Export a group of candidates and time it on a target: the work of every profile path
(local, Ray device host, repeat). Nothing here raises for a bad architecture: an export,
compile or run failure becomes that candidate's failed Result.

A group is timed together with `targets.timing.measure_runners` (interleaved rounds, the
reference network in the same rounds), then `check_reference_drift` marks the whole group
unstable when the reference ran slower than its recent baseline on this fingerprint (a host
slow for the whole measurement), as `hwnas measure` does.

`targets.timing.measure_onnx` times a group too, from the same primitives
(`compile_instances`, `compile_reference`, `measure_runners`, `check_reference_drift`), so
the figures of both agree by construction. What stays apart, and why: `measure_onnx` stops
at the first model that fails (a UserError naming it: the user asked for those models),
while `measure_group` must turn each failure into that candidate's failed row, time the
rest again without it, re-time unstable figures, and keep its reference runner (and the
drift key, `Drift`) open across groups; `measure_onnx` compiles the reference per call and
cannot take those as arguments without a change to targets/timing.py. The few lines both
write (compile each model, then `measure_runners` and the drift check) are that overlap.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from profiling.candidates import Candidate, CandidateSource
from profiling.results import GroupOutcome, Prepared, Result, error_text
from profiling.store import utc_now
from targets.backends.base import Backend, ModelArtifact, Runner, compile_instances
from targets.fingerprint import fingerprint_key
from targets.registry import create_backend
from targets.spec import TargetSpec
from targets.timing import (
    REFERENCE_NAME,
    Measurement,
    Protocol,
    RunnerFailed,
    check_reference_drift,
    compile_reference,
    measure_runners,
)

# Extra timing passes for figures the protocol marks unstable. Off by default: on the
# development host one extra pass cost 20 % of the throughput (65 -> 53 per minute) and did
# not make figures repeat better (docs/benchmarks.md); `hwnas profile --remeasure-unstable N`.
REMEASURE_UNSTABLE = 0


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


def open_backend(spec: TargetSpec) -> Backend:
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


class Drift:
    """Where `check_reference_drift` keeps the reference's best figure for a fingerprint."""

    def __init__(self, fp_key: str, cache_dir: str | None = None) -> None:
        self.fp_key, self.cache_dir = fp_key, cache_dir

    @classmethod
    def for_target(cls, backend: Backend, spec: TargetSpec) -> Drift:
        return cls(fingerprint_key(backend.fingerprint()), spec.options.get("cache_dir"))

    def check(
        self, results: Mapping[str, Measurement], protocol: Protocol
    ) -> dict[str, Measurement]:
        return check_reference_drift(results, self.fp_key, protocol, self.cache_dir)


def measure_group(
    backend: Backend,
    protocol: Protocol,
    source: CandidateSource | None,
    prepared: Sequence[Prepared],
    reference: Runner | None,
    remeasure_unstable: int = REMEASURE_UNSTABLE,
    drift: Drift | None = None,
) -> GroupOutcome:
    """Compile and time a group together; every candidate gets a Result, none raises.

    With a reference runner and `drift`, each timing pass goes through the reference-drift
    check. Figures the protocol marks unstable (its even and odd rounds disagree, or the
    reference ran slow: the host was busy) are timed again, together, up to
    `remeasure_unstable` times; the last figure is kept, with its own stable flag.
    """
    outcome = GroupOutcome(results=[], host=socket.gethostname(), pid=os.getpid())
    failed: dict[str, str] = {p.candidate.arch_hash: p.error for p in prepared if p.error}
    runners: dict[str, Runner] = {}
    measured: dict[str, Measurement] = {}

    def timed(todo: Mapping[str, Runner]) -> dict[str, Measurement]:
        results = measure_runners(todo, protocol, reference)
        if reference is not None and drift is not None:
            results = drift.check(results, protocol)
        return results

    t0 = time.perf_counter()
    try:
        _compile_group(backend, protocol, source, prepared, runners, failed)
        outcome.compile_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        todo = dict(runners)
        while todo:
            try:
                measured.update(timed(todo))
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
            again = {h: runners[h] for h, m in measured.items() if not m.stable and h not in failed}
            if not again:
                break
            try:
                measured.update(timed(again))
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


def _compile_group(
    backend: Backend,
    protocol: Protocol,
    source: CandidateSource | None,
    prepared: Sequence[Prepared],
    runners: dict[str, Runner],
    failed: dict[str, str],
) -> None:
    """Compile each exported candidate into `runners` and run it once untimed; a failure
    goes to `failed` (by arch hash), so one bad model never stops its group."""
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
