"""Reading a profile store: the one `select` query every reader uses, and the counts and
summary (`hwnas db stats`) built on it."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

from profiling.store.connection import StoreConnection
from profiling.store.schema import COLUMNS, KINDS, where_clause


class StoreReader(StoreConnection):
    """Queries; none of them takes the write lock."""

    def done_hashes(self, fingerprint_key: str, *, include_failed: bool = True) -> set[str]:
        """Architectures with a 'profile' row under this fingerprint."""
        status_clause = "" if include_failed else " AND status='ok'"
        with self._errors("read"):
            cur = self.conn.execute(
                "SELECT DISTINCT arch_hash FROM measurements WHERE fingerprint_key=? "
                f"AND kind='profile'{status_clause}",
                (fingerprint_key,),
            )
            return {r[0] for r in cur}

    def count_done(self, fingerprint_key: str, *, include_failed: bool = True) -> int:
        return len(self.done_hashes(fingerprint_key, include_failed=include_failed))

    def count_rows(self, **where: Any) -> int:
        clause, params = where_clause(where)
        with self._errors("read"):
            return int(
                self.conn.execute(f"SELECT count(*) FROM measurements{clause}", params).fetchone()[
                    0
                ]
            )

    def rows(self, **where: Any) -> Iterator[dict[str, Any]]:
        """Rows as dicts (JSON columns left as text), filtered by column equality."""
        yield from self.select(**where)

    def select(
        self,
        columns: Sequence[str] = COLUMNS,
        *,
        kinds: Sequence[str] | None = None,
        **where: Any,
    ) -> list[dict[str, Any]]:
        """The store's read query: `columns` of the rows whose kind is one of `kinds` (all
        when None) and whose columns equal `where`, in insertion order, as dicts (JSON
        columns left as text). Readers (the predictor's dataset too) use this, never SQL."""
        unknown = [c for c in columns if c not in COLUMNS]
        if unknown or not columns:
            raise ValueError(f"unknown columns {unknown!r}; the store has {COLUMNS}")
        clause, params = where_clause(where)
        if kinds is not None:
            bad = [k for k in kinds if k not in KINDS]
            if bad or not kinds:
                raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)!r}")
            clause += (" AND " if clause else " WHERE ") + (
                f"kind IN ({', '.join('?' for _ in kinds)})"
            )
            params += list(kinds)
        have = self._columns()
        picked = [c if c in have else f"NULL AS {c}" for c in columns]
        with self._errors("read"):
            cur = self.conn.execute(
                f"SELECT {', '.join(picked)} FROM measurements{clause} ORDER BY id", params
            )
            rows = cur.fetchall()
        return [dict(zip(columns, tuple(r), strict=True)) for r in rows]

    def _columns(self) -> set[str]:
        """The measurements table's columns (an old read-only store lacks ADDED_COLUMNS)."""
        with self._errors("read"):
            return {r[1] for r in self.conn.execute("PRAGMA table_info(measurements)")}

    def fingerprints(self) -> list[dict[str, Any]]:
        """Distinct (target_name, fingerprint_key, fingerprint) with their row counts."""
        with self._errors("read"):
            cur = self.conn.execute(
                "SELECT target_name, fingerprint_key, min(fingerprint) AS fingerprint, "
                "count(*) AS n FROM measurements GROUP BY target_name, fingerprint_key "
                "ORDER BY min(id)"
            )
            return [
                {
                    "target_name": r["target_name"],
                    "fingerprint_key": r["fingerprint_key"],
                    "fingerprint": json.loads(r["fingerprint"]),
                    "rows": int(r["n"]),
                }
                for r in cur
            ]

    def integrity_check(self) -> str:
        with self._errors("check"):
            return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def journal_mode(self) -> str:
        with self._errors("read"):
            return str(self.conn.execute("PRAGMA journal_mode").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        """A summary a person (or `--json`) reads: rows by kind and status, per target."""
        meta = self.meta()
        binding = self.space_binding()
        with self._errors("read"):
            by = self.conn.execute(
                "SELECT kind, status, count(*) FROM measurements GROUP BY kind, status"
            ).fetchall()
            total = sum(int(n) for _, _, n in by)
            archs = int(
                self.conn.execute("SELECT count(DISTINCT arch_hash) FROM measurements").fetchone()[
                    0
                ]
            )
            first_last = self.conn.execute(
                "SELECT min(started_at), max(finished_at) FROM measurements"
            ).fetchone()
        targets = []
        for fp in self.fingerprints():
            key = fp["fingerprint_key"]
            with self._errors("read"):
                rows = self.conn.execute(
                    "SELECT kind, status, arch_hash, latency_ms, spread, stable, run_id "
                    "FROM measurements WHERE target_name=? AND fingerprint_key=?",
                    (fp["target_name"], key),
                ).fetchall()
            ok = [r for r in rows if r["kind"] == "profile" and r["status"] == "ok"]
            lat = [float(r["latency_ms"]) for r in ok if r["latency_ms"] is not None]
            spreads = [float(r["spread"]) for r in ok if r["spread"] is not None]
            targets.append(
                {
                    "target_name": fp["target_name"],
                    "fingerprint_key": key,
                    "fingerprint": fp["fingerprint"],
                    "profile_ok": len(ok),
                    "profile_failed": sum(
                        1 for r in rows if r["kind"] == "profile" and r["status"] == "failed"
                    ),
                    "repeat": sum(1 for r in rows if r["kind"] == "repeat"),
                    "measure": sum(1 for r in rows if r["kind"] == "measure"),
                    "architectures": len({r["arch_hash"] for r in ok}),
                    "unstable": sum(1 for r in ok if r["stable"] == 0),
                    "runs": len({r["run_id"] for r in rows}),
                    "latency_ms": _summary(lat),
                    "median_spread": statistics.median(spreads) if spreads else None,
                }
            )
        return {
            "path": str(self.path),
            "schema_version": int(meta.get("schema_version", "0")),
            "created_at": meta.get("created_at"),
            "space_name": binding["space_name"] if binding else None,
            "space_key": binding["space_key"] if binding else None,
            "encoding_length": len(binding["encoding_layout"]) if binding else None,
            "rows": total,
            "by_kind_status": {f"{k}/{s}": int(n) for k, s, n in by},
            "architectures": archs,
            "first_started_at": first_last[0],
            "last_finished_at": first_last[1],
            "targets": targets,
        }


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
