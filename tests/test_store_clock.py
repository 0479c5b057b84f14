"""The per-row device clock (clock_mhz): a nullable column added to schema 1 without a
version bump, so stores made before it open, read and take rows as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from profiling import store as store_mod
from profiling.store import ADDED_COLUMNS, COLUMNS, ProfileStore
from profiling.store import schema as store_schema


def _row(i: int, clock: float | None) -> dict:
    return {
        "kind": "profile",
        "arch_hash": f"h{i}",
        "arch_json": "{}",
        "encoding": [1.0],
        "target_name": "torch-cuda-graph",
        "fingerprint": {"gpu": "NVIDIA H200"},
        "fingerprint_key": "k" * 64,
        "status": "ok",
        "latency_ms": 2.0 + i,
        "clock_mhz": clock,
    }


def _old_store(path: Path) -> None:
    """A store as hwnas wrote it before clock_mhz existed (same DDL minus the column)."""
    schema = store_schema.SCHEMA.replace(",\n    clock_mhz       REAL\n", "\n")
    assert "clock_mhz" not in schema
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("format", store_mod.STORE_FORMAT), ("schema_version", "1"), ("created_at", "x")],
    )
    cols = [c for c in COLUMNS[1:] if c not in ADDED_COLUMNS]
    conn.execute(
        f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
        [{"kind": "profile", "arch_hash": "old", "arch_json": "{}", "encoding": "[]",
          "target_name": "t", "fingerprint": "{}", "fingerprint_key": "k" * 64,
          "status": "ok", "latency_ms": 1.5}.get(c) for c in cols],
    )  # fmt: skip
    conn.commit()
    conn.close()


def test_clock_is_stored_and_exported(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "p.db") as st:
        st.insert_measurement(_row(0, 1980.0))
        st.insert_measurement(_row(1, None))  # a CPU target reads no clock
        got = st.select(("arch_hash", "clock_mhz"))
        assert got == [
            {"arch_hash": "h0", "clock_mhz": 1980.0},
            {"arch_hash": "h1", "clock_mhz": None},
        ]
        st.export(tmp_path / "p.csv", "csv")
    header, first, second = (tmp_path / "p.csv").read_text().splitlines()
    assert header.split(",")[-1] == "clock_mhz"
    assert first.endswith(",1980.0") and second.endswith(",")


def test_an_old_store_reads_null_clocks_and_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_store(path)
    with ProfileStore(path, readonly=True) as st:  # read-only: no migration, NULL clocks
        assert st.select(("arch_hash", "latency_ms", "clock_mhz")) == [
            {"arch_hash": "old", "latency_ms": 1.5, "clock_mhz": None}
        ]
        assert len(list(st.rows())) == 1
    with ProfileStore(path) as st:  # writable: the column is added, old rows keep theirs
        st.insert_measurement(_row(0, 1755.0))
        assert [r["clock_mhz"] for r in st.rows()] == [None, 1755.0]
        assert st.meta()["schema_version"] == "1"
        assert st.integrity_check() == "ok"
    conn = sqlite3.connect(path)
    assert [r[1] for r in conn.execute("PRAGMA table_info(measurements)")] == list(COLUMNS)
    conn.close()
