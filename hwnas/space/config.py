"""The search space's vocabulary and configs: ops, sizes, named spaces (after H-DAS).

A network is stem -> stage 1 -> reduction -> stage 2 -> reduction -> stage 3 -> pool ->
classifier. Every stage has its own normal-cell genotype, depth and inter-cell connections;
every reduction has its own genotype. `CELL_OPS` and `STAGE_OPS` are the one op vocabulary
(networks, supernet, encoding and tests read them from here). Named spaces are registered as
timm registers models (`register_space` / `get_space`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, replace
from typing import Any

from targets.basics import UserError
from targets.fingerprint import canonical_json

SCHEMA = "hwnas.architecture/1"

#: The macro network that `hwnas.nets.network` builds for an architecture. Part of every space's
#: config (so of its key): stores and predictors made with another network are refused.
#: 1: the first network (stem x3, per-stage 1x1 projection, FactorizedReduce shortcuts, pools
#:    without BN, a cell's two connections fed to different inputs);
#: 2: H-DAS's evaluation network (hwnas.nets.skeleton).
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
#: The cell ops without parameters, in CELL_OPS's vocabulary (the search's collapse guard caps
#: them per cell; the fast-biased sampler draws them; the order is part of its seeded stream).
PARAM_FREE_CELL_OPS: tuple[str, ...] = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
#: Stage-level ops on connections between cells.
STAGE_OPS: tuple[str, ...] = ("skip_connect", "max_pool_3x3", "avg_pool_3x3")
NUM_STAGES = 3
NUM_CELL_INPUTS = 2


#: Supported range of each numeric field of a space config (inclusive). A config from a file
#: is data: these bounds keep a typo (10^6 nodes or channels) from exhausting memory.
SPACE_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 64),
    "input_size": (1, 1024),
    "num_classes": (2, 100_000),  # a classifier needs two classes at least
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
    """A registered space, or a data variant of one by its name (`tiny-1ch-3class`)."""
    if name in _SPACES:
        return _SPACES[name]()
    found = _parse_variant(name)
    if found is None:
        raise UserError(
            f"unknown space {name!r}; known spaces: {', '.join(list_spaces())}, or a data "
            "variant BASE-<C>ch-<K>class of one (see `hwnas space show NAME`)"
        )
    base, channels, classes = found
    space = space_variant(_SPACES[base](), in_channels=channels, num_classes=classes)
    if space.name != name:
        raise UserError(f"space {name!r} is space {space.name!r} (no field differs from it): use {space.name!r}")
    return space


# -- data variants: a registered space with another input channel count or class count ---------
#: `BASE[-<C>ch][-<K>class]`: the name of a registered space's variant for other data.
_VARIANT = re.compile(r"^(?P<base>.+?)(?:-(?P<ch>\d{1,3})ch)?(?:-(?P<k>\d{1,6})class)?$")


#: A latency predictor of a space holds for a variant with another class count while the
#: classifier's extra multiply-adds stay within this share of `macs_floor` (the classifier
#: is one GAP -> linear layer: 3 classes instead of 10 change a `tiny` network's MACs by
#: < 0.01 %; README 'Your own data').
HEAD_TOLERANCE = 0.01


def macs_floor(space: SpaceConfig) -> int:
    """A lower bound of any network's multiply-adds in `space`: the stem's 3x3 conv and stage
    1's two 1x1 input projections, which every architecture has."""
    hw = (space.input_size * space.upsample) ** 2
    stem = space.stem_multiplier * space.channels
    return hw * (9 * space.in_channels * stem + 2 * stem * space.nodes * space.channels)


def head_share(a: SpaceConfig, b: SpaceConfig) -> float:
    """The change of the classifier's multiply-adds from `a` to `b` (its input: the last
    stage's 2 x nodes x 4C channels), as a share of `macs_floor(a)`."""
    return 8 * a.nodes * a.channels * abs(b.num_classes - a.num_classes) / macs_floor(a)


