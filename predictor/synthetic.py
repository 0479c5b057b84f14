"""A synthetic profile store for tests, demos and benchmarks of the predictor.

Real stores come from `hwnas profile`; this one is written through the same
`ProfileStore` (one schema, profiling/store.py) so the predictor can be exercised in
seconds without exporting or timing a single network. The latency is a realistic nonlinear
function of a DARTS-like hierarchical encoding: per-op costs that depend on the
stage's width and resolution, a stage depth that multiplies its cell's cost (an
interaction no per-op lookup table can represent), node-level fusion effects, a
smooth cache effect and multiplicative measurement noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from profiling.store import ProfileStore
from targets.fingerprint import canonical_json, fingerprint_key

# The synthetic space's own op names: clearly not hwnas's vocabulary (the predictor knows
# nothing of cells; hwnas.space owns the real op names), but one per cost profile below:
# two pools, an identity, two separable and two dilated convolutions.
OPS: tuple[str, ...] = (
    "syn_pool_max",
    "syn_pool_avg",
    "syn_identity",
    "syn_sepconv3",
    "syn_sepconv5",
    "syn_dilconv3",
    "syn_dilconv5",
)
STAGE_OPS: tuple[str, ...] = ("syn_identity", "syn_pool_max", "syn_pool_avg")
# Relative cost of each op per unit of work (channels x resolution), and a fixed launch cost.
_OP_WORK = np.array([0.35, 0.40, 0.05, 2.2, 3.1, 1.3, 1.8])
_OP_LAUNCH = np.array([0.010, 0.010, 0.002, 0.030, 0.032, 0.018, 0.019])
_STAGE_OP_WORK = np.array([0.05, 0.35, 0.40])
_CONV = np.array([False, False, False, True, True, True, True])


@dataclass(frozen=True)
class SyntheticSpace:
    """A DARTS-like hierarchical space: 3 stages, 2 reductions, searched depth and connections."""

    name: str = "synthetic"
    stages: int = 3
    nodes: int = 4
    depths: tuple[int, ...] = (1, 2, 3, 4)
    channels: tuple[int, ...] = (16, 32, 64)
    resolution: tuple[int, ...] = (32, 16, 8)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def edges(self) -> int:
        return 2 * self.nodes

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stages": self.stages,
            "nodes": self.nodes,
            "depths": list(self.depths),
            "channels": list(self.channels),
            "resolution": list(self.resolution),
            "ops": list(OPS),
            "stage_ops": list(STAGE_OPS),
            **self.extra,
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(canonical_json(self.config()).encode()).hexdigest()

    def layout(self) -> list[str]:
        """One name per encoding entry; a block is the entries sharing the prefix before the last '.'."""
        names: list[str] = []
        for s in range(self.stages):
            names += [f"stage{s}.normal.e{e}.{op}" for e in range(self.edges) for op in OPS]
            names += [f"stage{s}.depth.{d}" for d in self.depths]
            for c in range(max(self.depths)):
                for j in range(2):
                    names += [f"stage{s}.cell{c}.in{j}.{op}" for op in STAGE_OPS]
            if s < self.stages - 1:
                names += [f"reduce{s}.e{e}.{op}" for e in range(self.edges) for op in OPS]
        return names

    def blocks(self) -> list[tuple[int, int]]:
        """Index ranges of the categorical blocks of the encoding, in layout order."""
        out: list[tuple[int, int]] = []
        pos = 0
        for s in range(self.stages):
            for _ in range(self.edges):
                out.append((pos, pos + len(OPS)))
                pos += len(OPS)
            out.append((pos, pos + len(self.depths)))
            pos += len(self.depths)
            for _ in range(2 * max(self.depths)):
                out.append((pos, pos + len(STAGE_OPS)))
                pos += len(STAGE_OPS)
            if s < self.stages - 1:
                for _ in range(self.edges):
                    out.append((pos, pos + len(OPS)))
                    pos += len(OPS)
        return out

    @property
    def dim(self) -> int:
        return len(self.layout())

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A random discrete architecture as its one-hot encoding."""
        x = np.zeros(self.dim, dtype=np.float64)
        for a, b in self.blocks():
            x[a + int(rng.integers(b - a))] = 1.0
        return x

    def latency_ms(self, x: np.ndarray) -> float:
        """Noise-free latency of the (relaxed or discrete) encoding `x`; expectation-free, nonlinear."""
        blocks = self.blocks()
        i = 0
        total = 0.12  # stem + head
        for s in range(self.stages):
            work = self.channels[s] * self.resolution[s] ** 2 / 16384.0
            cell, i = self._cell_cost(x, blocks, i, work)
            depth_p = x[blocks[i][0] : blocks[i][1]]
            i += 1
            conn = []
            for _c in range(max(self.depths)):
                cc = 0.0
                for _j in range(2):
                    a, b = blocks[i]
                    cc += float(x[a:b] @ (_STAGE_OP_WORK * work * 0.3 + 0.003))
                    i += 1
                conn.append(cc)
            stage = 0.0
            for k, d in enumerate(self.depths):
                stage += depth_p[k] * (d * cell + sum(conn[:d]) + 0.01 * d * d)
            total += stage
            if s < self.stages - 1:
                red, i = self._cell_cost(x, blocks, i, work * 0.6)
                total += red
        total *= 0.3
        # Smooth cache effect: large networks pay a little more per unit of work.
        total *= 1.0 + 0.06 * np.tanh((total - 1.6) / 0.5)
        return float(total)

    def _cell_cost(
        self, x: np.ndarray, blocks: list[tuple[int, int]], i: int, work: float
    ) -> tuple[float, int]:
        cost = 0.008
        for _n in range(self.nodes):
            pair = []
            for _e in range(2):
                a, b = blocks[i]
                p = x[a:b]
                cost += float(p @ (_OP_WORK * work * 0.05 + _OP_LAUNCH))
                pair.append(float(p @ _CONV))
                i += 1
            # Two convolutions into one node cannot overlap their memory traffic.
            cost += 0.012 * work * pair[0] * pair[1]
        return cost, i


