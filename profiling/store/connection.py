"""The profile store: every measurement ever taken, one SQLite row each.

Why SQLite in WAL mode with one `BEGIN IMMEDIATE` transaction per row: a profiler killed at
any moment (even `kill -9`) loses at most the measurement it was taking, several profilers
(or a Ray driver and a CLI reader) can share one file, and `PRAGMA integrity_check` stays
clean. `synchronous=FULL` makes a committed row survive a power cut too; at a few rows per
second its fsync costs nothing that matters.

A store is bound to one space config (the `meta` table): encodings of two spaces do not mix,
so a second space is refused with a `UserError` that suggests a new `--db`.

Besides `measurements` there is a small `claims` table: a profiler claims a group of
architectures before measuring it, so profilers sharing a store split the work instead of
timing the same architectures twice. A claim dies with its process (same host: pid gone) or
after `stale_after` seconds (other hosts), so a killed profiler never blocks a rerun.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import sqlite3
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from targets.basics import UserError, atomic_path
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
)
_INSERT_COLUMNS = COLUMNS[1:]
_REQUIRED = (
    "kind",
    "arch_hash",
    "arch_json",
    "target_name",
    "fingerprint",
    "fingerprint_key",
    "status",
)

_SCHEMA = """
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
    finished_at     TEXT
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


