"""Opening a profile store and keeping it honest: WAL mode, the schema, the meta table,
one `BEGIN IMMEDIATE` per write, sqlite errors turned into `UserError`s that name the
path and a fix, and the space binding that keeps encodings of two spaces apart."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from profiling.space_config import changed_fields, version_mismatch
from profiling.store.schema import (
    ADDED_COLUMNS,
    DEFAULT_TIMEOUT,
    SCHEMA,
    SCHEMA_VERSION,
    STORE_FORMAT,
    utc_now,
)
from targets.basics import UserError
from targets.fingerprint import canonical_json


class StoreConnection:
    """An open profile store: the connection, its transactions, and the space it is bound to.

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
        self.timeout = float(self.default_timeout() if timeout is None else timeout)
        self.host = socket.gethostname()
        self._conn: sqlite3.Connection | None = None
        self._conn = self._open()

    @staticmethod
    def default_timeout() -> float:
        """Seconds to wait for another writer when the caller gives no timeout."""
        return DEFAULT_TIMEOUT

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
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            have = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "format" not in have:
                conn.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
                conn.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
                conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (utc_now(),))
            have_cols = {r[1] for r in conn.execute("PRAGMA table_info(measurements)")}
            for name, sql_type in ADDED_COLUMNS.items():
                if name not in have_cols:
                    conn.execute(f"ALTER TABLE measurements ADD COLUMN {name} {sql_type}")

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
        """Close; the last connection to go also folds the WAL into the store and removes
        `-wal`/`-shm` (SQLite does that on closing a read-write connection, never a read-only
        one: after reading, a brief read-write connection does it where the file is writable)."""
        if self._conn is None:
            return
        self._conn.close()
        self._conn = None
        if self.readonly:
            self._tidy_wal()

    def _tidy_wal(self) -> None:
        """Open and close a read-write connection, so that SQLite checkpoints and deletes the
        WAL files a read-only connection leaves. Safe beside other connections: SQLite deletes
        them only when it can lock the store exclusively (no one else has it open)."""
        path = self.path
        leftovers = [Path(f"{path}-wal"), Path(f"{path}-shm")]
        if not any(p.exists() for p in leftovers) or not os.access(path, os.W_OK):
            return
        if not os.access(path.parent, os.W_OK):
            return
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(str(path), timeout=0.1, isolation_level=None)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()

    def __enter__(self) -> StoreConnection:
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