def synthetic_fingerprint(variant: int = 0) -> dict[str, Any]:
    return {
        "backend": "onnxruntime",
        "runtime": "onnxruntime 1.22.0",
        "cpu": "Synthetic CPU @ 2.0GHz" if variant == 0 else f"Other CPU v{variant}",
        "threads": 1,
        "precision": "fp32",
        "batch_size": 1,
    }


def make_synthetic_store(
    path: str | Path,
    n: int,
    *,
    seed: int = 0,
    target: str = "ort-cpu",
    noise: float = 0.02,
    repeat_fraction: float = 0.2,
    failed: int = 0,
    fingerprint_variant: int = 0,
    space: SyntheticSpace | None = None,
    only_failed: bool = False,
) -> SyntheticSpace:
    """Write `n` profiled architectures of a SyntheticSpace into a store at `path`.

    Called again on an existing store it appends (e.g. another fingerprint), like a resumed profile.
    """
    space = space or SyntheticSpace()
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        x = space.sample(rng)
        enc = [int(v) for v in x]
        arch_json = canonical_json({"space": space.name, "encoding": enc})
        samples.append(
            (hashlib.sha256(arch_json.encode()).hexdigest(), arch_json, enc, space.latency_ms(x))
        )
    write_store(
        path,
        samples,
        space_name=space.name,
        space_key=space.key,
        space_config=space.config(),
        layout=space.layout(),
        seed=seed + 1,
        target=target,
        noise=noise,
        repeat_fraction=repeat_fraction,
        failed=failed,
        fingerprint_variant=fingerprint_variant,
        only_failed=only_failed,
    )
    return space


def write_store(
    path: str | Path,
    samples: Iterable[tuple[str, str, list[float], float]],
    *,
    space_name: str,
    space_key: str,
    space_config: dict[str, Any],
    layout: list[str],
    seed: int = 0,
    target: str = "ort-cpu",
    noise: float = 0.02,
    repeat_fraction: float = 0.2,
    failed: int = 0,
    fingerprint_variant: int = 0,
    only_failed: bool = False,
) -> None:
    """Store (arch_hash, arch_json, encoding, noise-free latency ms) samples as measurements.

    Each gets a profile row with multiplicative log-normal noise `noise`; a share
    `repeat_fraction` gets a second, independent `repeat` row; the first `failed` also get
    a failed row; `only_failed` writes failed rows only.
    """
    rng = np.random.default_rng(seed)
    fp = synthetic_fingerprint(fingerprint_variant)
    fkey = fingerprint_key(fp)
    # Host speed differs per fingerprint, like two machines of one model.
    speed = 1.0 + 0.25 * fingerprint_variant
    rows = []
    for k, (h, arch_json, enc, latency) in enumerate(samples):
        true = latency * speed
        base = dict(arch_hash=h, arch_json=arch_json, encoding=list(enc), fp=fp, fkey=fkey)
        args = (space_name, space_key, target)
        if only_failed:
            rows.append(_row(*args, "profile", base, None, rng, "export failed: boom"))
            continue
        ok = [_row(*args, "profile", base, true * rng.lognormal(0, noise), rng)]
        if rng.random() < repeat_fraction:
            ok.append(_row(*args, "repeat", base, true * rng.lognormal(0, noise), rng))
        if k < failed:  # a failed attempt first, then the retry that succeeded
            rows.append(_row(*args, "profile", base, None, rng, "timing unstable"))
        rows += ok
    with ProfileStore(path) as store:
        store.bind_space(space_name, space_key, space_config, layout)
        store.insert_measurements(rows)


def _row(
    space_name: str,
    space_key: str,
    target: str,
    kind: str,
    base: dict[str, Any],
    latency: float | None,
    rng: np.random.Generator,
    error: str | None = None,
) -> dict[str, Any]:
    ok = latency is not None
    spread = float(rng.uniform(0.02, 0.08)) if ok else None
    return {
        "kind": kind,
        "arch_hash": base["arch_hash"],
        "arch_json": base["arch_json"],
        "encoding": base["encoding"],
        "space_name": space_name,
        "space_key": space_key,
        "target_name": target,
        "fingerprint": base["fp"],
        "fingerprint_key": base["fkey"],
        "status": "ok" if ok else "failed",
        "error": error,
        "latency_ms": latency,
        "statistic": "p10" if ok else None,
        "median_ms": latency * 1.04 if ok else None,
        "p10_ms": latency,
        "min_ms": latency * 0.98 if ok else None,
        "spread": spread,
        "repetitions": 450 if ok else None,
        "rounds": 15 if ok else None,
        "reference_ms": 0.5 if ok else None,
        "host": "synthetic",
        "pid": 0,
        "run_id": "synthetic-run",
        "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:00:01",
    }
