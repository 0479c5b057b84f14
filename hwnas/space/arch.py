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
The network itself is `hwnas.nets.network` on `hwnas.nets.skeleton` (network version NETWORK_VERSION).
"""


from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.space.config import (
    CELL_OPS,
    NUM_CELL_INPUTS,
    NUM_STAGES,
    SCHEMA,
    STAGE_OPS,
    SpaceConfig,
    get_space,
    list_spaces,
    sha256_hex,
    variant_base,
)
from targets.basics import UserError, atomic_write_text

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
    if variant_base(space.name) in list_spaces() and get_space(space.name) != space:
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

