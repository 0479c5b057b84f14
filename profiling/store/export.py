"""Exporting a profile store to csv or parquet, atomically (`hwnas db export`)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from profiling.store.reads import StoreReader
from profiling.store.schema import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS
from targets.basics import UserError, atomic_path


class StoreExporter(StoreReader):
    """Every row, written to a file a spreadsheet or pandas reads."""

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


_ARROW_TYPES: dict[str, Any] = {
    c: (
        (lambda pa: pa.int64())
        if c in INT_COLUMNS
        else (lambda pa: pa.float64())
        if c in FLOAT_COLUMNS
        else (lambda pa: pa.string())
    )
    for c in COLUMNS
}
