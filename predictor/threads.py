"""One torch thread for small-tensor work.

torch runs even a 5x8 softmax through its intra-op thread pool; on a busy host every such op
waits for a descheduled worker (measured on this 2-core VM at load ~7: 15 ms per softmax
with 2 threads, 5 us with 1). The predictor's fit and the relaxed calibration are thousands
of such ops, so they run on one thread and give the pool back afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block, restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def single_threaded(fn: F) -> F:
    """Run `fn` with one torch thread (see the module's docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads(1):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
