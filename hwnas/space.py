"""The hierarchical search space (after H-DAS): configs, architectures as data, sampling.

A network is stem -> stage 1 -> reduction -> stage 2 -> reduction -> stage 3 -> pool ->
classifier. Every stage has its own normal-cell genotype, depth and inter-cell connections;
every reduction has its own genotype. An `Architecture` is plain JSON data, validated on
load, and keyed by a sha256 of its canonical JSON.

Inside a stage the states are numbered: 0 and 1 are the stage's two inputs (its input tensor
through two 1x1 convs, as H-DAS), 2 + k is the output of cell k. Cell k takes two distinct
states from the window of the last `window` states (indices max(0, 2 + k - window) .. 1 + k),
each through a stage-level op; the two are summed and the sum is fed as both of the cell's
inputs. Inside a cell, node i sums two edges from distinct inputs of {0: cell input 0,
1: cell input 1, 2 + j: node j < i}, each through an op. Both pairs are stored in input-index
order (canonical): the order they are written in does not change the network or the hash.
The network itself is `hwnas.network` on `hwnas.skeleton` (network version NETWORK_VERSION).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from targets.basics import UserError, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from targets.fingerprint import canonical_json

SCHEMA = "hwnas.architecture/1"

#: The macro network that `hwnas.network` builds for an architecture. Part of every space's
#: config (so of its key): stores and predictors made with another network are refused.
#: 1: the first network (stem x3, per-stage 1x1 projection, FactorizedReduce shortcuts, pools
#:    without BN, a cell's two connections fed to different inputs);
#: 2: H-DAS's evaluation network (hwnas.skeleton).
NETWORK_VERSION = 2

#: Cell-level ops (DARTS); ``none`` exists only in the relaxed supernet.
CELL_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
#: Stage-level ops on connections between cells.
STAGE_OPS: tuple[str, ...] = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
NUM_STAGES = 3
NUM_CELL_INPUTS = 2


#: Supported range of each numeric field of a space config (inclusive). A config from a file
#: is data: these bounds keep a typo (10^6 nodes or channels) from exhausting memory.
SPACE_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 64),
    "input_size": (1, 1024),
    "num_classes": (1, 100_000),
    "channels": (2, 1024),
    "depth_choices": (1, 32),
    "window": (2, 16),
    "nodes": (1, 12),
    "stem_multiplier": (1, 16),
    "upsample": (1, 32),
}


def sha256_hex(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


@dataclass(frozen=True)
class SpaceConfig:
    """A named search space: the network shape and the choices at each level."""

    name: str
    in_channels: int
    input_size: int
    num_classes: int
    channels: int  # C: channels per node in stage 1; doubled at each reduction
    depth_choices: tuple[int, ...]  # cells per stage, same choices for every stage
    window: int = 3  # a cell reads from the last `window` states of its stage
    nodes: int = 4  # intermediate nodes per cell
    stem_multiplier: int = 4  # H-DAS: the stem has 4C channels
    upsample: int = 1  # nearest-neighbour upsampling before the stem (small inputs)
    description: str = ""
    network_version: int = NETWORK_VERSION  # the macro network the config is built with

    def __post_init__(self) -> None:
        for name, (low, high) in SPACE_BOUNDS.items():
            value = getattr(self, name)
            values = value if name == "depth_choices" else (value,)
            if name == "depth_choices" and not values:
                raise ValueError(f"space {self.name!r}: depth_choices must not be empty")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"space {self.name!r}: {name} must be integers, got {v!r}")
                if not low <= v <= high:
                    raise ValueError(
                        f"space {self.name!r}: {name} = {v} is outside the supported range "
                        f"{low}..{high}"
                    )
        if len(set(self.depth_choices)) != len(self.depth_choices):
            raise ValueError(f"space {self.name!r}: depth_choices has duplicates {list(self.depth_choices)}")
        if self.network_version != NETWORK_VERSION:
            raise ValueError(
                f"space {self.name!r} was made for network version {self.network_version}; this "
                f"hwnas builds network version {NETWORK_VERSION} (H-DAS's macro network): "
                "regenerate it for the current version"
            )

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.input_size, self.input_size)

    def window_of(self, k: int) -> range:
        """State indices cell k of a stage may read: the last `window` states."""
        return range(max(0, NUM_CELL_INPUTS + k - self.window), NUM_CELL_INPUTS + k)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["depth_choices"] = list(self.depth_choices)
        return data

    @property
    def key(self) -> str:
        """sha256 of the canonical config: what stores and predictors are bound to."""
        return sha256_hex(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "space") -> SpaceConfig:
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: expected an object with the space config, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        missing = sorted(
            f
            for f, spec in cls.__dataclass_fields__.items()
            if f not in data and spec.default is MISSING and spec.default_factory is MISSING
        )
        if missing:
            raise UserError(f"{where}: missing field(s) {missing}")
        # configs written before the field existed describe the first network
        version = data.get("network_version", 1)
        if version != NETWORK_VERSION:
            raise UserError(
                f"{where}: made for network version {version}, but this hwnas builds network "
                f"version {NETWORK_VERSION} (H-DAS's macro network, README 'The search space'), "
                "another network: for latencies, profile again and fit a new predictor; for an "
                "architecture file, regenerate it (`hwnas arch sample`) or set its space's "
                f'"network_version" to {NETWORK_VERSION} and the registered config (its hash changes)'
            )
        for name, limit in (("name", 64), ("description", 1000)):
            value = data.get(name, "")
            if not isinstance(value, str) or len(value) > limit:
                raise UserError(f"{where}: field {name!r} must be a string of at most {limit} characters")
        choices = data["depth_choices"]
        if not isinstance(choices, list | tuple) or len(choices) > SPACE_BOUNDS["depth_choices"][1]:
            raise UserError(
                f"{where}: field 'depth_choices' must be a list of at most "
                f"{SPACE_BOUNDS['depth_choices'][1]} integers, got {json.dumps(choices)[:80]}"
            )
        try:
            values = dict(data)
            values["depth_choices"] = tuple(choices)
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: invalid space config: {exc}") from exc

    # -- size of the space -------------------------------------------------------------------
    def cell_count(self) -> int:
        """Distinct cell genotypes: node i picks 2 of (2 + i) inputs, each with an op."""
        total = 1
        for i in range(self.nodes):
            total *= math.comb(NUM_CELL_INPUTS + i, 2) * len(CELL_OPS) ** 2
        return total

    def stage_count(self) -> int:
        """Distinct (depth, connections) choices of one stage (cell genotype excluded)."""
        total = 0
        for depth in self.depth_choices:
            ways = 1
            for k in range(depth):
                ways *= math.comb(len(self.window_of(k)), 2) * len(STAGE_OPS) ** 2
            total += ways
        return total

    def count(self) -> int:
        """Exact number of discrete architectures in the space."""
        normal = self.cell_count() * self.stage_count()
        return normal**NUM_STAGES * self.cell_count() ** (NUM_STAGES - 1)


# -- registry (as timm's register_model / create_model) ----------------------------------------
_SPACES: dict[str, Callable[[], SpaceConfig]] = {}


def register_space(fn: Callable[[], SpaceConfig]) -> Callable[[], SpaceConfig]:
    """Decorator: register a zero-argument factory under the config's name."""
    cfg = fn()
    _SPACES[cfg.name] = fn
    return fn


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def get_space(name: str) -> SpaceConfig:
    try:
        return _SPACES[name]()
    except KeyError:
        raise UserError(
            f"unknown space {name!r}; known spaces: {', '.join(list_spaces())} "
            "(see `hwnas space show NAME`)"
        ) from None


