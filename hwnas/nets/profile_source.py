"""The search space as a source of profiling candidates (see profiling.candidates).

profiling knows nothing of cells and stages; this adapter hands it architectures as opaque
JSON with their hash and encoding, and writes their ONNX files on request. It holds only the
space name, so it pickles cheaply to Ray workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hwnas.nets.network import build_network
from hwnas.nets.onnx_export import export_onnx
from hwnas.space import Architecture, get_space, sample_nth
from hwnas.space.encoding import encode, encoding_layout
from profiling.candidates import Candidate


class SpaceCandidates:
    """Candidates sampled uniformly from a named space; index i of seed s is always the same."""

    def __init__(self, space_name: str):
        self.space_name = space_name
        self.space = get_space(space_name)

    def __getstate__(self) -> dict[str, Any]:
        return {"space_name": self.space_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["space_name"])  # type: ignore[misc]

    @property
    def space_key(self) -> str:
        return self.space.key

    @property
    def space_config(self) -> dict[str, Any]:
        return self.space.to_dict()

    @property
    def encoding_layout(self) -> list[str]:
        return encoding_layout(self.space)

    def candidate(self, arch: Architecture) -> Candidate:
        return Candidate(
            arch_hash=arch.hash, arch_json=arch.to_json(indent=None), encoding=encode(arch).tolist()
        )

    def sample(self, seed: int, index: int) -> Candidate:
        return self.candidate(sample_nth(self.space, seed, index))

    def _arch(self, arch_json: str) -> Architecture:
        return Architecture.from_json(arch_json, where="stored architecture")

    def export(self, arch_json: str, path: Path, batch_size: int) -> None:
        export_onnx(self._arch(arch_json), path, batch_size=batch_size)

    def build_torch(self, arch_json: str) -> nn.Module:
        return build_network(self._arch(arch_json)).eval()


class GivenCandidates(SpaceCandidates):
    """Exactly the given architectures of a space (index i: the i-th, whatever the seed):
    profile where a search went, e.g. its derived architectures, before fitting again."""

    def __init__(self, space_name: str, archs: list[Architecture]):
        super().__init__(space_name)
        for a in archs:
            if a.space.key != self.space.key:
                raise ValueError(f"architecture {a.hash[:12]} is of space '{a.space.name}', not '{space_name}'")
        self.archs = list(archs)

    def __getstate__(self) -> dict[str, Any]:
        return {"space_name": self.space_name, "archs": [a.to_json(indent=None) for a in self.archs]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        archs = [Architecture.from_json(j, where="given architecture") for j in state["archs"]]
        self.__init__(state["space_name"], archs)  # type: ignore[misc]

    @property
    def size(self) -> int:
        return len(self.archs)

    def sample(self, seed: int, index: int) -> Candidate:
        return self.candidate(self.archs[index])
