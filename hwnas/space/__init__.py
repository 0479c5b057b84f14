"""The search space room: vocabulary and configs, architectures as data, sampling, encoding.

`hwnas.space` is the face (light: no torch): configs (`config`), architectures (`arch`),
sampling (`sample`). The encoding layout (`layout`, plain Python) and the encoders
(`encoding`, torch) are imported from their modules. May import: `targets` only.
"""

from __future__ import annotations

from hwnas.space.arch import (
    Architecture,
    Edge,
    Genotype,
    Stage,
    load_architecture,
    save_architecture,
)
from hwnas.space.config import (
    CELL_OPS,
    HEAD_TOLERANCE,
    NETWORK_VERSION,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    PARAM_FREE_CELL_OPS,
    SCHEMA,
    SPACE_BOUNDS,
    STAGE_OPS,
    SpaceConfig,
    cifar,
    digits,
    get_space,
    head_share,
    head_variant_note,
    list_spaces,
    register_space,
    same_but_head,
    sha256_hex,
    space_variant,
    tiny,
    variant_base,
)
from hwnas.space.sample import (
    sample_architecture,
    sample_architectures,
    sample_fast_biased,
    sample_nth,
)

__all__ = [
    "Architecture",
    "CELL_OPS",
    "Edge",
    "Genotype",
    "HEAD_TOLERANCE",
    "NETWORK_VERSION",
    "NUM_CELL_INPUTS",
    "NUM_STAGES",
    "PARAM_FREE_CELL_OPS",
    "SCHEMA",
    "SPACE_BOUNDS",
    "STAGE_OPS",
    "SpaceConfig",
    "Stage",
    "cifar",
    "digits",
    "get_space",
    "head_share",
    "head_variant_note",
    "list_spaces",
    "load_architecture",
    "register_space",
    "sample_architecture",
    "sample_architectures",
    "sample_fast_biased",
    "sample_nth",
    "save_architecture",
    "same_but_head",
    "sha256_hex",
    "space_variant",
    "tiny",
    "variant_base",
]
