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

The package splits the store by what a caller does with it: `schema` (tables, columns, row
rules), `connection` (open, transactions, space binding), `writes` (rows and claims),
`reads` (the `select` query and stats) and `export`. `ProfileStore` joins them; import it
(and the names below) from `profiling.store`.
"""

from __future__ import annotations

from profiling.store.export import StoreExporter, write_csv
from profiling.store.schema import (
    ADDED_COLUMNS,
    COLUMNS,
    DEFAULT_TIMEOUT,
    KINDS,
    SCHEMA_VERSION,
    STATUSES,
    STORE_FORMAT,
    pid_alive,
    utc_now,
)
from profiling.store.writes import StoreWriter

__all__ = [
    "ADDED_COLUMNS",
    "COLUMNS",
    "DEFAULT_TIMEOUT",
    "KINDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "STORE_FORMAT",
    "ProfileStore",
    "pid_alive",
    "utc_now",
    "write_csv",
]


class ProfileStore(StoreWriter, StoreExporter):
    """An SQLite profile store; open it, bind it to a space, then insert rows one at a time.

    Every write is its own `BEGIN IMMEDIATE` transaction; sqlite errors (locked beyond the
    timeout, read-only file, not a database) become a `UserError` naming the path.
    """

    @staticmethod
    def default_timeout() -> float:
        """Read at open time from this module: `profiling.store.DEFAULT_TIMEOUT` is the one
        knob (tests shorten it)."""
        return DEFAULT_TIMEOUT

    def __enter__(self) -> ProfileStore:
        return self
