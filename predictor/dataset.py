"""(encoding, latency) datasets split by architecture hash, and the rules a fit applies to them.

`predictor.profiles.load_profiles` reads one from a profile store; this module holds the
data and the rules (how many architectures a fit needs, what an unstable row is), so
those are read without touching a store.
The split hashes each architecture hash with a seed: it is stable when the store grows
(an architecture never moves from test to train), and every measurement of one
architecture lands in one split, so repeated architectures cannot leak into the test set.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from targets.basics import UserError
from targets.timing import drift_baseline

MIN_SAMPLES = 50  # profiled architectures needed to fit a predictor from scratch
MIN_SAMPLES_INIT = 30  # ... to adapt one fitted on another target (`predictor fit --init`)
MIN_EVAL = 5  # architectures needed in each of validation and test
RECOMMENDED_SAMPLES = 1000


def min_samples(init: bool = False) -> int:
    """The one rule for how many profiled architectures a fit needs (profile, run, fit)."""
    return MIN_SAMPLES_INIT if init else MIN_SAMPLES


def samples_rule() -> str:
    """The rule in words, for every message that enforces or hints at it."""
    return (
        f"a latency predictor needs at least {MIN_SAMPLES} profiled architectures "
        f"({MIN_SAMPLES_INIT} to adapt one fitted on another target with --init; "
        f"~{RECOMMENDED_SAMPLES} for an accurate one from scratch)"
    )


SPLITS = ("train", "val", "test")
LABELS = ("auto", "raw", "reference")
Row = dict[str, Any]  # one store row, by column name


@dataclass
class Dataset:
    """One row per architecture: its encoding, latency (median of its ok profile rows) and spread."""

    db: str
    target_name: str
    space_name: str
    space_key: str
    space_config: dict[str, Any]
    encoding_layout: list[str]
    fingerprint: dict[str, Any]
    fingerprint_key: str
    hashes: list[str]
    X: np.ndarray  # [N, D] float32
    latency_ms: np.ndarray  # [N]
    n_measurements: np.ndarray  # [N] ok profile rows per architecture
    spread: np.ndarray  # [N] median within-run spread (p90-p10)/median, nan if unknown
    repeat_ms: np.ndarray  # [N] first ok repeat measurement, nan where none
    split: np.ndarray  # [N] index into SPLITS
    split_seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    stats: dict[str, Any] = field(default_factory=dict)
    # [N] median stored (raw) latency; equals latency_ms for the raw label
    raw_ms: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    def indices(self, name: str) -> np.ndarray:
        """Row indices of split `name` ('train', 'val', 'test' or 'all')."""
        if name == "all":
            return np.arange(len(self))
        return np.flatnonzero(self.split == SPLITS.index(name))

    def subset(self, idx: np.ndarray) -> Dataset:
        idx = np.asarray(idx, dtype=np.int64)
        return replace(
            self,
            hashes=[self.hashes[i] for i in idx],
            X=self.X[idx],
            latency_ms=self.latency_ms[idx],
            n_measurements=self.n_measurements[idx],
            spread=self.spread[idx],
            repeat_ms=self.repeat_ms[idx],
            split=self.split[idx],
            raw_ms=None if self.raw_ms is None else self.raw_ms[idx],
        )

    def counts(self) -> dict[str, int]:
        return {name: int((self.split == i).sum()) for i, name in enumerate(SPLITS)}


def _split_u(arch_hash: str, seed: int) -> float:
    digest = hashlib.sha256(f"hwnas-split:{seed}:{arch_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _split_at(u: float, val_frac: float, test_frac: float) -> int:
    return 2 if u < test_frac else 1 if u < test_frac + val_frac else 0


def split_of(arch_hash: str, seed: int, val_frac: float, test_frac: float) -> int:
    """0/1/2 for train/val/test, from a seeded hash of the architecture hash."""
    return _split_at(_split_u(arch_hash, seed), val_frac, test_frac)


def assign_splits(
    hashes: Sequence[str], seed: int, val_frac: float, test_frac: float, floor: int = MIN_EVAL
) -> np.ndarray:
    """Splits (0/1/2) by `split_of`, topped up so that val and test each hold `floor`
    architectures whenever there are enough of them.

    A split by hash alone is stable as the store grows, but a small store may get too few
    in val or test (55 architectures once gave val 4), so "at least MIN_SAMPLES" would not
    be enough. The top-up takes the architectures whose hash lies nearest above the
    region (val -> test, train -> val); once the store is large enough they fall back to
    their own split, so a store that grows keeps its splits as it did before.
    """
    u = np.array([_split_u(h, seed) for h in hashes], dtype=np.float64)
    split = np.array([_split_at(v, val_frac, test_frac) for v in u], dtype=np.int64)
    if len(hashes) < 2 * floor + MIN_EVAL * 4:
        return split
    for target in (2, 1):  # test first: it takes from val, which then takes from train
        short = floor - int((split == target).sum())
        if short <= 0:
            continue
        donors = np.flatnonzero(split != 2) if target == 2 else np.flatnonzero(split == 0)
        for i in donors[np.argsort(u[donors], kind="stable")][:short]:
            split[i] = target
    return split


class ArchRows:
    """Store rows gathered per architecture (encoding, labels, raw latencies, spreads, the
    first repeat measurement): what a Dataset's one row per architecture is the median of."""

    def __init__(self) -> None:
        self.enc: dict[str, list[float]] = {}
        self.lat: dict[str, list[float]] = {}
        self.raw: dict[str, list[float]] = {}
        self.spr: dict[str, list[float]] = {}
        self.rep: dict[str, float] = {}

    @classmethod
    def collect(
        cls, ok: list[Row], prof_ok: list[Row], baseline: float | None, db: Path
    ) -> ArchRows:
        """Gather the ok rows; `baseline` (ms) scales reference-normalised labels back to
        milliseconds (None: the raw latency is the label)."""

        def value(r: Row) -> float:
            if baseline is None:
                return float(r["latency_ms"])
            return float(r["latency_ms"]) / float(r["reference_ms"]) * baseline

        agg = cls()
        for r in prof_ok:
            h = r["arch_hash"]
            if h not in agg.enc:
                agg.enc[h] = parse_encoding(r["encoding"], r["id"], db)
            agg.lat.setdefault(h, []).append(value(r))
            agg.raw.setdefault(h, []).append(float(r["latency_ms"]))
            if r["spread"] is not None:
                agg.spr.setdefault(h, []).append(float(r["spread"]))
        for r in ok:
            if (
                r["kind"] == "repeat"
                and r["arch_hash"] in agg.enc
                and r["arch_hash"] not in agg.rep
            ):
                agg.rep[r["arch_hash"]] = value(r)
        return agg

    def arrays(self, hashes: list[str]) -> dict[str, np.ndarray]:
        """The Dataset's per-architecture arrays, in the order of `hashes`."""
        return {
            "X": np.asarray([self.enc[h] for h in hashes], dtype=np.float32),
            "latency_ms": np.asarray([float(np.median(self.lat[h])) for h in hashes]),
            "n_measurements": np.asarray([len(self.lat[h]) for h in hashes], dtype=np.int64),
            "spread": np.asarray(
                [float(np.median(self.spr[h])) if h in self.spr else np.nan for h in hashes]
            ),
            "repeat_ms": np.asarray([self.rep.get(h, np.nan) for h in hashes]),
            "raw_ms": np.asarray([float(np.median(self.raw[h])) for h in hashes]),
        }

    def check_layout(self, hashes: list[str], layout: list[str] | None, db: Path) -> list[str]:
        """The encoding layout, checked against the stored encodings' one length."""
        dims = Counter(len(self.enc[h]) for h in hashes)
        if len(dims) > 1:
            raise UserError(
                f"profile store {db} has encodings of several lengths {dict(dims)}: the store is corrupted"
            )
        dim = next(iter(dims))
        if layout is None:
            layout = [f"x{i}" for i in range(dim)]
        if len(layout) != dim:
            raise UserError(
                f"profile store {db}: encodings have {dim} entries but the meta encoding_layout has {len(layout)}"
            )
        return layout


