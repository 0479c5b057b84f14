"""What a profile run holds whichever executor times it: the summary and its phase
clock, the progress bar, the candidate stream and its claims, the failure breaker, and
`store_group`, the one place measured rows of a profile run reach the store.

Nothing crashes the run but the user: an export, compile or run failure becomes a
'failed' row with the error, and only a long unbroken run of target failures (the
target itself is broken) stops it, with one clear error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.claims import CandidateStream, Claimer
from profiling.results import GroupOutcome, Prepared, ProfileSummary, Result, write_rows
from profiling.store import ProfileStore, pid_alive
from targets.basics import UserError
from targets.progress import Progress as TargetsProgress
from targets.spec import TargetSpec


class Progress:
    """targets.progress.Progress with the profiler's counters (ok, failed, unstable so far)."""

    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar = TargetsProgress(total, desc, initial=initial, enabled=enabled)
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


def sweep_dead_workdirs(min_age_s: float = 60.0) -> None:
    """Remove export folders left by profilers that were killed (their pid is gone)."""
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob("hwnas-profile-*-*"):
        pid_text = path.name.split("-")[2]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and now - path.stat().st_mtime > min_age_s:
                shutil.rmtree(path, ignore_errors=True)


class ProfileRun:
    """One profile run's state, shared by the local and the Ray executor."""

    def __init__(
        self,
        store: ProfileStore,
        source: CandidateSource,
        spec: TargetSpec,
        key: str,
        samples: int,
        seed: int,
        *,
        retry_failed: bool,
        breaker: FailureBreaker,
        executor: str,
        overlap: bool,
        progress: bool,
        show_waits: bool = False,
    ) -> None:
        self.store, self.source, self.spec, self.key = store, source, spec, key
        self.samples, self.breaker = samples, breaker
        self.include_failed = not retry_failed
        done_before = store.count_done(key, include_failed=self.include_failed)
        self.summary = ProfileSummary(
            run_id=uuid.uuid4().hex,
            executor=executor,
            target_name=spec.name,
            fingerprint_key=key,
            requested=samples,
            done_before=done_before,
            overlap=overlap,
        )
        self.run_id = self.summary.run_id
        self.phases = self.summary.phases
        label = f"profile {spec.name}" + ("" if executor == "local" else f" ({executor})")
        self.bar = Progress(progress, samples, min(done_before, samples), label)
        self.stream = CandidateStream(
            source, seed, store.done_hashes(key, include_failed=self.include_failed)
        )
        on_wait = (
            (lambda done: self.bar.set(done, self.summary.ok, self.summary.failed))
            if show_waits
            else None
        )
        self.claimer = Claimer(
            store, self.stream, key, self.summary.run_id, samples, self.include_failed,
            on_wait=on_wait,
        )  # fmt: skip

    def claim(self, size: int, in_flight: int = 0, wait: bool = True) -> list[Candidate]:
        """The next claimed group ([] when done); its time goes to sample, wait and store."""
        t0 = time.perf_counter()
        s0, w0 = self.stream.sample_s, self.claimer.wait_s
        group = self.claimer.next_group(size, in_flight, wait=wait)
        sampled, waited = self.stream.sample_s - s0, self.claimer.wait_s - w0
        self.phases["sample"] += sampled
        self.phases["wait"] += waited
        self.phases["store"] += time.perf_counter() - t0 - sampled - waited
        return group

    def store_group(
        self, prepared: Sequence[Prepared], outcome: GroupOutcome, fingerprint: dict[str, Any]
    ) -> None:
        """Store a timed group's rows (releasing their claims), count them, and stop the run
        (UserError) when the target has failed too often in a row."""
        self.summary.remeasured += outcome.remeasured
        t0 = time.perf_counter()
        kinds = write_rows(
            self.store, prepared, outcome, kind="profile", source=self.source, spec=self.spec,
            fingerprint=fingerprint, run_id=self.run_id, release_claims=True,
        )  # fmt: skip
        for res, stored in zip(outcome.results, kinds, strict=True):
            if stored != "profile":
                self.summary.kept_as_repeat += 1
            elif res.status == "ok":
                self.summary.ok += 1
            else:
                self.summary.failed += 1
            self.breaker.record(res)
        self.phases["store"] += time.perf_counter() - t0
        self.bar.note(outcome.results)
        self.bar.set(self.claimer.done(), self.summary.ok, self.summary.failed)
        self.breaker.check()

    def close(self) -> None:
        """Close the bar and drop this run's claims (those not stored die with it)."""
        self.bar.close()
        with contextlib.suppress(UserError):  # locked at exit: the claims die with us
            self.store.release_claims(self.run_id)

    def finish(self, t_start: float) -> ProfileSummary:
        self.summary.exhausted = self.stream.exhausted
        self.summary.done_after = self.store.count_done(
            self.key, include_failed=self.include_failed
        )
        self.summary.wall_s = time.perf_counter() - t_start
        return self.summary