@register_space
def tiny() -> SpaceConfig:
    return SpaceConfig(
        name="tiny",
        in_channels=3,
        input_size=32,
        num_classes=10,
        channels=10,
        depth_choices=(1, 2, 3),
        window=3,
        description="CPU-sized default for demos, tests and CI (3x32x32, ~1-3 ms on 1 ORT thread)",
    )


@register_space
def digits() -> SpaceConfig:
    return SpaceConfig(
        name="digits",
        in_channels=1,
        input_size=8,
        num_classes=10,
        channels=8,
        depth_choices=(1, 2, 3),
        window=3,
        upsample=4,
        description="sklearn's offline digits (1x8x8), upsampled x4 so latency stands above noise",
    )


@register_space
def cifar() -> SpaceConfig:
    return SpaceConfig(
        name="cifar",
        in_channels=3,
        input_size=32,
        num_classes=10,
        channels=36,
        depth_choices=(4, 5, 6, 7, 8),
        window=3,
        description="paper scale: deploy C=36, about 20 cells (H-DAS evaluation network)",
    )


# -- architectures ------------------------------------------------------------------------------
Edge = tuple[str, int]  # (op, input index)
Genotype = tuple[tuple[Edge, Edge], ...]  # one pair of edges per node


def _canonical_pairs(pairs: Sequence[Sequence[Edge]]) -> tuple[tuple[Edge, Edge], ...]:
    """Each pair of edges in input-index order: a node sums its two edges and a cell sums its
    two connections, so the order they are written in carries no meaning; storing one order
    gives one hash (and one profile) per network."""
    return tuple(
        tuple(sorted(((str(op), int(idx)) for op, idx in pair), key=lambda e: (e[1], e[0])))  # type: ignore[misc]
        for pair in pairs
    )


