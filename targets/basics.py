"""The shared basics of every layer: the error for bad input and the one atomic write.

They live in the lowest layer (targets) so profiling, predictor and hwnas can all use them;
the CLI turns a `UserError` into one line on stderr and exit code 2. Every file hwnas
writes (architectures, predictors, stores' exports, checkpoints, summaries) goes through
`atomic_path`: readers see either the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""


class RuntimeMissing(UserError):
    """A backend's runtime is not installed; the message names the pip extra."""


def check_range(
    flag: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
) -> None:
    """UserError unless `value` is a finite number within [low, high] (`above`/`below`: the
    bound itself excluded); None passes (the caller's "not set"). One rule for every numeric
    setting, so NaN, inf and negative values are refused where the setting is made, in the
    CLI and in Python alike, instead of failing deep inside torch or landing in a file."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if above else value >= low
    if ok and high is not None:
        ok = value < high if below else value <= high
    if ok:
        return
    parts = []
    if low is not None:
        parts.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if below else '<='} {high:g}")
    kind = "an integer" if isinstance(value, int) else "a finite number"
    raise UserError(f"{flag} must be {kind} {' and '.join(parts)}, got {value}")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) as None: what strict JSON can hold
    (a figure that is unknown is written as null, not as a bare NaN no JSON reader takes)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def strict_json(value: Any, **kwargs: Any) -> str:
    """json.dumps for files hwnas writes: strict JSON (no NaN/Infinity tokens), non-finite
    figures as null (json_safe). Objects json cannot encode go through `default` if given."""
    default = kwargs.pop("default", None)
    if default is not None:  # resolve the objects first, so their floats are made safe too
        value = json.loads(json.dumps(value, default=default, allow_nan=True))
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


def load_torch_file(path: str | os.PathLike[str], what: str, fix: str) -> Any:
    """torch.load(weights_only=True) of a file hwnas wrote; a truncated, foreign or text file
    is one UserError in our words ("<path>: not a readable <what> ...; <fix>"), never torch's
    text, which is cut mid-sentence in one line and advises weights_only=False (running the
    file's code). Callers check the loaded object's own format themselves."""
    import zipfile

    import torch

    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged or foreign file
        if zipfile.is_zipfile(p) and "global" in str(exc).lower():
            why = "it holds Python objects, which hwnas never writes there (refused unread)"
        else:
            why = "truncated, corrupted or not written by hwnas"
        raise UserError(f"{p}: not a readable {what} ({why}); {fix}") from None


def shareable(path: str | os.PathLike[str]) -> None:
    """Give a file made by tempfile.mkstemp (always 0600) the mode open() would: 0666 & ~umask.

    Architectures, exports and run summaries are for teammates and CI to read too.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    On any error the temporary file is removed and `path` is left as it was; an unwritable
    place is a UserError naming it. The caller writes the temporary path however it likes
    (bytes, `torch.save`, a parquet writer).
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise UserError(
            f"{out}: cannot write here ({exc.strerror or exc}); choose a writable path"
        ) from None
    try:
        yield Path(tmp)
        shareable(tmp)
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserError(
                f"{out}: cannot write here ({exc.strerror or exc}); choose a writable path"
            ) from None
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` so readers see either nothing or the whole file (umask honoured)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())
