"""The encoding layout of a space: one name per entry of the predictor's input vector.

Plain Python, without torch or numpy, so that commands that only inspect a space
(`hwnas space show`) start fast; `hwnas.space.encoding` re-exports these names and holds the
encoders (one-hot, and the relaxed, differentiable form in torch).
"""

from __future__ import annotations

from hwnas.space import CELL_OPS, NUM_CELL_INPUTS, NUM_STAGES, STAGE_OPS, SpaceConfig


def _cell_names(prefix: str, space: SpaceConfig) -> list[str]:
    return [
        f"{prefix}.node{i}.in{j}.{op}"
        for i in range(space.nodes)
        for j in range(NUM_CELL_INPUTS + i)
        for op in CELL_OPS
    ]


def encoding_layout(space: SpaceConfig) -> list[str]:
    """One name per entry of the encoding vector (stored with profiles and predictors)."""
    names: list[str] = []
    for s in range(NUM_STAGES):
        names += _cell_names(f"stage{s}.cell", space)
    for r in range(NUM_STAGES - 1):
        names += _cell_names(f"reduction{r}.cell", space)
    for s in range(NUM_STAGES):
        names += [f"stage{s}.depth.{d}" for d in space.depth_choices]
        for k in range(space.max_depth):
            names += [
                f"stage{s}.conn{k}.in{j}.{op}" for j in space.window_of(k) for op in STAGE_OPS
            ]
    return names


def encoding_size(space: SpaceConfig) -> int:
    return len(encoding_layout(space))
