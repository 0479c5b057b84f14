"""(encoding, latency) datasets read from a profile store, split by architecture hash.

The store is opened read-only through `profiling.store.ProfileStore` and read with its
query method, so the schema and its SQL live in one module and a reader never takes a
writer's lock.
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

from profiling.store import ProfileStore
from targets.basics import UserError

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


def split_of(arch_hash: str, seed: int, val_frac: float, test_frac: float) -> int:
    """0/1/2 for train/val/test, from a seeded hash of the architecture hash."""
    digest = hashlib.sha256(f"hwnas-split:{seed}:{arch_hash}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_frac:
        return 2
    if u < test_frac + val_frac:
        return 1
    return 0


def _parse_meta_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text  # a bare string (e.g. a space key written without JSON quotes)


def _open(db: str | Path) -> ProfileStore:
    path = Path(db)
    if not path.exists():
        raise UserError(
            f"profile store {path} does not exist; create one with `hwnas profile --db {path} ...`"
        )
    if path.is_dir():
        raise UserError(f"profile store {path} is a directory, not an SQLite file")
    return ProfileStore(path, readonly=True)


def read_meta(db: str | Path) -> dict[str, Any]:
    """The store's meta table (space_key, space_config, encoding_layout, ...), values JSON-decoded."""
    with _open(db) as store:
        return {k: _parse_meta_value(v) for k, v in store.meta().items()}


# What the dataset reads of each row (the store's column names).
_COLUMNS = (
    "id", "kind", "arch_hash", "encoding", "space_name", "space_key", "target_name",
    "fingerprint", "fingerprint_key", "status", "error", "latency_ms", "spread",
    "reference_ms", "stable",
)  # fmt: skip


def _resolve_target_name(target: str) -> str:
    """A target name, or the name inside a target TOML file."""
    if target.endswith(".toml") and Path(target).is_file():
        from targets.registry import load_target  # lazy: only needed for a path

        return load_target(target).name
    return target


