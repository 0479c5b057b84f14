"""Reading a profile store into a split `Dataset`: the predictor's one way in to profiles.

The store is opened read-only through `profiling.store.ProfileStore` and read with its
`select` query, so the schema and its SQL live in one package and a reader never takes a
writer's lock. What to read (space, fingerprint, label, split, floor) is one
`ProfileQuery`; `load_profiles` applies it step by step, each step refusing a store it
cannot honestly fit on with a `UserError` that gives the counts and the command to run.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from predictor.dataset import (
    LABELS,
    MIN_SAMPLES,
    RECOMMENDED_SAMPLES,
    ArchRows,
    Dataset,
    Row,
    assign_splits,
    samples_rule,
    unstable_counts,
)
from profiling.store import ProfileStore
from targets.basics import UserError
from targets.registry import load_target

# What the dataset reads of each row (the store's column names).
_COLUMNS = (
    "id", "kind", "arch_hash", "encoding", "space_name", "space_key", "target_name",
    "fingerprint", "fingerprint_key", "status", "error", "latency_ms", "spread",
    "reference_ms", "stable",
)  # fmt: skip


@dataclass(frozen=True)
class ProfileQuery:
    """Which profiles of a store a dataset holds, and how they are labelled and split.

    `space` is a space name or (a prefix of) its key; `fingerprint` a (prefix of a)
    fingerprint key chosen among several (`allow_mixed` pools them instead).

    `label` is what the models learn: "raw" (the stored latency), "reference" (the latency
    divided by the reference network's figure from the same rounds, times the median
    reference figure of the rows: host drift between measurements cancels; on the
    development host it brought the MLP's MAPE against a later re-measurement from 4.0 % to
    3.8 %, docs/benchmarks.md), or "auto" (reference when every row has it, else raw).
    `baseline_ms` replaces the median reference figure (a saved predictor's baseline, so
    its outputs and these labels are on the same footing).

    Rows the timing protocol flagged unstable (`stable = 0`: its rounds disagreed, the host
    was busy) are left out unless `include_unstable`; rows with no flag are kept.
    """

    space: str | None = None
    fingerprint: str | None = None
    allow_mixed: bool = False
    seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    min_samples: int = MIN_SAMPLES
    label: str = "auto"
    include_unstable: bool = False
    baseline_ms: float | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise UserError(f"label {self.label!r} is not one of {', '.join(LABELS)}")
        v, t = self.val_frac, self.test_frac
        if not (0 < v < 1 and 0 < t < 1 and v + t < 1):
            raise UserError(f"split fractions val={v}, test={t} must be in (0, 1) and sum below 1")


def load_profiles(db: str | Path, target: str, query: ProfileQuery | None = None) -> Dataset:
    """Read the ok profile rows of one target (and one fingerprint) into a split dataset.

    `target` is a target name or a target TOML file. Raises UserError with counts and a
    fix for an empty, tiny, failed-only or mixed-fingerprint store.
    """
    q = query or ProfileQuery()
    dbp = Path(db)
    target_name = _resolve_target_name(target)
    meta, rows = _target_rows(dbp, target, target_name)
    space_key, space_config, layout = _resolve_space(meta, rows, q.space, dbp)
    rows = [r for r in rows if (r["space_key"] or space_key) == space_key]
    ok = _ok_rows(rows, dbp, target_name, q.min_samples)
    keep = _choose_fingerprints(ok, q, dbp, target_name)
    ok = [r for r in ok if r["fingerprint_key"] in keep]
    prof_ok_all = [r for r in ok if r["kind"] == "profile"]
    ok, unstable = _drop_unstable(ok, q.include_unstable, dbp, target_name)
    prof_ok = [r for r in ok if r["kind"] == "profile"]
    fkey, fp = _fingerprint_of(keep, prof_ok)
    label, baseline = _label(ok, prof_ok, q, dbp)
    per_arch = ArchRows.collect(ok, prof_ok, baseline, dbp)
    hashes = sorted(per_arch.enc)
    if len(hashes) < q.min_samples:
        raise _too_few(len(hashes), q, dbp, target, target_name, fkey, unstable, space_config)
    layout = per_arch.check_layout(hashes, layout, dbp)
    return Dataset(
        db=str(dbp),
        target_name=target_name,
        space_name=str(space_config.get("name", prof_ok[0]["space_name"] or "")),
        space_key=space_key,
        space_config=space_config,
        encoding_layout=list(layout),
        fingerprint=fp,
        fingerprint_key=fkey,
        hashes=hashes,
        split=assign_splits(hashes, q.seed, q.val_frac, q.test_frac),
        split_seed=q.seed,
        val_frac=q.val_frac,
        test_frac=q.test_frac,
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
            "include_unstable": q.include_unstable,
        },
        **per_arch.arrays(hashes),
    )


def read_meta(db: str | Path) -> dict[str, Any]:
    """The store's meta table (space_key, space_config, encoding_layout, ...), values JSON-decoded."""
    with _open(db) as store:
        return {k: _parse_meta_value(v) for k, v in store.meta().items()}


