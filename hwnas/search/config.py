"""What decides a search's result: `SearchConfig` (config.json's `search` section) and the
defaults that the search command and the main job share (one place for each).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from hwnas.space import PARAM_FREE_CELL_OPS, SpaceConfig, variant_base
from targets.basics import UserError, check_range

MODES = ("full", "sampled")
#: How the discrete architecture is read from the logits (hwnas.search.derive): "argmax" =
#: DARTS's argmax and the collapse guard (default: the priced rule lowered the prediction,
#: not the measured latency, docs/benchmarks.md issue 18); "priced" = then the changes worth
#: their latency at the search's price.
DERIVE_RULES = ("argmax", "priced")
#: What a config.json written before a setting existed meant by leaving it out.
LEGACY_SEARCH_DEFAULTS: dict[str, Any] = {"schedule": "joint", "derive": "argmax"}


def stored_search(section: dict[str, Any]) -> dict[str, Any]:
    """A run's stored `search` section with the settings older hwnas did not write filled in
    as they were then, so it compares equal to `SearchConfig.to_json()` of the same search."""
    return {**LEGACY_SEARCH_DEFAULTS, **section}
#: The usual proxy width when --search-channels is not given (DARTS/H-DAS search CIFAR at C=16).
PROXY_CHANNELS = {"cifar": 16}
SCHEDULES = ("hdas", "joint")
#: The default: measured (docs/benchmarks.md "Schedules"), schedule.py holds the phases.
DEFAULT_SCHEDULE = "joint"
#: H-DAS's price of a cell in its distribution search (0.4 x expected cells).
HDAS_DEPTH_PENALTY = 0.4


def default_depth_penalty(schedule: str) -> float:
    """`--depth-penalty` when not given: H-DAS's 0.4 in its schedule, 0 in `joint`."""
    return HDAS_DEPTH_PENALTY if schedule == "hdas" else 0.0


def check_schedule(name: str, epochs: int) -> None:
    if name not in SCHEDULES:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    if name == "hdas" and epochs < 2:
        raise UserError(f"--schedule hdas runs two phases and needs --epochs >= 2 (their total), got {epochs}")


#: Parameter-free cell ops (the collapse guard caps them per cell; DARTS collapses onto them).
PARAM_FREE_OPS = frozenset(PARAM_FREE_CELL_OPS)
DEFAULT_MAX_PARAM_FREE = 2
#: The latency-aware search's weight when none is given (the main job's second search):
#: latency counts as much as the cross-entropy at the space's centre (relative latency, so
#: it means the same on any target). `hwnas search` alone searches without latency (0).
LATENCY_AWARE_WEIGHT = 1.0
#: Short CPU searches move the logits too little at DARTS's 3e-4 (measured: ~0.01 in 6
#: epochs); the main job's searches use 10x.
SHORT_SEARCH_ARCH_LR = 3e-3


def search_channels(cfg: SearchConfig, space: SpaceConfig) -> int:
    """The supernet's width C: --search-channels, else the space's usual proxy (a data
    variant's: its base space's), else its own."""
    return cfg.search_channels or PROXY_CHANNELS.get(variant_base(space.name), space.channels)


def resolution_note(cfg: SearchConfig, space: SpaceConfig) -> str | None:
    """A line for a search left at the default size of a space that upsamples its images:
    digits then searches at 32x32, several times slower a step than at its 8x8 (benchmarks)."""
    if cfg.search_resolution is not None or space.upsample <= 1:
        return None
    r, n = search_resolution(cfg, space), space.input_size
    return (
        f"note: searching at {r}x{r}, the deployed network's size ({n}x{n} images upsampled "
        f"{space.upsample}x); --search-resolution {n} is several times cheaper a step (`hwnas run` uses it)"
    )


def search_resolution(cfg: SearchConfig, space: SpaceConfig) -> int:
    """The supernet's input size: --search-resolution, else the deploy network's (input x upsample)."""
    return cfg.search_resolution or space.input_size * space.upsample


