"""Where the hierarchy's step cost sits: forward, backward to the weights, backward to the
architecture logits, timed separately for hwnas's supernet and the plain DARTS reference.

    .venv/bin/python bench/search_step_split.py --channels 8 --batch 32 --rounds 5 --threads 1

Both networks are built as in bench/search_step.py (same cells, ops, width, batch) and timed
in interleaved rounds in one process; process CPU time per call, medians and ratios printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hwnas.search.relax import relax
    from hwnas.search.supernet import Supernet
    from hwnas.space import SpaceConfig
    from hwnas.space.encoding import ArchParameters

    space = SpaceConfig(name="bench5", in_channels=3, input_size=32, num_classes=10, channels=args.channels,
                        depth_choices=(1,), window=2)
    torch.manual_seed(0)
    alpha = ArchParameters(space)
    hier = Supernet(space, args.channels)
    darts = search_step.DartsNet(args.channels, 5)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    d_alphas = [darts.alpha_normal, darts.alpha_reduce]

    def h_fwd() -> None:
        with torch.no_grad():
            hier(x, relax(alpha, "full"))

    def d_fwd() -> None:
        with torch.no_grad():
            darts(x)

    def h_w() -> None:
        F.cross_entropy(hier(x, relax(alpha, "full")), y).backward(inputs=list(hier.parameters()))

    def d_w() -> None:
        F.cross_entropy(darts(x), y).backward(inputs=darts.weights())

    def h_a() -> None:
        F.cross_entropy(hier(x, relax(alpha, "full")), y).backward(inputs=list(alpha.parameters()))

    def d_a() -> None:
        F.cross_entropy(darts(x), y).backward(inputs=d_alphas)

    parts: dict[str, tuple[Any, Any]] = {
        "forward": (d_fwd, h_fwd),
        "forward + backward to the weights": (d_w, h_w),
        "forward + backward to the logits": (d_a, h_a),
    }
    times: dict[str, list[list[float]]] = {k: [[], []] for k in parts}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, fns in parts.items():
            for i, fn in enumerate(fns):
                t = time.process_time()
                fn()
                if r:
                    times[name][i].append(time.process_time() - t)
    print("| part | plain DARTS CPU s | hwnas CPU s | ratio (per round) | ratio of medians |")
    print("|---|---|---|---|---|")
    for name, (d, h) in times.items():
        per = ", ".join(f"{a / b:.2f}" for a, b in zip(h, d, strict=True))
        md, mh = statistics.median(d), statistics.median(h)
        print(f"| {name} | {md:.3f} | {mh:.3f} | {per} | {mh / md:.2f}x |")


if __name__ == "__main__":
    main()
