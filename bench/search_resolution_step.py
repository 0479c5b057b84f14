"""Forward+backward seconds of the full-mixture `digits` supernet at several input sizes.

`.venv/bin/python bench/search_resolution_step.py` (1 thread, batch 32, 4 repeats per row):
`--search-resolution 32` is the deployed network's input (8x8 digits upsampled x4), 8 is the
native size. Uses `SearchModel(alpha, C, resolution)`, exactly what `hwnas search` builds.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from hwnas.search.relax import relax
from hwnas.search.supernet import SearchModel
from hwnas.space import get_space
from hwnas.space.encoding import ArchParameters


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = get_space("digits")
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    print("resolution  C  seconds per forward+backward (4 repeats)  median")
    for resolution in (32, 16, 8):
        for c in (4, 8):
            alpha = ArchParameters(space)
            model = SearchModel(alpha, c, None if resolution == 32 else resolution)
            times = []
            for _ in range(4):
                t = time.perf_counter()
                F.cross_entropy(model.net(x, relax(alpha, "full")), y).backward()
                times.append(time.perf_counter() - t)
            print(f"{resolution:10d} {c:2d}  {[round(v, 3) for v in times]}  {statistics.median(times):.3f}", flush=True)


if __name__ == "__main__":
    main()