@dataclass(frozen=True)
class Stage:
    """A stage's choices; node inputs and connections are kept in index order (canonical)."""

    cell: Genotype  # the stage's own normal-cell genotype
    depth: int
    connections: tuple[tuple[Edge, Edge], ...]  # per cell: two (stage op, state index)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell", _canonical_pairs(self.cell))
        object.__setattr__(self, "connections", _canonical_pairs(self.connections))


@dataclass(frozen=True)
class Architecture:
    """One discrete architecture: plain data, hashable, JSON round-trip."""

    space: SpaceConfig
    stages: tuple[Stage, ...]
    reductions: tuple[Genotype, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "reductions", tuple(_canonical_pairs(g) for g in self.reductions))

    def to_dict(self) -> dict[str, Any]:
        def geno(g: Genotype) -> list[list[list[Any]]]:
            return [[[op, idx] for op, idx in node] for node in g]

        return {
            "schema": SCHEMA,
            "space": self.space.to_dict(),
            "stages": [
                {
                    "depth": s.depth,
                    "cell": geno(s.cell),
                    "connections": [[[op, idx] for op, idx in c] for c in s.connections],
                }
                for s in self.stages
            ],
            "reductions": [{"cell": geno(g)} for g in self.reductions],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @property
    def hash(self) -> str:
        """Stable key: sha256 of the canonical JSON (space config included)."""
        return sha256_hex(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, where: str = "architecture") -> Architecture:
        return _parse_architecture(data, where)

    @classmethod
    def from_json(cls, text: str, where: str = "architecture") -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "fix the file or regenerate it with `hwnas arch sample`"
            ) from None
        return _parse_architecture(data, where)


def _fail(where: str, msg: str) -> UserError:
    return UserError(f"{where}: {msg}")


def _parse_edge(
    item: Any, ops: Sequence[str], n_inputs: range, where: str, kind: str
) -> Edge:
    if not (isinstance(item, list | tuple) and len(item) == 2):
        raise _fail(where, f"expected [op, input index], got {json.dumps(item)}")
    op, idx = item
    if op not in ops:
        raise _fail(where, f"unknown {kind} op {op!r}; choose one of {', '.join(ops)}")
    if isinstance(idx, bool) or not isinstance(idx, int):
        raise _fail(where, f"input index must be an integer, got {json.dumps(idx)}")
    if idx not in n_inputs:
        raise _fail(
            where,
            f"input index {idx} out of range; allowed {n_inputs.start}..{n_inputs.stop - 1}",
        )
    return (op, idx)


