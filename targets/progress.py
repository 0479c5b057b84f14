"""Progress of long work: a tqdm bar on a terminal, a plain line now and then elsewhere.

Off a terminal (CI, nohup, a pipe) a bar is noise, but silence for an hour is worse: the
user cannot tell a slow run from a hung one. So `Progress` writes one line to stderr every
`every_s` seconds, or each time another `every_frac` of the work is done (but not more
often than every `min_gap_s`), with the rate, the ETA and the counters the caller passes
(ok, failed, unstable so far). Work shorter than `min_gap_s` prints nothing. Shared by
the profiler, `db repeat` and the predictor fit; the clock is injectable for tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """`update(done, **counters)` after each step; `close()` at the end (also on error)."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        unit: str = "arch",
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = 10.0,
        every_frac: float = 0.05,
        min_gap_s: float = 2.0,
        tty: bool | None = None,
    ) -> None:
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.initial = self.done = min(initial, self.total) if self.total else initial
        self.stream = stream if stream is not None else sys.stderr
        self.clock, self.every_s, self.every_frac, self.min_gap_s = (
            clock,
            every_s,
            every_frac,
            min_gap_s,
        )
        self.enabled = enabled
        self.counters: dict[str, Any] = {}
        self.lines = 0
        self.bar: Any = None
        self._start = self._last_t = clock()
        self._last_done = self.done
        is_tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled and is_tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=desc,
                unit=unit,
                dynamic_ncols=True,
                smoothing=0.1,
                file=self.stream,
            )

    def update(self, done: int, **counters: Any) -> None:
        """Set the position (absolute) and the counters shown next to it."""
        self.done = min(done, self.total) if self.total else done
        self.counters.update(counters)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix(self.counters, refresh=False)
            self.bar.refresh()
            return
        now = self.clock()
        since = now - self._last_t
        step = self.every_frac * self.total if self.total else float("inf")
        if since >= self.every_s or (
            self.done - self._last_done >= step and since >= self.min_gap_s
        ):
            self._line(now)

    def line(self, now: float | None = None) -> str:
        """The status line: done/total, share, rate, ETA and the counters."""
        now = self.clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        progressed = self.done - self.initial
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}"]
        if self.total:
            parts[0] += f" ({self.done / self.total:.0%})"
        if progressed > 0:
            rate = progressed / elapsed
            per_min = rate * 60
            parts.append(
                f"{per_min:.1f} {self.unit}/min" if per_min < 600 else f"{rate:.1f} {self.unit}/s"
            )
            if self.total and self.done < self.total:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
        parts += [f"{k} {v}" for k, v in self.counters.items()]
        return ", ".join(parts)

    def _line(self, now: float) -> None:
        print(self.line(now), file=self.stream, flush=True)
        self.lines += 1
        self._last_t, self._last_done = now, self.done

    def close(self) -> None:
        """Close the bar; off a terminal, a last line if any was printed (the final count)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.lines and self.done != self._last_done:
            self._line(self.clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
