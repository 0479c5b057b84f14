"""What the main job (`hwnas run`) is asked to do: one dataclass, written to config.json.

Every default of the main job lives here (the search's own, such as the latency-aware
weight, in `hwnas.search.config`); `hwnas run` builds its flags from these fields.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from hwnas.search.config import DEFAULT_SCHEDULE, LATENCY_AWARE_WEIGHT, SHORT_SEARCH_ARCH_LR
from targets.basics import UserError, check_range

MAIN_KIND = "main"
#: What makes a main-job run directory another run (its profile store belongs to these).
IDENTITY = ("space", "target", "seed", "dataset")


@dataclass(frozen=True)
class MainJobConfig:
    """Steps 1-4 (profile, re-measure, fit, fresh check) and 5-7 (search x2, train x2,
    export + measure); `deploy=False` stops after step 4."""

    out: Path = Path("runs/demo")
    space: str = "digits"
    target: str = "ort-cpu"
    samples: int = 300
    repeat: int = 40
    fresh: int = 16
    seed: int = 0
    init: Path | None = None  # adapt this predictor of another target instead of fitting
    include_unstable: bool = False  # fit on rows the timing protocol flagged unstable too
    max_samples: int | None = None  # profile at most this many (None: 3 x samples) to reach the fit's floor
    dataset: str | None = None  # None: the space's own (digits), else required for deploy
    search_epochs: int = 8
    search_subset: int | None = 800
    search_mode: str = "full"
    search_resolution: int | None = None  # None: the data's native size
    search_arch_lr: float = SHORT_SEARCH_ARCH_LR
    search_schedule: str = DEFAULT_SCHEDULE  # joint | hdas (hwnas.search.schedule)
    train_epochs: int = 6
    train_subset: int | None = None
    latency_weight: float | None = None  # None: LATENCY_AWARE_WEIGHT (unless a budget)
    latency_budget: float | None = None
    device: str = "auto"  # of the searches and trainings (hwnas.devices); profiling uses the target's
    precision: str | None = None  # bf16 | fp32; None: bf16 on a CUDA device that has it, else fp32
    deploy: bool = True
    force: bool = False
    progress: bool = True

    def check(self) -> None:
        """UserError for an out-of-range number (NaN, inf, negative, zero where it cannot be),
        before anything is profiled or written."""
        check_range("--samples", self.samples, 1)
        check_range("--repeat", self.repeat, 0)
        check_range("--fresh", self.fresh, 0)
        check_range("--seed", self.seed, 0)
        check_range("--search-epochs", self.search_epochs, 1)
        check_range("--search-subset", self.search_subset, 2)
        check_range("--search-resolution", self.search_resolution, 4)
        check_range("--search-arch-lr", self.search_arch_lr, 0, above=True)
        check_range("--train-epochs", self.train_epochs, 1)
        check_range("--train-subset", self.train_subset, 1)
        check_range("--latency-weight", self.latency_weight, 0)
        check_range("--latency-budget", self.latency_budget, 0, above=True)

    def resolved(self) -> MainJobConfig:
        """The dataset filled in (digits for the digits space); UserError when one is needed."""
        self.check()
        dataset = self.dataset
        if dataset is None and self.space == "digits":
            dataset = "digits"
        if dataset is None and self.deploy:
            raise UserError(
                f"space '{self.space}' has no default dataset: pass --dataset (cifar10:PATH, "
                "imagefolder:PATH, npz:PATH) for the search and training, or --no-deploy"
            )
        if self.latency_weight is not None and self.latency_budget is not None:
            raise UserError("--latency-weight and --latency-budget both given: choose one")
        return replace(self, dataset=dataset)

    @property
    def latency_setting(self) -> dict[str, Any]:
        """The latency-aware search's keyword arguments for `SearchConfig`."""
        if self.latency_budget is not None:
            return {"latency_weight": None, "latency_budget_ms": float(self.latency_budget)}
        weight = LATENCY_AWARE_WEIGHT if self.latency_weight is None else self.latency_weight
        return {"latency_weight": float(weight)}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(out=str(self.out), init=None if self.init is None else str(self.init))
        return {"kind": MAIN_KIND, **d}


DEFAULTS = MainJobConfig()


def rerun_command(run: Path, stored: dict[str, Any]) -> str:
    """The `hwnas run` line of a run's config.json (settings at their default left out): what
    continues it, where `hwnas run --out RUN` alone would ask for other settings."""
    base = DEFAULTS.resolved()
    words = ["hwnas", "run", "--out", str(run)]
    for f in fields(MainJobConfig):
        value = stored.get(f.name)
        if f.name in ("out", "force", "progress"):
            continue
        if f.name == "deploy":
            words += ["--no-deploy"] if value is False else []
        elif value is not None and value != getattr(base, f.name):
            words += [f"--{f.name.replace('_', '-')}", str(value)]
    return shlex.join(words)