# -- the steps of load_profiles, in order ----------------------------------------------------


def _open(db: str | Path) -> ProfileStore:
    path = Path(db)
    if not path.exists():
        raise UserError(
            f"profile store {path} does not exist; create one with `hwnas profile --db {path} ...`"
        )
    if path.is_dir():
        raise UserError(f"profile store {path} is a directory, not an SQLite file")
    return ProfileStore(path, readonly=True)


def _resolve_target_name(target: str) -> str:
    """A target name, or the name inside a target TOML file."""
    if target.endswith(".toml") and Path(target).is_file():
        return load_target(target).name
    return target


def _target_rows(db: Path, target: str, target_name: str) -> tuple[dict[str, Any], list[Row]]:
    """The store's meta and its profile and repeat rows of `target_name`."""
    with _open(db) as store:
        meta = {k: _parse_meta_value(v) for k, v in store.meta().items()}
        rows = store.select(_COLUMNS, kinds=("profile", "repeat"))
    if not rows:
        raise UserError(
            f"profile store {db} holds no profile measurements; {samples_rule()}: "
            f"run `hwnas profile --space {meta.get('space_name') or 'SPACE'} --target {target} "
            f"--samples {RECOMMENDED_SAMPLES} --db {db}`"
        )
    by_target = Counter(r["target_name"] for r in rows)
    rows = [r for r in rows if r["target_name"] == target_name]
    if not rows:
        present = ", ".join(f"{t} ({n} rows)" for t, n in sorted(by_target.items()))
        raise UserError(
            f"profile store {db} has no measurements for target '{target_name}'; targets present: {present}"
        )
    return meta, rows


def _resolve_space(
    meta: dict[str, Any], rows: list[Row], space: str | None, db: Path
) -> tuple[str, dict[str, Any], list[str] | None]:
    """The space key, config and layout the dataset is bound to; UserError if ambiguous or absent."""
    meta_key = meta.get("space_key")
    meta_cfg = meta.get("space_config") if isinstance(meta.get("space_config"), dict) else {}
    layout = meta.get("encoding_layout") if isinstance(meta.get("encoding_layout"), list) else None
    keys = Counter((r["space_key"] or meta_key) for r in rows)
    names = {(r["space_key"] or meta_key): r["space_name"] for r in rows}
    have = ", ".join(f"{names.get(k) or '?'} ({(k or '?')[:12]})" for k in keys)
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


def _ok_rows(rows: list[Row], db: Path, target_name: str, min_samples: int) -> list[Row]:
    """The ok rows with a positive latency; UserError when no profile row is among them."""
    ok = [
        r
        for r in rows
        if r["status"] == "ok" and r["latency_ms"] is not None and r["latency_ms"] > 0
    ]
    if not any(r["kind"] == "profile" for r in ok):
        failed = [r for r in rows if r["status"] != "ok"]
        first = next((r["error"] for r in failed if r["error"]), "no error recorded")
        raise UserError(
            f"profile store {db} has {len(rows)} rows for target '{target_name}' but no successful "
            f"profile measurement ({len(failed)} failed; first error: {first}); fix the failure and "
            f"re-run `hwnas profile`, fitting needs at least {min_samples} ok architectures"
        )
    return ok


def _choose_fingerprints(ok: list[Row], q: ProfileQuery, db: Path, target_name: str) -> set[str]:
    """The fingerprint keys the dataset pools: the one asked for, the only one, or all
    (`allow_mixed`); a store mixing several is refused otherwise."""
    prof_ok = [r for r in ok if r["kind"] == "profile"]
    fkeys = Counter(r["fingerprint_key"] for r in prof_ok)
    if q.fingerprint is not None:
        chosen = [k for k in fkeys if k and k.startswith(q.fingerprint)]
        if len(chosen) != 1:
            raise UserError(
                f"fingerprint '{q.fingerprint}' matches {len(chosen)} of the store's fingerprints for "
                f"target '{target_name}': {_describe_fingerprints(fkeys, prof_ok)}"
            )
        return {chosen[0]}
    if len(fkeys) > 1 and not q.allow_mixed:
        raise UserError(
            f"profile store {db} mixes {len(fkeys)} fingerprints for target '{target_name}' "
            f"(different runtime, driver, CPU/GPU, settings or timing protocol): "
            f"{_describe_fingerprints(fkeys, prof_ok)}; "
            "pick one with --fingerprint KEY or pass --allow-mixed to pool them"
        )
    return set(fkeys)