def _parse_pair(
    item: Any, ops: Sequence[str], inputs: range, where: str, kind: str
) -> tuple[Edge, Edge]:
    if not isinstance(item, list | tuple):
        raise _fail(where, f"expected a list of 2 edges, got {json.dumps(item)}")
    if len(item) != 2:
        raise _fail(where, f"expected exactly 2 edges, got {len(item)} (missing or extra edge)")
    a = _parse_edge(item[0], ops, inputs, f"{where}[0]", kind)
    b = _parse_edge(item[1], ops, inputs, f"{where}[1]", kind)
    if a[1] == b[1]:
        raise _fail(where, f"both edges read input {a[1]}; the two inputs must differ")
    return (a, b)


def _parse_genotype(data: Any, space: SpaceConfig, where: str) -> Genotype:
    if not isinstance(data, list):
        raise _fail(where, f"expected a list of {space.nodes} nodes")
    if len(data) != space.nodes:
        raise _fail(where, f"expected {space.nodes} nodes, got {len(data)}")
    return tuple(
        _parse_pair(node, CELL_OPS, range(NUM_CELL_INPUTS + i), f"{where}[{i}]", "cell")
        for i, node in enumerate(data)
    )


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise _fail(where, f"missing field {key!r}")
    return data[key]


def _parse_architecture(data: Any, where: str) -> Architecture:
    if not isinstance(data, Mapping):
        raise _fail(where, "expected a JSON object")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise _fail(where, f"field 'schema' is {schema!r}, expected {SCHEMA!r}")
    extra = sorted(set(data) - {"schema", "space", "stages", "reductions", "meta"})
    if extra:
        raise _fail(where, f"unknown field(s) {extra}")
    space = SpaceConfig.from_dict(_require(data, "space", where), f"{where}: space")
    if space.name in _SPACES and get_space(space.name) != space:
        raise _fail(
            where,
            f"field 'space' claims the registered space {space.name!r} but its config differs "
            f"from it (wrong space); regenerate the architecture for space {space.name!r}",
        )
    stages_data = _require(data, "stages", where)
    if not isinstance(stages_data, list) or len(stages_data) != NUM_STAGES:
        raise _fail(f"{where}: stages", f"expected a list of {NUM_STAGES} stages")
    stages = []
    for s, sd in enumerate(stages_data):
        w = f"{where}: stages[{s}]"
        if not isinstance(sd, Mapping):
            raise _fail(w, "expected an object with depth, cell, connections")
        depth = _require(sd, "depth", w)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in space.depth_choices:
            raise _fail(
                f"{w}.depth", f"{json.dumps(depth)} is not one of the depth choices {list(space.depth_choices)}"
            )
        cell = _parse_genotype(_require(sd, "cell", w), space, f"{w}.cell")
        conns = _require(sd, "connections", w)
        if not isinstance(conns, list) or len(conns) != depth:
            got = len(conns) if isinstance(conns, list) else type(conns).__name__
            raise _fail(f"{w}.connections", f"expected {depth} entries (one per cell), got {got}")
        parsed = tuple(
            _parse_pair(
                c,
                STAGE_OPS,
                space.window_of(k),
                f"{w}.connections[{k}]",
                "stage",
            )
            for k, c in enumerate(conns)
        )
        stages.append(Stage(cell=cell, depth=depth, connections=parsed))
    red_data = _require(data, "reductions", where)
    if not isinstance(red_data, list) or len(red_data) != NUM_STAGES - 1:
        raise _fail(f"{where}: reductions", f"expected a list of {NUM_STAGES - 1} reduction cells")
    reductions = []
    for r, rd in enumerate(red_data):
        w = f"{where}: reductions[{r}]"
        if not isinstance(rd, Mapping):
            raise _fail(w, "expected an object with 'cell'")
        reductions.append(_parse_genotype(_require(rd, "cell", w), space, f"{w}.cell"))
    meta = data.get("meta", {})
    return Architecture(space=space, stages=tuple(stages), reductions=tuple(reductions), meta=meta)


def load_architecture(path: str | os.PathLike[str]) -> Architecture:
    """Read and validate an architecture JSON file; errors name the file and the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot read architecture file ({exc.__class__.__name__})") from None
    return Architecture.from_json(text, where=str(p))


def save_architecture(arch: Architecture, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, arch.to_json() + "\n")


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

