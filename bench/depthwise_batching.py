"""Would batching the depthwise convs of several ops on one input pay? Four depthwise convs
(different weights, one input) against one grouped conv with the four weights stacked
(channel multiplier 4), forward + backward, process CPU time, median of 8 after a warm-up.

    .venv/bin/python bench/depthwise_batching.py

"input-grad only" is the architecture step's case (no weight gradients).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def bench(fn: Callable[[], None], reps: int = 9) -> float:
    ts = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return statistics.median(ts[1:]) * 1e3


def main() -> None:
    torch.set_num_threads(1)
    for c, hw, k, dil in [(8, 32, 5, 1), (8, 32, 3, 1), (8, 32, 5, 2), (16, 16, 5, 1)]:
        x = torch.randn(32, c, hw, hw, requires_grad=True)
        ws = [torch.randn(c, 1, k, k, requires_grad=True) for _ in range(4)]
        pad = (k // 2) * dil

        def sep(inputs: list[torch.Tensor] | None = None) -> None:
            ys = [F.conv2d(x, w if inputs is None else w.detach(), None, 1, pad, dil, c) for w in ws]  # noqa: B023
            torch.autograd.backward(ys, [torch.ones_like(y) for y in ys], inputs=inputs)

        def bat(inputs: list[torch.Tensor] | None = None) -> None:
            w = torch.stack(ws, 1).reshape(4 * c, 1, k, k)  # noqa: B023
            y = F.conv2d(x, w if inputs is None else w.detach(), None, 1, pad, dil, c)  # noqa: B023
            y.backward(torch.ones_like(y), inputs=inputs)

        print(
            f"C={c} {hw}x{hw} k={k} dilation={dil}: 4 separate {bench(sep):.1f} ms, batched {bench(bat):.1f} ms; "
            f"input-grad only {bench(lambda: sep([x])):.1f} vs {bench(lambda: bat([x])):.1f} ms"  # noqa: B023
        )


if __name__ == "__main__":
    main()