def load_dataset(
    db: str | Path,
    target: str,
    *,
    space: str | None = None,
    fingerprint: str | None = None,
    allow_mixed: bool = False,
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    min_samples: int = MIN_SAMPLES,
    label: str = "auto",
    include_unstable: bool = False,
    baseline_ms: float | None = None,
) -> Dataset:
    """Read the ok profile rows of one target (and one fingerprint) into a split dataset.

    `space` is a space name or (a prefix of) its key; `fingerprint` a (prefix of a)
    fingerprint key chosen among several. Raises UserError with counts and a fix for an
    empty, tiny, failed-only or mixed-fingerprint store.

    `label` is what the models learn: "raw" (the stored latency), "reference" (the latency
    divided by the reference network's figure from the same rounds, times the median
    reference figure of the rows: host drift between measurements cancels; on the
    development host it brought the MLP's MAPE against a later re-measurement from 4.0 % to
    3.8 %, docs/benchmarks.md), or "auto" (reference when every row has it, else raw).

    Rows the timing protocol flagged unstable (`stable = 0`: its rounds disagreed, the host
    was busy) are left out unless `include_unstable`; rows with no flag are kept.

    `baseline_ms` replaces the median reference figure (a saved predictor's baseline, so
    its outputs and these labels are on the same footing).
    """
    if label not in LABELS:
        raise UserError(f"label {label!r} is not one of {', '.join(LABELS)}")
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(
            f"split fractions val={val_frac}, test={test_frac} must be in (0, 1) and sum below 1"
        )
    dbp = Path(db)
    target_name = _resolve_target_name(target)
    with _open(dbp) as store:
        meta = {k: _parse_meta_value(v) for k, v in store.meta().items()}
        rows = store.select(_COLUMNS, kinds=("profile", "repeat"))
    if not rows:
        raise UserError(
            f"profile store {dbp} holds no profile measurements; {samples_rule()}: "
            f"run `hwnas profile --space {meta.get('space_name') or 'SPACE'} --target {target} "
            f"--samples {RECOMMENDED_SAMPLES} --db {dbp}`"
        )

    by_target = Counter(r["target_name"] for r in rows)
    rows = [r for r in rows if r["target_name"] == target_name]
    if not rows:
        present = ", ".join(f"{t} ({n} rows)" for t, n in sorted(by_target.items()))
        raise UserError(
            f"profile store {dbp} has no measurements for target '{target_name}'; targets present: {present}"
        )

    space_key, space_config, layout = _resolve_space(meta, rows, space, dbp)
    rows = [r for r in rows if (r["space_key"] or space_key) == space_key]

    ok = [
        r
        for r in rows
        if r["status"] == "ok" and r["latency_ms"] is not None and r["latency_ms"] > 0
    ]
    prof_ok = [r for r in ok if r["kind"] == "profile"]
    if not prof_ok:
        failed = [r for r in rows if r["status"] != "ok"]
        first = next((r["error"] for r in failed if r["error"]), "no error recorded")
        raise UserError(
            f"profile store {dbp} has {len(rows)} rows for target '{target_name}' but no successful "
            f"profile measurement ({len(failed)} failed; first error: {first}); fix the failure and "
            f"re-run `hwnas profile`, fitting needs at least {min_samples} ok architectures"
        )

    fkeys = Counter(r["fingerprint_key"] for r in prof_ok)
    if fingerprint is not None:
        chosen = [k for k in fkeys if k and k.startswith(fingerprint)]
        if len(chosen) != 1:
            raise UserError(
                f"fingerprint '{fingerprint}' matches {len(chosen)} of the store's fingerprints for "
                f"target '{target_name}': {_describe_fingerprints(fkeys, prof_ok)}"
            )
        fkeys = Counter({chosen[0]: fkeys[chosen[0]]})
    elif len(fkeys) > 1 and not allow_mixed:
        raise UserError(
            f"profile store {dbp} mixes {len(fkeys)} fingerprints for target '{target_name}' "
            f"(different runtime, driver, CPU/GPU, settings or timing protocol): "
            f"{_describe_fingerprints(fkeys, prof_ok)}; "
            "pick one with --fingerprint KEY or pass --allow-mixed to pool them"
        )
    keep = set(fkeys)
    ok = [r for r in ok if r["fingerprint_key"] in keep]
    prof_ok_all = [r for r in ok if r["kind"] == "profile"]
    # Rows the protocol flagged unstable: left out here, after the fingerprint checks (a
    # store mixing fingerprints is refused whatever the flags say).
    unstable = [r for r in ok if r["stable"] is not None and not r["stable"]]
    if not include_unstable:
        ok = [r for r in ok if r["stable"] is None or r["stable"]]
    prof_ok = [r for r in ok if r["kind"] == "profile"]
    if not prof_ok:
        raise UserError(
            f"profile store {dbp}: every ok profile row of target '{target_name}' is flagged "
            f"unstable ({len(unstable)} rows: the host was busy while timing); profile again on a "
            "quieter host, or fit on them anyway with --include-unstable"
        )
    if len(keep) == 1:
        fkey = next(iter(keep))
        fp = _parse_meta_value(prof_ok[0]["fingerprint"]) or {}
    else:
        fkey = "mixed:" + hashlib.sha256(",".join(sorted(keep)).encode()).hexdigest()
        fp = {"mixed": sorted(keep)}

    with_ref = [r for r in ok if r["reference_ms"] is not None and r["reference_ms"] > 0]
    if label == "auto":
        label = "reference" if len(with_ref) == len(ok) else "raw"
    elif label == "reference" and len(with_ref) < len(ok):
        raise UserError(
            f"profile store {dbp}: {len(ok) - len(with_ref)} of {len(ok)} ok rows have no "
            "reference-network figure (profiled with reference = false); use --label raw"
        )
    baseline = (
        float(np.median([r["reference_ms"] for r in prof_ok])) if label == "reference" else None
    )
    if baseline is not None and baseline_ms is not None:
        baseline = float(baseline_ms)

    def value(r: dict[str, Any]) -> float:
        if baseline is None:
            return float(r["latency_ms"])
        return float(r["latency_ms"]) / float(r["reference_ms"]) * baseline

    # Aggregate per architecture.
    enc: dict[str, list[float]] = {}
    lat: dict[str, list[float]] = {}
    raw: dict[str, list[float]] = {}
    spr: dict[str, list[float]] = {}
    rep: dict[str, float] = {}
    for r in prof_ok:
        h = r["arch_hash"]
        if h not in enc:
            enc[h] = _parse_encoding(r["encoding"], r["id"], dbp)
        lat.setdefault(h, []).append(value(r))
        raw.setdefault(h, []).append(float(r["latency_ms"]))
        if r["spread"] is not None:
            spr.setdefault(h, []).append(float(r["spread"]))
    for r in ok:
        if r["kind"] == "repeat" and r["arch_hash"] in enc and r["arch_hash"] not in rep:
            rep[r["arch_hash"]] = value(r)

    hashes = sorted(enc)
    n = len(hashes)
    if n < min_samples:
        suggest = RECOMMENDED_SAMPLES if min_samples >= MIN_SAMPLES else 4 * min_samples
        raise UserError(
            f"profile store {dbp} has {n} profiled architectures for target '{target_name}' "
            f"(fingerprint {fkey[:12]}"
            + (
                f"; {len(unstable)} rows flagged unstable were left out: --include-unstable "
                "fits on them too"
                if unstable and not include_unstable
                else ""
            )
            + f"); this fit needs at least {min_samples} ({samples_rule()}): "
            f"run `hwnas profile --space {space_config.get('name') or 'SPACE'} --target {target} "
            f"--samples {suggest} --db {dbp}` to add more"
        )
    dims = Counter(len(enc[h]) for h in hashes)
    if len(dims) > 1:
        raise UserError(
            f"profile store {dbp} has encodings of several lengths {dict(dims)}: the store is corrupted"
        )
    dim = next(iter(dims))
    if layout is None:
        layout = [f"x{i}" for i in range(dim)]
    if len(layout) != dim:
        raise UserError(
            f"profile store {dbp}: encodings have {dim} entries but the meta encoding_layout has {len(layout)}"
        )

    split = np.array([split_of(h, seed, val_frac, test_frac) for h in hashes], dtype=np.int64)
    ds = Dataset(
        db=str(dbp),
        target_name=target_name,
        space_name=str(space_config.get("name", prof_ok[0]["space_name"] or "")),
        space_key=space_key,
        space_config=space_config,
        encoding_layout=list(layout),
        fingerprint=fp,
        fingerprint_key=fkey,
        hashes=hashes,
        X=np.asarray([enc[h] for h in hashes], dtype=np.float32),
        latency_ms=np.asarray([float(np.median(lat[h])) for h in hashes]),
        n_measurements=np.asarray([len(lat[h]) for h in hashes], dtype=np.int64),
        spread=np.asarray([float(np.median(spr[h])) if h in spr else np.nan for h in hashes]),
        repeat_ms=np.asarray([rep.get(h, np.nan) for h in hashes]),
        split=split,
        raw_ms=np.asarray([float(np.median(raw[h])) for h in hashes]),
        split_seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
        stats={
            "rows": len(rows),
            "ok_profile_rows": len(prof_ok),
            "failed_rows": sum(1 for r in rows if r["status"] != "ok"),
            "repeat_rows": sum(1 for r in ok if r["kind"] == "repeat"),
            "fingerprints": len(keep),
            "label": label,
            "reference_baseline_ms": baseline,
            "target_ref": target,  # what the user typed: a name, or the target file for hints
            **unstable_counts(prof_ok_all),
            "include_unstable": include_unstable,
        },
    )
    return ds


