"""The trade-off study's settings and its folder (`hwnas.mainjob.tradeoff` runs its parts).

`TradeoffConfig` holds every setting (study.json); `Study` the folder's paths, the check that
it holds this study and not another, and what parts share (the latency term, multiply-add
counts); `MixedCandidates` the profiling stream that reaches the fast end of the space.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hwnas.nets.network import build_network
from hwnas.nets.profile_source import SpaceCandidates
from hwnas.search.latency import LatencyTerm
from hwnas.space import Architecture, SpaceConfig, get_space, sample_fast_biased, sample_nth
from hwnas.train.evaluate import count_macs
from predictor import load_predictor
from targets.basics import UserError, atomic_write_text, strict_json

#: What makes an output folder another study (its sub-runs belong to these).
IDENTITY = ("space", "dataset", "target", "seed")


@dataclass(frozen=True)
class TradeoffConfig:
    """Every setting of the study (written to study.json); defaults: a CPU-sized digits run."""

    out: Path
    space: str = "digits"
    dataset: str = "digits"
    target: str = "ort-cpu"
    cpu_target: str | None = "ort-cpu"  # also measured there (skipped when it is the target)
    seed: int = 0
    predictor: Path | None = None  # a fitted latency predictor of `target`; None: profile and fit
    cpu_predictor: Path | None = None  # optional: predictions on the CPU target too
    profile_samples: int = 300
    profile_protocol: dict[str, Any] | None = None  # overrides of the target's protocol
    profile_include_unstable: bool = False  # a busy host flags most figures; fit on them anyway
    predictor_mlp: dict[str, Any] = field(default_factory=dict)  # MLPConfig overrides
    flops_samples: int = 300
    weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    flops_weights: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # candidates matched at match_weight
    match_weight: float = 1.0
    budget_fracs: tuple[float, ...] = (0.8, 0.6)  # of the weight-0 network's predicted latency
    random_count: int = 8
    random_pool: int = 2000
    search: dict[str, Any] = field(default_factory=dict)  # SearchConfig fields (epochs, subset, ...)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (epochs, subset, ...)
    device: str | None = None  # passed to SearchConfig/TrainConfig only where they have the field
    precision: str | None = None
    workers: int = 2  # searches/trainings at once (child processes)
    threads: int = 1  # torch threads per child
    deadline_s: float | None = None  # stop starting work after this; running children are stopped
    label: str = ""  # what kind of run this is (shown in the results)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out", "predictor", "cpu_predictor"):
            d[k] = None if d[k] is None else str(d[k])
        for k in ("weights", "flops_weights", "budget_fracs"):
            d[k] = list(d[k])
        return d


def now() -> str:
    """The time of day in UTC, as the study's records write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def with_optional_fields(cls: type, kwargs: dict[str, Any], **optional: Any) -> tuple[dict[str, Any], list[str]]:
    """`kwargs` plus each `optional` value (not None) that `cls` has a field for; the names it
    lacks (a device/precision setting before the dataclass has one) are returned for a note."""
    names = {f.name for f in dataclasses.fields(cls)}
    out, missing = dict(kwargs), []
    for k, v in optional.items():
        if v is None:
            continue
        if k in names:
            out[k] = v
        else:
            missing.append(k)
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise UserError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return out, missing


# -- the study folder ----------------------------------------------------------------------------------
class Study:
    """Paths and shared state of one study folder."""

    def __init__(self, cfg: TradeoffConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.space: SpaceConfig = get_space(cfg.space)
        self.notes: list[str] = []
        self._macs: dict[str, int] = {}

    def macs(self, arch: Architecture) -> int:
        """`macs_of`, once per architecture (every part lists the networks again)."""
        if arch.hash not in self._macs:
            self._macs[arch.hash] = macs_of(arch)
        return self._macs[arch.hash]

    # paths
    @property
    def latency_predictor(self) -> Path:
        return Path(self.cfg.predictor) if self.cfg.predictor else self.out / "predictor" / "latency.pt"

    @property
    def flops_predictor(self) -> Path:
        return self.out / "predictor" / "flops.pt"

    def search_dir(self, name: str) -> Path:
        return self.out / "search" / name

    def train_dir(self, arch_hash: str) -> Path:
        return self.out / "train" / arch_hash[:12]

    def arch_file(self, arch_hash: str) -> Path:
        return self.out / "nets" / f"{arch_hash[:12]}.json"

    def check_identity(self) -> None:
        """UserError if the folder holds a study of another space/dataset/target/seed."""
        path = self.out / "study.json"
        new = self.cfg.to_json()
        if path.is_file():
            old = json.loads(path.read_text())
            diff = [k for k in IDENTITY if old.get(k) != new.get(k)]
            if diff:
                raise UserError(
                    f"{self.out} holds a study of another {', '.join(diff)} "
                    f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out"
                )
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, strict_json(new, indent=2) + "\n")

    def term(self) -> LatencyTerm:
        if not self.latency_predictor.is_file():
            raise UserError(f"no latency predictor at {self.latency_predictor}: run --part predictor first")
        return LatencyTerm(load_predictor(self.latency_predictor), self.space)


def macs_of(arch: Architecture) -> int:
    """Analytic multiply-adds of the deploy network at batch 1 (weights do not matter)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return count_macs(build_network(arch), arch.space.input_shape)


# -- sampling that reaches the fast end ------------------------------------------------------------
def mixed_nth(space: SpaceConfig, seed: int, index: int) -> Architecture:
    """Even indices uniform (`sample_nth`), odd ones fast-biased: a pool that spans the space's
    whole latency range."""
    return sample_nth(space, seed, index) if index % 2 == 0 else sample_fast_biased(space, seed, index)


class MixedCandidates(SpaceCandidates):
    """Profiling candidates from `mixed_nth`, so the predictor has seen the fast end the
    latency-aware searches go to."""

    def sample(self, seed: int, index: int) -> Any:
        return self.candidate(mixed_nth(self.space, seed, index))


def run_name(prefix: str, w: float) -> str:
    """A search's folder name in the study: `lat-w0.5`, `flops-w2`."""
    return f"{prefix}-w{w:g}"


def summary_of(run: Path) -> dict[str, Any] | None:
    """A sub-run's summary.json (None while it is unfinished or unreadable)."""
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
