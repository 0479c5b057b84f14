"""Writing to a profile store: measurement rows (one transaction each) and the claims that
let several profilers share one store without timing an architecture twice."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from profiling.store.connection import StoreConnection
from profiling.store.schema import INSERT_COLUMNS, normalise_row, pid_alive


class StoreWriter(StoreConnection):
    """Rows and claims; every write is its own transaction."""

    # -- writing rows ------------------------------------------------------------------

    def insert_measurement(
        self, row: Mapping[str, Any], *, release_run_id: str | None = None
    ) -> tuple[int, str]:
        """Store one measurement in its own transaction; returns (row id, kind stored).

        A 'profile' row for an architecture that already has an ok 'profile' row under the same
        fingerprint (two profilers raced past their claims) is kept as a 'repeat' row: no
        measurement is lost and the profile set stays one row per architecture.
        """
        values = normalise_row(row)
        with self._write("write a measurement to") as conn:
            return self._insert(conn, values, release_run_id)

    def insert_measurements(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many rows in ONE transaction (all or none; synthetic stores, imports);
        returns the kind each was stored as, by the rule of `insert_measurement`."""
        values = [normalise_row(r) for r in rows]
        with self._write("write measurements to") as conn:
            return [self._insert(conn, v, None)[1] for v in values]

    def _insert(
        self, conn: sqlite3.Connection, values: dict[str, Any], release_run_id: str | None
    ) -> tuple[int, str]:
        if values["kind"] == "profile":
            dup = conn.execute(
                "SELECT 1 FROM measurements WHERE fingerprint_key=? AND kind='profile' "
                "AND arch_hash=? AND status='ok' LIMIT 1",
                (values["fingerprint_key"], values["arch_hash"]),
            ).fetchone()
            if dup is not None:
                values["kind"] = "repeat"
        cur = conn.execute(
            f"INSERT INTO measurements ({', '.join(INSERT_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)})",
            [values[c] for c in INSERT_COLUMNS],
        )
        if release_run_id is not None:
            conn.execute(
                "DELETE FROM claims WHERE arch_hash=? AND run_id=?",
                (values["arch_hash"], release_run_id),
            )
        return int(cur.lastrowid or 0), str(values["kind"])

    # -- claims ------------------------------------------------------------------------

    def claim(
        self,
        fingerprint_key: str,
        arch_hashes: Iterable[str],
        run_id: str,
        *,
        include_failed: bool = True,
        limit_total: int | None = None,
        stale_after: float = 6 * 3600.0,
    ) -> list[str]:
        """Claim the given architectures for this run; returns those now ours, in order.

        Skips architectures already measured under `fingerprint_key` (ok, and failed too
        unless `include_failed` is False) and those claimed by another live profiler. With
        `limit_total`, claims only while measured + claimed stays within it, decided inside
        the transaction, so profilers sharing a store stop at exactly N.
        """
        wanted = list(dict.fromkeys(arch_hashes))
        if not wanted:
            return []
        now = time.time()
        got: list[str] = []
        status_clause = "" if include_failed else " AND status='ok'"
        with self._write("claim work in") as conn:
            room = len(wanted)
            if limit_total is not None:
                done = conn.execute(
                    "SELECT count(DISTINCT arch_hash) FROM measurements WHERE fingerprint_key=? "
                    f"AND kind='profile'{status_clause}",
                    (fingerprint_key,),
                ).fetchone()[0]
                claims = conn.execute(
                    "SELECT run_id, host, pid, claimed_at FROM claims WHERE fingerprint_key=?",
                    (fingerprint_key,),
                ).fetchall()
                live = sum(1 for c in claims if self._claim_live(c, now, stale_after))
                room = min(room, limit_total - int(done) - live)
            for h in wanted:
                if len(got) >= room:
                    break
                if conn.execute(
                    "SELECT 1 FROM measurements WHERE fingerprint_key=? AND kind='profile' "
                    f"AND arch_hash=?{status_clause} LIMIT 1",
                    (fingerprint_key, h),
                ).fetchone():
                    continue
                claim = conn.execute(
                    "SELECT run_id, host, pid, claimed_at FROM claims "
                    "WHERE fingerprint_key=? AND arch_hash=?",
                    (fingerprint_key, h),
                ).fetchone()
                if (
                    claim is not None
                    and claim["run_id"] != run_id
                    and self._claim_live(claim, now, stale_after)
                ):
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                    (fingerprint_key, h, run_id, self.host, os.getpid(), now),
                )
                got.append(h)
        return got

    def _claim_live(self, claim: sqlite3.Row, now: float, stale_after: float) -> bool:
        if now - float(claim["claimed_at"]) > stale_after:
            return False
        if claim["host"] == self.host:
            return pid_alive(int(claim["pid"]))
        return True

    def live_claims(self, fingerprint_key: str, *, stale_after: float = 6 * 3600.0) -> int:
        """Claims under this fingerprint whose profiler is still alive (this run's too)."""
        now = time.time()
        with self._errors("read"):
            rows = self.conn.execute(
                "SELECT run_id, host, pid, claimed_at FROM claims WHERE fingerprint_key=?",
                (fingerprint_key,),
            ).fetchall()
        return sum(1 for r in rows if self._claim_live(r, now, stale_after))

    def release_claims(self, run_id: str, arch_hashes: Iterable[str] | None = None) -> None:
        """Drop this run's claims (all of them, or the given architectures')."""
        if self.readonly or self._conn is None:
            return
        with self._write("release claims in") as conn:
            if arch_hashes is None:
                conn.execute("DELETE FROM claims WHERE run_id=?", (run_id,))
            else:
                conn.executemany(
                    "DELETE FROM claims WHERE run_id=? AND arch_hash=?",
                    [(run_id, h) for h in arch_hashes],
                )
