"""The store's schema: its tables, its columns, and the rules a row must follow to enter.

Kept apart from the connection so that every query module reads one list of columns and a
row is normalised the same way by every writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from targets.fingerprint import canonical_json

STORE_FORMAT = "hwnas-profile-store"
SCHEMA_VERSION = 1
DEFAULT_TIMEOUT = 30.0  # seconds to wait for another writer before giving up (UserError)
KINDS = ("profile", "repeat", "measure")
STATUSES = ("ok", "failed")

# Column order of the `measurements` table and of every export.
COLUMNS: tuple[str, ...] = (
    "id",
    "kind",
    "arch_hash",
    "arch_json",
    "encoding",
    "space_name",
    "space_key",
    "target_name",
    "fingerprint",
    "fingerprint_key",
    "status",
    "error",
    "latency_ms",
    "statistic",
    "median_ms",
    "p10_ms",
    "min_ms",
    "spread",
    "repetitions",
    "rounds",
    "reference_ms",
    "stable",
    "host",
    "pid",
    "run_id",
    "started_at",
    "finished_at",
    "clock_mhz",
)
# Columns added after schema version 1 shipped: nullable, appended at the end, and added by
# `ALTER TABLE` when a writable store lacks them, so old stores open and old readers (which
# name their columns) still work; a read-only old store reads them as NULL.
ADDED_COLUMNS: dict[str, str] = {
    "clock_mhz": "REAL",  # device clock (a GPU's SM clock, MHz) while timing; NULL on CPUs
}
INSERT_COLUMNS = COLUMNS[1:]
REQUIRED = (
    "kind",
    "arch_hash",
    "arch_json",
    "target_name",
    "fingerprint",
    "fingerprint_key",
    "status",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('profile', 'repeat', 'measure')),
    arch_hash       TEXT NOT NULL,
    arch_json       TEXT NOT NULL,
    encoding        TEXT NOT NULL,
    space_name      TEXT,
    space_key       TEXT,
    target_name     TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    fingerprint_key TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error           TEXT,
    latency_ms      REAL,
    statistic       TEXT,
    median_ms       REAL,
    p10_ms          REAL,
    min_ms          REAL,
    spread          REAL,
    repetitions     INTEGER,
    rounds          INTEGER,
    reference_ms    REAL,
    stable          INTEGER,
    host            TEXT,
    pid             INTEGER,
    run_id          TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    clock_mhz       REAL
);
CREATE INDEX IF NOT EXISTS measurements_fp_kind_hash
    ON measurements (fingerprint_key, kind, arch_hash);
CREATE INDEX IF NOT EXISTS measurements_target ON measurements (target_name);
CREATE TABLE IF NOT EXISTS claims (
    fingerprint_key TEXT NOT NULL,
    arch_hash       TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    claimed_at      REAL NOT NULL,
    PRIMARY KEY (fingerprint_key, arch_hash)
);
"""


def utc_now() -> str:
    """ISO 8601 UTC timestamp with microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def pid_alive(pid: int) -> bool:
    """Whether a process on this host still runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


INT_COLUMNS = {"id", "repetitions", "rounds", "stable", "pid"}
FLOAT_COLUMNS = {"latency_ms", "median_ms", "p10_ms", "min_ms", "spread", "reference_ms", "clock_mhz"}


def where_clause(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    for key in where:
        if key not in COLUMNS:
            raise ValueError(f"unknown column {key!r}")
    items = [(k, v) for k, v in where.items() if v is not None]
    if not items:
        return "", []
    return " WHERE " + " AND ".join(f"{k}=?" for k, _ in items), [v for _, v in items]


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check a row's required fields and turn JSON-able fields into text."""
    unknown = set(row) - set(INSERT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown measurement fields: {sorted(unknown)}")
    missing = [c for c in REQUIRED if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"measurement row lacks {missing}")
    values: dict[str, Any] = {c: row.get(c) for c in INSERT_COLUMNS}
    if values["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {values['kind']!r}")
    if values["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {values['status']!r}")
    enc = values["encoding"]
    values["encoding"] = (
        enc if isinstance(enc, str) else json.dumps([float(x) for x in (enc or [])])
    )
    fp = values["fingerprint"]
    values["fingerprint"] = fp if isinstance(fp, str) else canonical_json(fp)
    if values["stable"] is not None:
        values["stable"] = int(bool(values["stable"]))
    for c in FLOAT_COLUMNS:
        if values[c] is not None:
            values[c] = float(values[c])
    for c in ("repetitions", "rounds", "pid"):
        if values[c] is not None:
            values[c] = int(values[c])
    if values["error"] is not None:
        values["error"] = str(values["error"])[:4000]
    return values