def same_but_head(a: SpaceConfig, b: SpaceConfig) -> bool:
    """True when `a` and `b` build one network but for the classifier's class count (and
    their labels), within HEAD_TOLERANCE: a latency predictor of one holds for the other."""
    labels = ("name", "description", "num_classes")
    da, db = a.to_dict(), b.to_dict()
    return all(da[k] == db[k] for k in da if k not in labels) and head_share(a, b) <= HEAD_TOLERANCE


def head_variant_note(fitted: Any, space: SpaceConfig) -> str | None:
    """What a predictor fitted on space config `fitted` (its header's dict) means for a
    network of `space`: a note when `space` is that network with another class count
    (`same_but_head`: the predictor holds), None otherwise (the same space, or another one
    the caller's key check refuses)."""
    if not isinstance(fitted, Mapping):
        return None
    try:
        fitted_space = SpaceConfig.from_dict(fitted, where="the predictor's space config")
    except UserError:
        return None
    if fitted_space.key == space.key or not same_but_head(fitted_space, space):
        return None
    return (
        f"the predictor was fitted on space '{fitted_space.name}' ({fitted_space.num_classes} classes); "
        f"this network ('{space.name}') has {space.num_classes}: its predictions hold (the classifier "
        f"is one small linear layer), but for exact figures profile '{space.name}' and fit a predictor on it"
    )


def _parse_variant(name: str) -> tuple[str, int | None, int | None] | None:
    m = _VARIANT.match(name)
    if m is None or m["base"] not in _SPACES or (m["ch"] is None and m["k"] is None):
        return None
    return m["base"], None if m["ch"] is None else int(m["ch"]), None if m["k"] is None else int(m["k"])


def variant_base(name: str) -> str:
    """The registered space a variant's name derives from (the name itself otherwise)."""
    found = _parse_variant(name) if name not in _SPACES else None
    return found[0] if found is not None else name


def space_variant(
    space: SpaceConfig, *, in_channels: int | None = None, num_classes: int | None = None
) -> SpaceConfig:
    """`space` (registered, or a variant of one) for images of `in_channels` channels and
    `num_classes` classes (None: the space's own): the same choices, stem and classifier
    resized; named `BASE-<C>ch-<K>class` after what differs from the registered base, so
    the name alone rebuilds it (`get_space`), in run configs, stores and worker processes."""
    base_name = variant_base(space.name)
    channels = space.in_channels if in_channels is None else in_channels
    classes = space.num_classes if num_classes is None else num_classes
    for field_, value, unit in (("in_channels", channels, "input channel(s)"), ("num_classes", classes, "class(es)")):
        low, high = SPACE_BOUNDS[field_]
        if not low <= value <= high:
            why = "a classifier needs at least 2 classes" if field_ == "num_classes" and value < low else (
                f"{field_} must be {low}..{high}"
            )
            raise UserError(f"space {base_name!r} for {value} {unit}: {why}")
    if (channels, classes) == (space.in_channels, space.num_classes):
        return space  # fits already (registered or not)
    if base_name not in _SPACES:
        raise UserError(
            f"space {space.name!r} is not registered: a data variant derives from a registered "
            f"space ({', '.join(list_spaces())}); register one for this data (`register_space`)"
        )
    base = _SPACES[base_name]()
    if (channels, classes) == (base.in_channels, base.num_classes):
        return base
    name = base_name
    parts = []
    if channels != base.in_channels:
        name += f"-{channels}ch"
        parts.append(f"{channels}-channel images")
    if classes != base.num_classes:
        name += f"-{classes}class"
        parts.append(f"{classes} classes")
    if len(name) > 64:
        raise UserError(f"space {name!r}: a variant's name must be at most 64 characters (register the space)")
    return replace(
        base,
        name=name,
        in_channels=channels,
        num_classes=classes,
        description=f"'{base_name}' for {' and '.join(parts)} (a data variant)",
    )


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


