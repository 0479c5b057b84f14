"""What a profile run produces: a group's results, the run's summary, and the rows they
become. Plain data (it travels back from Ray device hosts) plus the one function that
turns results into stored rows, shared by the local and Ray profilers and by repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.store import ProfileStore
from targets.fingerprint import fingerprint_key
from targets.spec import TargetSpec

PHASES = ("sample", "export", "compile", "timing", "store", "wait")
_ERROR_CHARS = 2000


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
    """A timed group: one Result per candidate, in order, and where and how long it took."""

    results: list[Result]
    compile_s: float = 0.0
    timing_s: float = 0.0
    remeasured: int = 0  # unstable figures timed once more
    fingerprint: dict[str, Any] | None = None
    host: str = ""
    pid: int = 0
    reference_compiled: bool = False  # this group compiled the reference network (Ray)

    def unstable(self) -> int:
        """Figures the protocol marked unstable (the host was busy): a progress counter."""
        return sum(
            1
            for r in self.results
            if r.measurement is not None and r.measurement.get("stable") is False
        )


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
    reference_compiles: int = 0  # Ray: compiles of the reference network on device hosts

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
        "clock_mhz": m.get("clock_mhz"),
    }


def write_rows(
    store: ProfileStore,
    prepared: Sequence[Prepared],
    outcome: GroupOutcome,
    *,
    kind: str,
    source: CandidateSource,
    spec: TargetSpec,
    fingerprint: dict[str, Any],
    run_id: str,
    release_claims: bool,
) -> list[str]:
    """Store one row per result, each in its own transaction, and delete the group's ONNX
    files; returns the kind each row was stored as ('repeat' for a raced duplicate)."""
    kinds: list[str] = []
    for p, res in zip(prepared, outcome.results, strict=True):
        row = make_row(
            kind=kind,
            candidate=p.candidate,
            source=source,
            spec=spec,
            fingerprint=fingerprint,
            result=res,
            run_id=run_id,
            host=outcome.host,
            pid=outcome.pid,
        )
        _, stored = store.insert_measurement(row, release_run_id=run_id if release_claims else None)
        kinds.append(stored)
        if p.onnx_path:
            Path(p.onnx_path).unlink(missing_ok=True)
    return kinds
