"""The profile store, a package from here on; the next commit splits `connection.py`."""

from profiling.store.connection import (  # noqa: F401
    COLUMNS,
    DEFAULT_TIMEOUT,
    KINDS,
    SCHEMA_VERSION,
    STATUSES,
    STORE_FORMAT,
    ProfileStore,
    pid_alive,
    utc_now,
    write_csv,
)