class NoStableRows(UserError):
    """Every ok profile row is flagged unstable (the main job then profiles more)."""


def usable_architectures(db: str | Path, target: str, query: ProfileQuery | None = None) -> int:
    """How many architectures a fit with `query` would really use (after failed,
    other-fingerprint and unstable rows are left out); 0 when none. The main job profiles
    until this reaches the fit's floor, so "at least 50" counts what the fit sees."""
    q = replace(query or ProfileQuery(), min_samples=1)
    try:
        return len(load_profiles(db, target, q))
    except NoStableRows:
        return 0


def _drop_unstable(
    ok: list[Row], include_unstable: bool, db: Path, target_name: str
) -> tuple[list[Row], list[Row]]:
    """(rows kept, rows flagged unstable). Runs after the fingerprint checks: a store mixing
    fingerprints is refused whatever the flags say."""
    unstable = [r for r in ok if r["stable"] is not None and not r["stable"]]
    if not include_unstable:
        ok = [r for r in ok if r["stable"] is None or r["stable"]]
    if not any(r["kind"] == "profile" for r in ok):
        raise NoStableRows(
            f"profile store {db}: every ok profile row of target '{target_name}' is flagged "
            f"unstable ({len(unstable)} rows: the host was busy while timing); profile again on a "
            "quieter host, or fit on them anyway with --include-unstable"
        )
    return ok, unstable


def _fingerprint_of(keep: set[str], prof_ok: list[Row]) -> tuple[str, dict[str, Any]]:
    """The dataset's fingerprint key and fingerprint; pooled ones get a 'mixed:' key."""
    if len(keep) == 1:
        return next(iter(keep)), _parse_meta_value(prof_ok[0]["fingerprint"]) or {}
    key = "mixed:" + hashlib.sha256(",".join(sorted(keep)).encode()).hexdigest()
    return key, {"mixed": sorted(keep)}


def _label(
    ok: list[Row], prof_ok: list[Row], q: ProfileQuery, db: Path
) -> tuple[str, float | None]:
    """The label the models learn ('auto' resolved) and the reference baseline (ms) that
    scales reference-normalised latencies back to milliseconds (None for raw)."""
    with_ref = [r for r in ok if r["reference_ms"] is not None and r["reference_ms"] > 0]
    label = q.label
    if label == "auto":
        label = "reference" if len(with_ref) == len(ok) else "raw"
    elif label == "reference" and len(with_ref) < len(ok):
        raise UserError(
            f"profile store {db}: {len(ok) - len(with_ref)} of {len(ok)} ok rows have no "
            "reference-network figure (profiled with reference = false); use --label raw"
        )
    if label != "reference":
        return label, None
    if q.baseline_ms is not None:
        return label, float(q.baseline_ms)
    return label, float(np.median([r["reference_ms"] for r in prof_ok]))


def _too_few(
    n: int,
    q: ProfileQuery,
    db: Path,
    target: str,
    target_name: str,
    fkey: str,
    unstable: list[Row],
    space_config: dict[str, Any],
) -> UserError:
    """The error for a store with fewer architectures than the fit needs, with the command
    that adds more."""
    suggest = RECOMMENDED_SAMPLES if q.min_samples >= MIN_SAMPLES else 4 * q.min_samples
    left_out = (
        f"; {len(unstable)} rows flagged unstable were left out: --include-unstable fits on them too"
        if unstable and not q.include_unstable
        else ""
    )
    return UserError(
        f"profile store {db} has {n} profiled architectures for target '{target_name}' "
        f"(fingerprint {fkey[:12]}{left_out}); this fit needs at least {q.min_samples} "
        f"({samples_rule()}): run `hwnas profile --space {space_config.get('name') or 'SPACE'} "
        f"--target {target} --samples {suggest} --db {db}` to add more"
    )


# -- parsing stored text ---------------------------------------------------------------------


def _parse_meta_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text  # a bare string (e.g. a space key written without JSON quotes)


def _describe_fingerprints(fkeys: Counter[str], rows: list[Row]) -> str:
    first: dict[str, Any] = {}
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