class ProfileStore:
    """An SQLite profile store; open it, bind it to a space, then insert rows one at a time.

    Every write is its own `BEGIN IMMEDIATE` transaction; sqlite errors (locked beyond the
    timeout, read-only file, not a database) become a `UserError` naming the path.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        timeout: float | None = None,
    ):
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = float(DEFAULT_TIMEOUT if timeout is None else timeout)
        self.host = socket.gethostname()
        self._conn: sqlite3.Connection | None = None
        self._conn = self._open()

    # -- opening -----------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if path.exists() and path.is_dir():
            raise UserError(f"profile store {path} is a directory; pass a file path to --db")
        if self.readonly:
            if not path.exists():
                raise UserError(
                    f"no profile store at {path}; create one with `hwnas profile ... --db {path}`"
                )
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            conn = self._connect(uri, uri=True)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create the directory of profile store {path}: {exc.strerror or exc}; "
                    "pass a writable --db path"
                ) from exc
            if path.exists() and not os.access(path, os.W_OK):
                raise UserError(f"profile store {path} is not writable; pass a writable --db path")
            conn = self._connect(str(path), uri=False)
        try:
            with self._errors("open"):
                self._check_database(conn)
                if not self.readonly:
                    self._set_wal(conn)
                    conn.execute("PRAGMA synchronous = FULL")
                    self._create_schema(conn)
                self._check_meta(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self, target: str, *, uri: bool) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; every write is explicit.
            conn = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, uri=uri)
        except sqlite3.Error as exc:
            raise UserError(
                f"cannot open profile store {self.path}: {exc}; pass a writable --db path"
            ) from exc
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _check_database(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise
            raise UserError(
                f"{self.path} is not a hwnas profile store: not a readable SQLite file "
                f"({exc}); pass another --db path"
            ) from exc

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a moment of exclusive access; retry while another process
        # opens the same new store (busy_timeout does not cover every path here).
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise UserError(
                f"profile store {self.path} cannot use WAL mode (got {mode!r}); "
                "put it on a local file system"
            )

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise UserError(
                f"{self.path} is an SQLite database but not a hwnas profile store "
                f"(tables: {', '.join(sorted(tables))}); pass another --db path"
            )
        with self._transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            have = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "format" not in have:
                conn.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (utc_now(),))

    def _check_meta(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables or "measurements" not in tables:
            raise UserError(f"{self.path} is not a hwnas profile store; pass another --db path")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != STORE_FORMAT:
            raise UserError(f"{self.path} is not a hwnas profile store; pass another --db path")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise UserError(
                f"profile store {self.path} has schema version {version}, newer than this "
                f"hwnas understands ({SCHEMA_VERSION}); upgrade hwnas"
            )

    # -- plumbing ----------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"profile store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn sqlite's errors into one UserError that names the store and a fix."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise UserError(
                    f"profile store {self.path} is locked by another process "
                    f"(waited {self.timeout:g} s to {action}); retry when it is free"
                ) from exc
            if "readonly" in text or "read-only" in text:
                raise UserError(
                    f"profile store {self.path} is read-only ({action}); pass a writable --db path"
                ) from exc
            if "unable to open" in text or "disk I/O" in text or "full" in text:
                raise UserError(
                    f"cannot {action} profile store {self.path}: {text}; pass a writable --db path"
                ) from exc
            raise
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError):
                raise
            raise UserError(
                f"cannot {action} profile store {self.path}: {exc}; is it a hwnas profile store?"
            ) from exc

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` ... `COMMIT`; the write lock is taken up front."""
        conn = conn if conn is not None else self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction whose sqlite errors become UserErrors."""
        if self.readonly:
            raise UserError(f"profile store {self.path} was opened read-only; cannot {action}")
        with self._errors(action), self._transaction() as conn:
            yield conn

    # -- space binding -----------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self._errors("read"):
            return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def space_binding(self) -> dict[str, Any] | None:
        """The space this store is bound to, or None while it is empty."""
        meta = self.meta()
        if "space_key" not in meta:
            return None
        return {
            "space_name": meta.get("space_name", ""),
            "space_key": meta["space_key"],
            "space_config": json.loads(meta.get("space_config", "{}")),
            "encoding_layout": json.loads(meta.get("encoding_layout", "[]")),
        }

    def bind_space(
        self,
        space_name: str,
        space_key: str,
        space_config: Mapping[str, Any],
        encoding_layout: Sequence[str],
    ) -> None:
        """Bind an unbound store to a space; refuse a store bound to another space."""
        with self._write("bind the space of") as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "space_key" not in meta:
                for key, value in (
                    ("space_name", space_name),
                    ("space_key", space_key),
                    ("space_config", canonical_json(dict(space_config))),
                    ("encoding_layout", json.dumps(list(encoding_layout))),
                ):
                    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
                return
        self.check_space(space_name, space_key, encoding_layout, space_config=space_config)

    def check_space(
        self,
        space_name: str,
        space_key: str,
        encoding_layout: Sequence[str] | None = None,
        *,
        space_config: Mapping[str, Any] | None = None,
    ) -> None:
        """UserError unless the store is unbound or bound to this space; with `space_config`
        the message says what changed (a new network version: profile again)."""
        from profiling.space_config import changed_fields, version_mismatch  # here: merges cleanly

        bound = self.space_binding()
        if bound is None:
            return
        if bound["space_key"] != space_key:
            if space_config is not None and bound["space_name"] == space_name:
                msg = version_mismatch(
                    bound["space_config"],
                    space_config,
                    made=f"profile store {self.path} was profiled (space '{bound['space_name']}')",
                    redo="profile again into a new store (a new --db; for `hwnas run`, a new --out)",
                )
                if msg:
                    raise UserError(msg)
            same = bound["space_name"] == space_name
            changed = changed_fields(bound["space_config"], space_config) if space_config else ""
            raise UserError(
                f"profile store {self.path} holds measurements of space "
                f"'{bound['space_name']}' (config {bound['space_key'][:12]}), not of space "
                f"'{space_name}' (config {space_key[:12]})"
                + (" - same name, different config" if same else "")
                + (f" ({changed})" if changed else "")
                + f"; pass a new --db for space '{space_name}'"
            )
        if encoding_layout is not None and list(encoding_layout) != bound["encoding_layout"]:
            raise UserError(
                f"profile store {self.path}: space '{space_name}' has the stored config but a "
                "different encoding layout (hwnas version change?); pass a new --db"
            )

    # -- writing rows ------------------------------------------------------------------

    def insert_measurement(
        self, row: Mapping[str, Any], *, release_run_id: str | None = None
    ) -> tuple[int, str]:
        """Store one measurement in its own transaction; returns (row id, kind stored).

        A 'profile' row for an architecture that already has an ok 'profile' row under the same
        fingerprint (two profilers raced past their claims) is kept as a 'repeat' row: no
        measurement is lost and the profile set stays one row per architecture.
        """
        values = _normalise_row(row)
        with self._write("write a measurement to") as conn:
            return self._insert(conn, values, release_run_id)

    def insert_measurements(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Store many rows in ONE transaction (all or none; synthetic stores, imports);
        returns the kind each was stored as, by the rule of `insert_measurement`."""
        values = [_normalise_row(r) for r in rows]
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
            f"INSERT INTO measurements ({', '.join(_INSERT_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)})",
            [values[c] for c in _INSERT_COLUMNS],
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

    # -- queries -----------------------------------------------------------------------

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
        clause, params = _where(where)
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
        clause, params = _where(where)
        if kinds is not None:
            bad = [k for k in kinds if k not in KINDS]
            if bad or not kinds:
                raise ValueError(f"kinds must be among {KINDS}, got {list(kinds)!r}")
            clause += (" AND " if clause else " WHERE ") + (
                f"kind IN ({', '.join('?' for _ in kinds)})"
            )
            params += list(kinds)
        with self._errors("read"):
            cur = self.conn.execute(
                f"SELECT {', '.join(columns)} FROM measurements{clause} ORDER BY id", params
            )
            rows = cur.fetchall()
        return [dict(zip(columns, tuple(r), strict=True)) for r in rows]

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

    # -- export ------------------------------------------------------------------------

    def export(self, out: str | os.PathLike[str], fmt: str) -> int:
        """Write every row to `out` as csv or parquet, atomically; returns the row count."""
        out = Path(out)
        if fmt not in ("csv", "parquet"):
            raise UserError(f"unknown export format {fmt!r}; use csv or parquet")
        if not out.parent.is_dir():
            raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
        if out.is_dir():
            raise UserError(f"cannot write {out}: it is a directory; pass a file path to --out")
        rows = list(self.rows())
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise UserError(
                    "exporting parquet needs pyarrow: pip install pyarrow "
                    "(or pip install 'hwnas[parquet]'), or use --format csv"
                ) from exc
        with atomic_path(out) as tmp:
            if fmt == "csv":
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    write_csv(rows, fh)
            else:
                table = pa.table(
                    {c: pa.array([r[c] for r in rows], type=_ARROW_TYPES[c](pa)) for c in COLUMNS}
                )
                pq.write_table(table, tmp)
        return len(rows)


