"""Where targets keep files they make (reference network, TensorRT engines, timing caches).

Writes are atomic (temp file + rename) because several profiling workers on one host
may create the same cached file at the same time.
"""

from __future__ import annotations

import os
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