def parse_encoding(text: str | None, row_id: int, db: Path) -> list[float]:
    """A stored encoding (JSON text) as floats; UserError naming the row when it is not one."""
    try:
        vec = json.loads(text) if text is not None else None
    except ValueError:
        vec = None
    if not isinstance(vec, list) or not vec or not all(isinstance(v, (int, float)) for v in vec):
        raise UserError(
            f"profile store {db}: row {row_id} has no valid encoding (a JSON list of numbers)"
        )
    return [float(v) for v in vec]


DRIFT_TOLERANCE = 0.05  # targets.timing.Protocol's default drift_tolerance


def unstable_counts(rows: Sequence[Any], best_reference: float | None = None) -> dict[str, Any]:
    """How many ok profile rows were flagged unstable, and why.

    The store keeps the flag, not the reason. A flagged row whose reference network ran
    more than 5 % above the rows' reference baseline (targets.timing.drift_baseline: the
    25th percentile of their reference figures, as the drift rule uses) was timed while the
    host ran slow throughout (reference drift); any other flagged row failed the
    split-half check (its even and odd rounds disagreed, or its spread was too wide).
    `best_reference` overrides the baseline.
    """
    refs = [float(r["reference_ms"]) for r in rows if r["reference_ms"] and r["reference_ms"] > 0]
    best = best_reference if best_reference is not None else (drift_baseline(refs) or (min(refs) if refs else None))
    flagged = [r for r in rows if r["stable"] is not None and int(r["stable"]) == 0]
    drift = sum(
        1
        for r in flagged
        if best is not None
        and r["reference_ms"]
        and float(r["reference_ms"]) > best * (1.0 + DRIFT_TOLERANCE)
    )
    return {
        "unstable_rows": len(flagged),
        "unstable_reference_drift": drift,
        "unstable_split_half": len(flagged) - drift,
    }


