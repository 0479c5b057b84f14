"""Sampling architectures: uniform over every choice, one seeded RNG per stream index."""

from __future__ import annotations

import random

from hwnas.space.arch import Architecture, Genotype, Stage
from hwnas.space.config import (
    CELL_OPS,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    PARAM_FREE_CELL_OPS,
    STAGE_OPS,
    SpaceConfig,
)


# -- sampling ------------------------------------------------------------------------------------
def _sample_genotype(rng: random.Random, space: SpaceConfig) -> Genotype:
    nodes = []
    for i in range(space.nodes):
        a, b = sorted(rng.sample(range(NUM_CELL_INPUTS + i), 2))
        nodes.append(((rng.choice(CELL_OPS), a), (rng.choice(CELL_OPS), b)))
    return tuple(nodes)


def sample_architecture(space: SpaceConfig, rng: random.Random) -> Architecture:
    """Uniform over every choice independently (ops, inputs, depth, connections)."""
    stages = []
    for _ in range(NUM_STAGES):
        cell = _sample_genotype(rng, space)
        depth = rng.choice(space.depth_choices)
        conns = []
        for k in range(depth):
            a, b = sorted(rng.sample(space.window_of(k), 2))
            conns.append(((rng.choice(STAGE_OPS), a), (rng.choice(STAGE_OPS), b)))
        stages.append(Stage(cell=cell, depth=depth, connections=tuple(conns)))
    reductions = tuple(_sample_genotype(rng, space) for _ in range(NUM_STAGES - 1))
    return Architecture(space=space, stages=tuple(stages), reductions=reductions)


def sample_architectures(space: SpaceConfig, seed: int, n: int) -> list[Architecture]:
    """The first n architectures of the seeded stream (same seed, same list, any process)."""
    return [sample_nth(space, seed, i) for i in range(n)]


def sample_nth(space: SpaceConfig, seed: int, index: int) -> Architecture:
    """The index-th architecture of a seeded stream; each index has its own RNG so a resumed
    run can draw any index without replaying the ones before it."""
    rng = random.Random(f"hwnas:{space.key}:{seed}:{index}")
    return sample_architecture(space, rng)


def sample_fast_biased(space: SpaceConfig, seed: int, index: int, stream: str = "hwnas-fast") -> Architecture:
    """The index-th architecture of a seeded stream biased to low latency: a random share
    p ~ U(0, 1) of parameter-free cell ops, each stage at its smallest depth with probability
    p. Uniform samples rarely reach the fast end that latency-aware searches reach (digits:
    400 uniform ones ran 0.62-1.74 ms, docs/benchmarks.md). `stream` names the seeded stream
    (bench/profile_cheap.py keeps its own, "hwnas-cheap")."""
    rng = random.Random(f"{stream}:{space.key}:{seed}:{index}")
    p = rng.random()
    convs = tuple(op for op in CELL_OPS if op not in PARAM_FREE_CELL_OPS)

    def op() -> str:
        return rng.choice(PARAM_FREE_CELL_OPS) if rng.random() < p else rng.choice(convs)

    def genotype() -> Genotype:
        nodes = []
        for i in range(space.nodes):
            a, b = sorted(rng.sample(range(NUM_CELL_INPUTS + i), 2))
            nodes.append(((op(), a), (op(), b)))
        return tuple(nodes)

    stages = []
    for _ in range(NUM_STAGES):
        cell = genotype()
        depth = min(space.depth_choices) if rng.random() < p else rng.choice(space.depth_choices)
        conns = []
        for k in range(depth):
            a, b = sorted(rng.sample(space.window_of(k), 2))
            conns.append(((rng.choice(STAGE_OPS), a), (rng.choice(STAGE_OPS), b)))
        stages.append(Stage(cell=cell, depth=depth, connections=tuple(conns)))
    reductions = tuple(genotype() for _ in range(NUM_STAGES - 1))
    return Architecture(space=space, stages=tuple(stages), reductions=reductions)