DRIFT_TOLERANCE = 0.05  # targets.timing.Protocol's default drift_tolerance


def unstable_counts(rows: Sequence[Any], best_reference: float | None = None) -> dict[str, Any]:
    """How many ok profile rows were flagged unstable, and why.

    The store keeps the flag, not the reason. A flagged row whose reference network ran
    more than 5 % above the fastest reference figure of these rows was timed while the
    host ran slow throughout (reference drift); any other flagged row failed the
    split-half check (its even and odd rounds disagreed, or its spread was too wide).
    `best_reference` overrides the fastest reference figure of `rows`.
    """
    refs = [float(r["reference_ms"]) for r in rows if r["reference_ms"] and r["reference_ms"] > 0]
    best = best_reference if best_reference is not None else (min(refs) if refs else None)
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
    total = stats.get("ok_profile_rows")
    return (
        f"{n} of {total} profile rows were flagged unstable: {stats.get('unstable_split_half', 0)} "
        f"split-half (even and odd rounds disagreed: a busy host), "
        f"{stats.get('unstable_reference_drift', 0)} reference drift (the reference network ran "
        f">{100 * DRIFT_TOLERANCE:.0f}% above its best: the host ran slow); "
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


def _parse_encoding(text: str | None, row_id: int, db: Path) -> list[float]:
    try:
        vec = json.loads(text) if text is not None else None
    except ValueError:
        vec = None
    if not isinstance(vec, list) or not vec or not all(isinstance(v, (int, float)) for v in vec):
        raise UserError(
            f"profile store {db}: row {row_id} has no valid encoding (a JSON list of numbers)"
        )
    return [float(v) for v in vec]


def _describe_fingerprints(fkeys: Counter[str], rows: list[dict[str, Any]]) -> str:
    first = {}
    for r in rows:
        first.setdefault(r["fingerprint_key"], r["fingerprint"])
    parts = []
    for k, n in fkeys.most_common():
        fp = _parse_meta_value(first.get(k))
        label = ""
        if isinstance(fp, dict):
            label = " ".join(str(fp[x]) for x in ("cpu", "gpu", "runtime") if x in fp)
            proto = fp.get("protocol")
            if isinstance(proto, dict):
                label += (
                    f" protocol {proto.get('statistic')} {proto.get('min_rounds')}-"
                    f"{proto.get('rounds')} rounds x {proto.get('runs_per_round')}"
                )
        parts.append(f"{(k or '?')[:12]} ({n} rows{', ' + label if label else ''})")
    return "; ".join(parts)


def _resolve_space(
    meta: dict[str, Any], rows: list[dict[str, Any]], space: str | None, db: Path
) -> tuple[str, dict[str, Any], list[str] | None]:
    """The space key, config and layout the dataset is bound to; UserError if ambiguous or absent."""
    meta_key = meta.get("space_key")
    meta_cfg = meta.get("space_config") if isinstance(meta.get("space_config"), dict) else {}
    layout = meta.get("encoding_layout") if isinstance(meta.get("encoding_layout"), list) else None
    keys = Counter((r["space_key"] or meta_key) for r in rows)
    names = {(r["space_key"] or meta_key): r["space_name"] for r in rows}
    if space is not None:
        match = [
            k
            for k in keys
            if k
            and (
                k.startswith(space)
                or names.get(k) == space
                or (k == meta_key and meta_cfg.get("name") == space)
            )
        ]
        if not match:
            have = ", ".join(f"{names.get(k) or '?'} ({(k or '?')[:12]})" for k in keys)
            raise UserError(
                f"profile store {db} has no measurements of space '{space}'; it holds: {have}"
            )
        if len(match) > 1:
            raise UserError(
                f"space '{space}' matches several space keys in {db}: {', '.join(m[:12] for m in match)}"
            )
        key = match[0]
    else:
        if len(keys) > 1:
            have = ", ".join(f"{names.get(k) or '?'} ({(k or '?')[:12]})" for k in keys)
            raise UserError(
                f"profile store {db} holds several spaces ({have}); choose one with --space"
            )
        key = next(iter(keys))
    if not key:
        raise UserError(
            f"profile store {db} records no space key (meta table empty and rows without space_key)"
        )
    if meta_key and key != meta_key:
        # Rows of a space the meta table does not describe: no config or layout to carry.
        meta_cfg, layout = {"name": names.get(key) or ""}, None
    return str(key), dict(meta_cfg), layout
