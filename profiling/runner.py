"""Profile a target: sample candidates, export, compile, time in groups, store every row.

Why it is built this way:

* Resumable and shareable: candidates come from a seeded stream past what the store holds,
  claimed in the store before they are exported (profiling/claims.py), so a rerun continues
  to N without duplicates and profilers sharing a store split the work. Each row is
  committed in its own transaction the moment its group is timed (profiling/session.py).
* Honest timing: a group of candidates is timed together, with the reference network in
  the same rounds and its drift checked (profiling/groups.py).
* Nothing crashes the run but the user: failures become 'failed' rows; only a target that
  fails architecture after architecture stops the run.
* No overlap by default. Exporting the next group in the background while this one is
  timed was measured on the 2-core development host (`bench/profile_throughput.py
  --overlap-check`, tiny space, ort-cpu, default protocol): with an exporter busy beside
  the timing (a thread or a process alike) the group's p10 latency rose by 16-19%, its
  median by 125-163% and its timing wall time doubled, while export is only ~17% of the
  wall time. `overlap=True` (`--overlap`) exports in a background process for hosts where
  that check shows no disturbance (say a GPU target with idle CPU cores). The Ray executor
  (profiling/ray_executor.py) overlaps without harm: the driver exports while the device
  hosts time.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace

from profiling.candidates import Candidate, CandidateSource
from profiling.groups import (
    Drift,
    export_group,
    measure_group,
    open_backend,
    reference_runner,
)
from profiling.ray_executor import run_profile_ray
from profiling.results import Prepared, ProfileSummary
from profiling.session import FailureBreaker, ProfileRun, ProfileSettings, sweep_dead_workdirs
from profiling.store import ProfileStore
from targets.backends.base import Runner
from targets.basics import UserError
from targets.fingerprint import fingerprint_key
from targets.spec import TargetSpec
from targets.timing import Protocol, measurement_fingerprint

__all__ = ["ProfileSettings", "run_profile"]


def run_profile(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int | None,
    *,
    settings: ProfileSettings | None = None,
) -> ProfileSummary:
    """Measure candidates until the store holds `samples` architectures for this target
    (None: every candidate of a finite source, one with `size`, that it lacks).

    Counts architectures with a 'profile' row under the target's fingerprint (failed ones
    too, unless `settings.retry_failed`), so a rerun continues where the last one stopped.
    """
    settings = settings or ProfileSettings()
    if samples is not None and samples < 0:
        raise UserError(f"--samples must be >= 0, got {samples}")
    store.bind_space(
        source.space_name, source.space_key, source.space_config, source.encoding_layout
    )
    settings = replace(settings, protocol=settings.protocol or Protocol.for_target(spec))
    breaker = FailureBreaker(spec.cli_ref, settings.max_failures_in_a_row)
    if settings.executor == "ray":
        return run_profile_ray(source, spec, store, samples, settings=settings, breaker=breaker)
    return _run_local(source, spec, store, samples, settings=settings, breaker=breaker)


def _run_local(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int | None,
    *,
    settings: ProfileSettings,
    breaker: FailureBreaker,
) -> ProfileSummary:
    """The local executor: export, time and store one group after another (with
    `settings.overlap`, the next group is exported in a background process meanwhile)."""
    protocol = settings.protocol or Protocol.for_target(spec)
    group_size = settings.group_size
    t_start = time.perf_counter()
    backend = open_backend(spec)
    fp = measurement_fingerprint(backend.fingerprint(), protocol)  # keyed by protocol too
    key = fingerprint_key(fp)
    drift = Drift.for_target(backend, spec)
    run = ProfileRun(store, source, spec, key, samples, settings, breaker=breaker, show_waits=True)
    phases = run.phases
    reference: Runner | None = None
    pool: ProcessPoolExecutor | None = None
    try:
        reference = reference_runner(backend, spec, protocol)
        sweep_dead_workdirs()
        with tempfile.TemporaryDirectory(prefix=f"hwnas-profile-{os.getpid()}-") as tmp:
            if settings.overlap:
                pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

            def export(group: list[Candidate]) -> list[Prepared]:
                t0 = time.perf_counter()
                out = export_group(source, group, tmp, spec.batch_size)
                phases["export"] += time.perf_counter() - t0
                return out

            prepared = export(run.claim(group_size))
            while prepared:
                future: Future[list[Prepared]] | None = None
                nxt: list[Candidate] = []
                if pool is not None:
                    # never sleep for other profilers while our own group waits to be timed
                    nxt = run.claim(group_size, in_flight=len(prepared), wait=False)
                    if nxt:
                        future = pool.submit(export_group, source, nxt, tmp, spec.batch_size)
                outcome = measure_group(
                    backend, protocol, source, prepared, reference, settings.remeasure_unstable,
                    drift,
                )  # fmt: skip
                phases["compile"] += outcome.compile_s
                phases["timing"] += outcome.timing_s
                run.store_group(prepared, outcome, fp)
                if future is None:
                    prepared = export(run.claim(group_size))
                else:
                    t0 = time.perf_counter()
                    try:
                        prepared = future.result()
                    except Exception:  # noqa: BLE001 - a dead export process: export here
                        prepared = []
                    phases["export"] += time.perf_counter() - t0
                    if not prepared:
                        prepared = export(nxt)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if reference is not None:
            reference.close()
        run.close()
    summary = run.finish(t_start)
    if summary.exhausted and summary.done_after < run.samples and run.stream.stop_at is None:
        warnings.warn(
            f"space '{source.space_name}' yielded no new architecture in {run.stream.max_scan} "
            f"samples in a row; stopped at {summary.done_after} of {run.samples}",
            RuntimeWarning,
            stacklevel=2,
        )
    return summary
