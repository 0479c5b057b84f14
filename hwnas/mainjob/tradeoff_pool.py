"""The trade-off study's worker pool: a few spawned processes that run searches and trainings.

Each job's output goes to its own log file; a job may be added while others run (the budget
searches wait for the weight-0 search), and a deadline stops the pool so that a part run in a
time slot ends in time (interrupted runs resume on the next call).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from hwnas.search import run_search
from hwnas.train.loop import train
from hwnas.train.runs import resolve_source
from targets.basics import UserError


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _job(kind: str, kwargs: dict[str, Any], log: str) -> dict[str, Any]:
    """One search or training in a pool worker; its messages go to `log`."""
    old = sys.stdout, sys.stderr
    with open(log, "w") as f:
        sys.stdout = sys.stderr = f
        try:
            if kind == "search":
                res = run_search(kwargs["cfg"], kwargs["run"], resume=kwargs["resume"], progress=False)
                return res.summary
            result = train(resolve_source(kwargs["source"]), kwargs["cfg"], kwargs["run"],
                           resume=kwargs["resume"], force=kwargs["force"], progress=False)  # fmt: skip
            return dict(result.summary) if hasattr(result, "summary") else {}
        except UserError as exc:
            print(f"hwnas: error: {exc}", flush=True)
            raise UserError(str(exc)) from None
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = old


class Pool:
    """A few long-lived child processes (spawned, `threads` torch threads each) that run
    searches and trainings; jobs can be added while others run (budgets wait for weight 0)."""

    def __init__(self, workers: int, threads: int, deadline: float | None) -> None:
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            self.pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(threads,))
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
        self.deadline = deadline
        self.pending: dict[str, Any] = {}
        self.logs: dict[str, Path] = {}

    def submit(self, name: str, kind: str, kwargs: dict[str, Any], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.logs[name] = log
        self.pending[name] = self.pool.apply_async(_job, (kind, kwargs, str(log)))

    def next_done(self) -> tuple[str, dict[str, Any]] | None:
        """The next finished job (name, summary); None when the deadline passed (the pool is
        stopped: interrupted runs resume on the next part). UserError if a job failed."""
        while self.pending:
            for name, res in list(self.pending.items()):
                if res.ready():
                    del self.pending[name]
                    try:
                        return name, res.get()
                    except Exception as exc:  # noqa: BLE001 (a child's failure, with its log)
                        self.close(kill=True)
                        raise UserError(f"{name} failed: {str(exc).splitlines()[-1] if str(exc) else exc!r} "
                                        f"(see {self.logs[name]})") from None  # fmt: skip
            if self.deadline is not None and time.time() > self.deadline:
                self.close(kill=True)
                return None
            time.sleep(0.2)
        return None

    def close(self, kill: bool = False) -> None:
        if kill:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()
