"""Profile architectures biased towards low latency, into an existing profile store.

    python bench/profile_cheap.py --space digits --target ort-cpu --db runs/bench/digits-cheap.db \
        --add 150 --seed 0

Uniform sampling (`hwnas profile`) covers the middle of a space's latency range: on `digits`
400 uniform architectures ran 0.62-1.74 ms, while a budget at half the weight-0 search's
latency asks for ~0.36 ms, where a predictor fitted on uniform samples extrapolates (it was
33 % optimistic there, docs/benchmarks.md). This adds architectures drawn with a random
share p ~ U(0, 1) of parameter-free cell ops (skip, pooling) and depth 1 with probability p,
so the store spans the fast end too; same protocol, same store, same fingerprint.
"""

from __future__ import annotations

import argparse
import random
import sqlite3

from hwnas.nets.profile_source import SpaceCandidates
from hwnas.space import (
    CELL_OPS,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    STAGE_OPS,
    Architecture,
    Stage,
)
from profiling.candidates import Candidate

FREE = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
CONV = tuple(op for op in CELL_OPS if op not in FREE)


class CheapCandidates(SpaceCandidates):
    """Architectures with a random share of parameter-free ops and a bias to shallow stages."""

    def sample(self, seed: int, index: int) -> Candidate:
        space = self.space
        rng = random.Random(f"hwnas-cheap:{space.key}:{seed}:{index}")
        p = rng.random()

        def op() -> str:
            return rng.choice(FREE) if rng.random() < p else rng.choice(CONV)

        def geno() -> tuple:
            nodes = []
            for i in range(space.nodes):
                a, b = sorted(rng.sample(range(NUM_CELL_INPUTS + i), 2))
                nodes.append(((op(), a), (op(), b)))
            return tuple(nodes)

        stages = []
        for _ in range(NUM_STAGES):
            cell = geno()
            depth = (
                min(space.depth_choices) if rng.random() < p else rng.choice(space.depth_choices)
            )
            conns = []
            for k in range(depth):
                a, b = sorted(rng.sample(space.window_of(k), 2))
                conns.append(((rng.choice(STAGE_OPS), a), (rng.choice(STAGE_OPS), b)))
            stages.append(Stage(cell=cell, depth=depth, connections=tuple(conns)))
        arch = Architecture(
            space=space,
            stages=tuple(stages),
            reductions=tuple(geno() for _ in range(NUM_STAGES - 1)),
        )
        return self.candidate(arch)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--space", default="digits")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--db", required=True)
    ap.add_argument("--add", type=int, required=True, help="architectures to add")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from targets.registry import load_target

    spec = load_target(args.target)
    con = sqlite3.connect(args.db)
    have = con.execute(
        "SELECT COUNT(DISTINCT arch_hash) FROM measurements WHERE kind='profile'"
    ).fetchone()[0]
    con.close()
    with ProfileStore(args.db) as store:
        summary = run_profile(
            CheapCandidates(args.space),
            spec,
            store,
            have + args.add,
            settings=ProfileSettings(seed=args.seed, progress=False),
        )
    print(summary)


if __name__ == "__main__":
    main()
