"""The shared basics of every layer: the error for bad input and the one atomic write.

They live in the lowest layer (targets) so profiling, predictor and hwnas can all use them;
the CLI turns a `UserError` into one line on stderr and exit code 2. Every file hwnas
writes (architectures, predictors, stores' exports, checkpoints, summaries) goes through
`atomic_path`: readers see either the old file or the whole new one, never half of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""


class RuntimeMissing(UserError):
    """A backend's runtime is not installed; the message names the pip extra."""


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
