"""Where targets keep files they make (reference network, TensorRT engines, timing caches).

Writes are atomic (temp file + rename) because several profiling workers on one host
may create the same cached file at the same time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else $HWNAS_CACHE_DIR, else $XDG_CACHE_HOME/hwnas, else ~/.cache/hwnas."""
    if override:
        base = Path(override).expanduser()
    elif os.environ.get("HWNAS_CACHE_DIR"):
        base = Path(os.environ["HWNAS_CACHE_DIR"]).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "hwnas"
    base.mkdir(parents=True, exist_ok=True)
    return base


def shareable(path: str | os.PathLike[str]) -> None:
    """Give a file made by tempfile.mkstemp (always 0600) the mode open() would: 0666 & ~umask.

    Architectures, exports and run summaries are for teammates and CI to read too.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either nothing or the whole file (umask honoured)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
