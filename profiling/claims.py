"""Which candidates a profile run measures next: a seeded stream past what the store
holds, claimed in the store so that profilers sharing it split the work.

Candidates come from a seeded stream; architectures that already have a 'profile' row
under the target's fingerprint are skipped, so the same command run again (after a crash
or `kill -9`) continues to N without duplicates. Before a group is exported the profiler
*claims* its architectures in the store; other profilers on the same store skip claimed
ones and stop when the store holds N. A claim of a dead profiler is taken over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from profiling.candidates import Candidate, CandidateSource
from profiling.store import ProfileStore
from targets.basics import UserError


class CandidateStream:
    """The seeded stream of candidates, minus those already seen or done.

    Stops (`exhausted`) after `max_scan` indices in a row bring nothing new: a small space
    (or N larger than the space) must end the run, not spin; and at `stop_at`, the end of a
    finite source (given architectures).
    """

    def __init__(
        self,
        source: CandidateSource,
        seed: int,
        skip: set[str],
        max_scan: int = 2000,
        stop_at: int | None = None,
    ) -> None:
        self.source = source
        self.seed = seed
        self.seen = set(skip)
        self.index = 0
        self.max_scan = max_scan
        self.stop_at = stop_at
        self.exhausted = False
        self.sample_s = 0.0
        self.sample_errors = 0

    def take(self, k: int) -> list[Candidate]:
        out: list[Candidate] = []
        misses = 0
        while len(out) < k and not self.exhausted:
            if self.stop_at is not None and self.index >= self.stop_at:
                self.exhausted = True
                break
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


class Claimer:
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