@dataclass
class SearchConfig:
    """Everything that decides a search's result (config.json's `search` section)."""

    space: str
    dataset: str = "digits"
    predictor: str | None = None  # a predictor file; None: no latency term (tests, ablations)
    latency_weight: float | None = None
    latency_budget_ms: float | None = None
    mode: str = "full"  # measured: sampled paths do not train the supernet in CPU-sized budgets
    samples: int = 1  # K sub-graphs per step in sampled mode (1 = GDAS's single path)
    search_channels: int | None = None  # proxy width C of the supernet (None: the space's)
    search_resolution: int | None = None  # proxy input size of the supernet (None: the deploy network's)
    epochs: int = 10
    seed: int = 0
    subset: int | None = None
    batch_size: int = 32
    second_order: bool = False
    depth_penalty: float | None = None  # x expected cells, summed over stages (None: 0.4 in hdas, 0 in joint)
    max_param_free: int | None = DEFAULT_MAX_PARAM_FREE  # collapse guard (None: off)
    target: str | None = None  # if set, the predictor must be fitted for this target
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    tau_max: float = 10.0  # Gumbel temperature, linear from tau_max to tau_min (GDAS)
    tau_min: float = 0.1
    sample_inputs: bool = True  # sampled mode: draw 2 inputs per node (False: GDAS, every input, ops drawn)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (hwnas.devices); config.json records the resolved type
    precision: str | None = None  # bf16 | fp32; None: bf16 on a CUDA device that has it, else fp32
    schedule: str = DEFAULT_SCHEDULE  # "hdas": H-DAS's phases; "joint": everything at once (schedule.py)
    derive: str = "argmax"  # DERIVE_RULES

    @property
    def depth_weight(self) -> float:
        """The price of a cell: --depth-penalty, else the schedule's default."""
        return default_depth_penalty(self.schedule) if self.depth_penalty is None else float(self.depth_penalty)

    def check(self) -> None:
        """UserError for contradictory or out-of-range settings (before anything is read)."""
        if self.latency_weight is not None and self.latency_budget_ms is not None:
            raise UserError(
                "--latency-weight and --latency-budget both given: choose one (a weight prices "
                "latency; a budget is a hard target the weight adapts to)"
            )
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.derive not in DERIVE_RULES:
            raise UserError(f"--derive must be one of {', '.join(DERIVE_RULES)}, got {self.derive!r}")
        if self.derive == "priced" and self.latency_weight is None and self.latency_budget_ms is None:
            raise UserError(
                "--derive priced prices latency at the search's own rate: give --latency-weight W or "
                "--latency-budget MS (with --predictor), or leave --derive at argmax"
            )
        for name, low in (("epochs", 1), ("batch_size", 2), ("samples", 1)):
            if int(getattr(self, name)) < low:
                raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(self, name)}")
        if self.search_channels is not None and (self.search_channels < 2 or self.search_channels % 2):
            raise UserError(f"--search-channels must be an even number >= 2, got {self.search_channels}")
        if self.search_resolution is not None and self.search_resolution < 4:
            raise UserError(
                f"--search-resolution must be >= 4 (two reductions halve it twice), got {self.search_resolution}"
            )
        check_schedule(self.schedule, int(self.epochs))
        if not math.isfinite(self.depth_weight) or self.depth_weight < 0:
            raise UserError(f"--depth-penalty must be a finite number >= 0, got {self.depth_penalty}")
        if self.max_param_free is not None and self.max_param_free < 0:
            raise UserError(f"--max-param-free must be >= 0, got {self.max_param_free}")
        check_range("--latency-weight", self.latency_weight, 0)
        check_range("--latency-budget", self.latency_budget_ms, 0, above=True)
        check_range("--arch-lr", self.a_lr, 0, above=True)
        check_range("--subset", self.subset, 2)  # split 50/50 between weights and architecture
        check_range("--seed", self.seed, 0)
        # settings only Python sets: the same rule, named by their field
        for name in ("w_lr", "tau_min"):
            check_range(f"SearchConfig.{name}", getattr(self, name), 0, above=True)
        for name in ("w_lr_min", "w_weight_decay", "w_grad_clip", "a_weight_decay"):
            check_range(f"SearchConfig.{name}", getattr(self, name), 0)
        check_range("SearchConfig.w_momentum", self.w_momentum, 0, 1, below=True)
        check_range("SearchConfig.tau_max", self.tau_max, self.tau_min)
        for beta in self.a_betas:
            check_range("SearchConfig.a_betas", beta, 0, 1, below=True)
        if (self.latency_weight is not None or self.latency_budget_ms is not None) and self.predictor is None:
            raise UserError("a latency weight or budget needs --predictor FILE (a fitted latency predictor)")

    def check_space(self, space: SpaceConfig) -> None:
        """UserError for settings the space bounds: a cell keeps two input edges per node, so
        the collapse guard cannot keep more parameter-free edges than 2 x nodes."""
        edges = 2 * space.nodes
        if self.max_param_free is not None and self.max_param_free > edges:
            raise UserError(
                f"--max-param-free {self.max_param_free}: a cell of space '{space.name}' has {edges} "
                f"edges ({space.nodes} nodes x 2 inputs); give 0..{edges}, or -1 for no guard"
            )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["a_betas"] = list(self.a_betas)
        d["depth_penalty"] = self.depth_weight  # resolved: what the run used
        return d
