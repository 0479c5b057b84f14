"""Feature layout: a fixed linear map from the encoding to the model's input features.

Why: an encoding holds one entry per (position, choice), e.g.
`stage0.cell.node2.in3.sep_conv_3x3`, but latency mostly depends on *how many* of each
op a part of the network runs, and the same op costs about the same wherever it sits in
that part. Entries whose names differ only in index tokens (`node2`, `in3`: letters then
digits, between the first and the last dotted token) are summed into one count feature
(`stage0.cell.node*.in*.sep_conv_3x3`); entries in no such group (e.g. `stage0.depth.2`)
are kept as they are. With ~1,000 samples this turns ~570 sparse entries into ~50 dense
features an MLP can learn products of (depth x op counts) from.

Nothing here knows a search space: it reads only the layout's names, and a layout without
indexed names maps to itself. The map is a matrix, so the features of a relaxed encoding
are expected counts and stay differentiable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from targets.basics import UserError

_INDEX = re.compile(r"^([A-Za-z_]+)\d+$")
FEATURE_KINDS = ("counts", "raw")


@dataclass(frozen=True)
class FeatureLayout:
    """Named features, each the sum of some encoding entries (a 0/1 matrix [D, F])."""

    kind: str
    encoding_dim: int
    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]  # encoding indices summed into each feature

    @property
    def dim(self) -> int:
        return len(self.names)

    def matrix(self) -> np.ndarray:
        m = np.zeros((self.encoding_dim, self.dim), dtype=np.float32)
        for j, idx in enumerate(self.members):
            m[list(idx), j] = 1.0
        return m

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Features of encodings X [N, D] (NumPy, for the sklearn baselines)."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[-1] != self.encoding_dim:
            raise UserError(
                f"encoding has {X.shape[-1]} entries, the feature layout expects {self.encoding_dim}"
            )
        return X @ self.matrix().astype(np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "encoding_dim": self.encoding_dim,
            "names": list(self.names),
            "members": [list(m) for m in self.members],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FeatureLayout:
        try:
            dim = int(d["encoding_dim"])
            names = tuple(str(n) for n in d["names"])
            members = tuple(tuple(int(i) for i in m) for m in d["members"])
            kind = str(d["kind"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"predictor file: malformed feature layout ({exc})") from None
        if len(names) != len(members) or any(not (0 <= i < dim) for m in members for i in m):
            raise UserError("predictor file: inconsistent feature layout")
        return cls(kind=kind, encoding_dim=dim, names=names, members=members)


def _group_key(name: str) -> str | None:
    tokens = name.split(".")
    if len(tokens) < 3:
        return None
    mid = [_INDEX.sub(r"\1*", t) for t in tokens[1:-1]]
    if mid == tokens[1:-1]:
        return None
    return ".".join([tokens[0], *mid, tokens[-1]])


def build_feature_layout(encoding_layout: Sequence[str], kind: str = "counts") -> FeatureLayout:
    """`counts`: sum entries that differ only in index tokens; `raw`: the encoding itself."""
    names = list(encoding_layout)
    if kind not in FEATURE_KINDS:
        raise UserError(f"unknown feature kind '{kind}'; choose from {', '.join(FEATURE_KINDS)}")
    if kind == "raw":
        return FeatureLayout(
            "raw", len(names), tuple(names), tuple((i,) for i in range(len(names)))
        )
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        key = _group_key(n)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out_names: list[str] = []
    members: list[tuple[int, ...]] = []
    grouped: set[int] = set()
    for key, idx in groups.items():
        if len(idx) > 1:
            out_names.append(key)
            members.append(tuple(idx))
            grouped.update(idx)
    for i, n in enumerate(names):
        if i not in grouped:
            out_names.append(n)
            members.append((i,))
    return FeatureLayout("counts", len(names), tuple(out_names), tuple(members))
