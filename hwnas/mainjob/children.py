"""The one way the main job runs a step in a child process.

A child is a fresh interpreter (spawn: no forked torch state) that runs one library
function with one torch thread, its messages going to a log file, and its JSON-able result
to a file beside it. The main job starts its two searches and its two trainings this way
(two children at once halve their wall time on a 2-core host), and its re-measurement (a
figure re-measured in the profiler's own process shares its warm caches and looks more
repeatable than it is). A child that fails with bad input exits 2 with the message as the
log's last line; anything else exits 1 with the traceback.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from targets.basics import UserError, atomic_write_text, strict_json


def _child_main(
    fn: Callable[..., Any], kwargs: dict[str, Any], log: Path, result: Path, device: str | None
) -> None:
    """The child's entry point: it owns its process, so it sets the thread count (and on
    CUDA cuDNN's autotuning, as the commands do) here."""
    import torch

    from hwnas import devices

    torch.set_num_threads(1)
    if device is not None:
        devices.tune_backends(devices.resolve_device(device))
    with log.open("w") as f:
        sys.stdout = sys.stderr = f
        try:
            value = fn(**kwargs)
            atomic_write_text(result, strict_json(value, default=str) + "\n")
        except UserError as exc:
            print(f"hwnas: error: {exc}", flush=True)
            sys.exit(2)
        except BaseException:
            traceback.print_exc()
            f.flush()
            sys.exit(1)


class Child:
    """`fn(**kwargs)` in a spawned interpreter of one thread, polled like `Popen`."""

    def __init__(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], log: Path, device: str | None = None
    ) -> None:
        self.log = log
        self.result_path = log.with_suffix(".result.json")
        self.result_path.unlink(missing_ok=True)
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by the child's OpenMP at start-up; ours is left as it was
        try:
            self.proc = mp.get_context("spawn").Process(
                target=_child_main, args=(fn, kwargs, log, self.result_path, device), daemon=True
            )
            self.proc.start()
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def poll(self) -> int | None:
        return None if self.proc.is_alive() else self.proc.exitcode

    def wait(self) -> int:
        self.proc.join()
        return int(self.proc.exitcode or 0)

    def terminate(self) -> None:
        self.proc.terminate()

    def last_message(self) -> str:
        """The log's last line (the error of a failed child)."""
        lines = self.log.read_text().strip().splitlines() if self.log.is_file() else []
        return lines[-1] if lines else f"exit code {self.proc.exitcode}"

    def result(self) -> Any:
        """What `fn` returned (JSON); UserError with the child's last message if it failed."""
        code = self.wait()
        if code != 0 or not self.result_path.is_file():
            raise UserError(self.last_message())
        value = json.loads(self.result_path.read_text())
        self.result_path.unlink(missing_ok=True)
        return value
