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
import sqlite3

from hwnas.nets.profile_source import SpaceCandidates
from hwnas.space import (
    sample_fast_biased,
)
from profiling.candidates import Candidate


class CheapCandidates(SpaceCandidates):
    """Architectures with a random share of parameter-free ops and a bias to shallow stages."""

    def sample(self, seed: int, index: int) -> Candidate:
        return self.candidate(sample_fast_biased(self.space, seed, index, stream="hwnas-cheap"))


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
