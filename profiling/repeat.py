"""Repeatability: re-measure stored architectures in a new process and report how well the
figures agree (`hwnas db repeat`). The new figures are stored as 'repeat' rows."""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.groups import Drift, export_group, measure_group, open_backend, reference_runner
from profiling.results import Result, write_rows
from profiling.store import ProfileStore
from targets.backends.base import Runner
from targets.basics import UserError
from targets.fingerprint import fingerprint_key
from targets.progress import Progress
from targets.spec import TargetSpec
from targets.timing import Protocol, measurement_fingerprint


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
    originals = _originals(store, spec, key)
    chosen = random.Random(seed).sample(sorted(originals), min(n, len(originals)))
    run_id = uuid.uuid4().hex
    drift = Drift.for_target(backend, spec)
    bar = Progress(len(chosen), f"repeat {spec.name}", enabled=progress)
    unstable = 0
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
                outcome = measure_group(backend, protocol, source, prepared, reference, drift=drift)
                write_rows(
                    store, prepared, outcome, kind="repeat", source=source, spec=spec,
                    fingerprint=fp, run_id=run_id, release_claims=False,
                )  # fmt: skip
                items += [_item(res, originals[res.arch_hash]) for res in outcome.results]
                unstable += outcome.unstable()
                n_ok = sum(i["status"] == "ok" for i in items)
                bar.update(len(items), ok=n_ok, failed=len(items) - n_ok, unstable=unstable)
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


def _originals(store: ProfileStore, spec: TargetSpec, key: str) -> dict[str, dict[str, Any]]:
    """The first ok profile row of each architecture under `key`; UserError when none."""
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
    return originals


def _item(res: Result, old: dict[str, Any]) -> dict[str, Any]:
    """One line of the report: the stored figure next to the new one."""
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
    return item