def write_csv(rows: Iterable[Mapping[str, Any]], fh: Any) -> int:
    """Rows as CSV (a header line, then one line per row; NULL as empty) to an open text file."""
    writer = csv.writer(fh)
    writer.writerow(COLUMNS)
    n = 0
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
        n += 1
    return n


_INT_COLUMNS = {"id", "repetitions", "rounds", "stable", "pid"}
_FLOAT_COLUMNS = {"latency_ms", "median_ms", "p10_ms", "min_ms", "spread", "reference_ms"}
_ARROW_TYPES: dict[str, Any] = {
    c: (
        (lambda pa: pa.int64())
        if c in _INT_COLUMNS
        else (lambda pa: pa.float64())
        if c in _FLOAT_COLUMNS
        else (lambda pa: pa.string())
    )
    for c in COLUMNS
}


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _where(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    for key in where:
        if key not in COLUMNS:
            raise ValueError(f"unknown column {key!r}")
    items = [(k, v) for k, v in where.items() if v is not None]
    if not items:
        return "", []
    return " WHERE " + " AND ".join(f"{k}=?" for k, _ in items), [v for _, v in items]


def _normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check a row's required fields and turn JSON-able fields into text."""
    unknown = set(row) - set(_INSERT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown measurement fields: {sorted(unknown)}")
    missing = [c for c in _REQUIRED if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"measurement row lacks {missing}")
    values: dict[str, Any] = {c: row.get(c) for c in _INSERT_COLUMNS}
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
    for c in _FLOAT_COLUMNS:
        if values[c] is not None:
            values[c] = float(values[c])
    for c in ("repetitions", "rounds", "pid"):
        if values[c] is not None:
            values[c] = int(values[c])
    if values["error"] is not None:
        values["error"] = str(values["error"])[:4000]
    return values
