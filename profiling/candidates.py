"""What profiling measures: candidates handed to it by a source that knows a search space.

Profiling never looks inside an architecture: it sees opaque JSON, a hash that keys every
row, an encoding vector (the predictor's input) and a way to write the ONNX file. That keeps
this layer usable with any search space (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is only needed by the eager (torch) backend
    import torch


@dataclass(frozen=True)
class Candidate:
    """One architecture to measure; plain data so it can travel to Ray workers."""

    arch_hash: str
    arch_json: str
    encoding: list[float] = field(default_factory=list)


@runtime_checkable
class CandidateSource(Protocol):
    """Supplies candidates of one space config; picklable (it holds a name, not a model).

    A finite source (given architectures) also has `size`: indices 0..size-1 are all it
    holds, whatever the seed; `run_profile(..., samples=None)` then measures every one of
    them the store lacks.
    """

    space_name: str
    space_key: str  # sha256 of the canonical space config
    space_config: dict[str, Any]
    encoding_layout: list[str]  # one name per encoding entry

    def sample(self, seed: int, index: int) -> Candidate:
        """The index-th candidate of the stream seeded by `seed` (deterministic)."""
        ...

    def export(self, arch_json: str, path: Path, batch_size: int) -> None:
        """Write the architecture's ONNX file to `path`."""
        ...

    def build_torch(self, arch_json: str) -> torch.nn.Module:
        """Build the torch module (for the eager torch backend)."""
        ...