def describe_unstable(stats: dict[str, Any]) -> str | None:
    """One line for a report, or None when no row was unstable (or nothing is known)."""
    n = stats.get("unstable_rows")
    if not n:
        return None
    total = stats.get("ok_profile_rows") or 0
    if not stats.get("include_unstable", True):
        total += n  # ok_profile_rows counts the rows the fit kept, without the flagged ones
    return (
        f"{n} of {total} profile rows were flagged unstable: {stats.get('unstable_split_half', 0)} "
        f"split-half (even and odd rounds disagreed: a busy host), "
        f"{stats.get('unstable_reference_drift', 0)} reference drift (the reference network ran "
        f">{100 * DRIFT_TOLERANCE:.0f}% above its recent baseline: the host ran slow); "
        + (
            "they are used, but re-measure them (`hwnas db repeat`) if the fit looks noisy"
            if stats.get("include_unstable", True)
            else "they are left out (--include-unstable fits on them); re-measure them "
            "(`hwnas db repeat`) to use them"
        )
    )


def training_hashes(ds: Dataset) -> list[str]:
    """Short hashes (16 hex) of the architectures a fit on `ds` may consume (train + val)."""
    keep = ds.split != SPLITS.index("test")
    return sorted(h[:16] for h, k in zip(ds.hashes, keep, strict=True) if k)


def check_splits(ds: Dataset, need: tuple[str, ...] = ("train", "val", "test")) -> None:
    """UserError when a split is too small to train on or to report honestly."""
    counts = ds.counts()
    for name in need:
        floor = MIN_EVAL if name != "train" else MIN_EVAL * 4
        if counts[name] < floor:
            raise UserError(
                f"only {counts[name]} architectures fall in the {name} split of {len(ds)} "
                f"(split {counts}); {floor} are needed: profile more architectures "
                f"(~{RECOMMENDED_SAMPLES} recommended)"
            )
