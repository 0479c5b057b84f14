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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.claims import CandidateStream, Claimer
from profiling.groups import REMEASURE_UNSTABLE
from profiling.results import GroupOutcome, Prepared, ProfileSummary, Result, write_rows
from profiling.store import ProfileStore, pid_alive
from targets.basics import UserError, check_range
from targets.progress import Progress
from targets.protocol import Protocol
from targets.spec import TargetSpec


@dataclass(frozen=True)
class ProfileSettings:
    """How a profile run works, whichever executor times it; checked when made, so a bad
    setting is refused before a store is opened.

    `executor` is "local" or "ray" (`address`: the Ray cluster; `max_in_flight` groups on
    the devices at once, default one per device plus one; `num_cpus` per Ray task).
    `overlap` exports the next group in a background process (local executor; see
    profiling/runner.py for when that is safe). `retry_failed` measures architectures whose
    stored row failed again. `protocol` defaults to the target's. The run stops with a
    UserError after `max_failures_in_a_row` target failures in a row (0: never); figures the
    protocol marks unstable are timed again up to `remeasure_unstable` times.
    """

    seed: int = 0
    executor: str = "local"
    address: str | None = None
    group_size: int = 8
    progress: bool = True
    overlap: bool = False
    retry_failed: bool = False
    protocol: Protocol | None = None
    max_in_flight: int | None = None
    max_failures_in_a_row: int = 16
    remeasure_unstable: int = REMEASURE_UNSTABLE
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        check_range("--seed", self.seed, 0)
        if self.group_size < 1:
            raise UserError(f"--group-size must be >= 1, got {self.group_size}")
        if self.remeasure_unstable < 0:
            raise UserError(f"--remeasure-unstable must be >= 0, got {self.remeasure_unstable}")
        if self.executor not in ("local", "ray"):
            raise UserError(f"unknown executor {self.executor!r}; use local or ray")
        if self.address is not None and self.executor != "ray":
            raise UserError("--address needs --executor ray")


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
        samples: int | None,
        settings: ProfileSettings,
        *,
        breaker: FailureBreaker,
        show_waits: bool = False,
    ) -> None:
        self.store, self.source, self.spec, self.key = store, source, spec, key
        self.include_failed = not settings.retry_failed
        executor = settings.executor
        done_before = store.count_done(key, include_failed=self.include_failed)
        done = store.done_hashes(key, include_failed=self.include_failed)
        size = getattr(source, "size", None)
        if samples is None:  # every candidate of a finite source that the store lacks
            if size is None:
                raise ValueError("samples=None needs a finite candidate source (one with `size`)")
            given = {source.sample(settings.seed, i).arch_hash for i in range(size)}
            samples = done_before + len(given - done)
        self.samples, self.breaker = samples, breaker
        self.summary = ProfileSummary(
            run_id=uuid.uuid4().hex,
            executor=executor,
            target_name=spec.name,
            fingerprint_key=key,
            requested=samples,
            done_before=done_before,
            overlap=settings.overlap or executor == "ray",  # Ray exports while devices time
        )
        self.run_id = self.summary.run_id
        self.phases = self.summary.phases
        label = f"profile {spec.name}" + ("" if executor == "local" else f" ({executor})")
        self.bar = Progress(
            samples, label, initial=min(done_before, samples), enabled=settings.progress
        )
        self.unstable = 0  # figures the protocol marked unstable so far (a bar counter)
        self.stream = CandidateStream(source, settings.seed, done, stop_at=size)
        on_wait = self._show if show_waits else None
        self.claimer = Claimer(
            store, self.stream, key, self.summary.run_id, samples, self.include_failed,
            on_wait=on_wait,
        )  # fmt: skip

    def _show(self, done: int) -> None:
        s = self.summary
        self.bar.update(done, ok=s.ok, failed=s.failed, unstable=self.unstable)

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
        self.unstable += outcome.unstable()
        self._show(self.claimer.done())
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
