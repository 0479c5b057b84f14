"""The measurement protocol: how many rounds and runs, which statistic, when a figure is
trusted. Its own module (not timing.py) so that a target spec can validate its [protocol]
table without importing the timing code, which needs specs and backends: no import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from targets.basics import UserError

if TYPE_CHECKING:
    from targets.spec import TargetSpec

# Protocol fields that change the figure a measurement reports (how many samples, which
# statistic, what runs alongside); `max_spread` and `drift_tolerance` only set the
# stable flag, so two protocols differing only there give comparable figures.
FIGURE_FIELDS: tuple[str, ...] = (
    "warmup",
    "min_rounds",
    "rounds",
    "runs_per_round",
    "round_warmup",
    "statistic",
    "tolerance",
    "reference",
    "sessions",
)
# Figure fields added later: in a protocol's identity only when set away from their
# default, so every stored row keyed before they existed keeps its key.
LATER_FIGURE_FIELDS: tuple[str, ...] = ("settle", "settle_max")
STAT_RE = re.compile(r"^p(\d+(?:\.\d+)?)$")


def _valid_statistic(stat: str) -> bool:
    if stat in ("min", "median", "mean"):
        return True
    match = STAT_RE.match(stat)
    return bool(match) and 0.0 <= float(match.group(1)) <= 100.0


@dataclass(frozen=True)
class Protocol:
    """How to time. Defaults tuned on a shared, noisy 2-core host for ~1-3 ms CPU networks
    in groups of ~8 (see docs/targets.md): ~0.1 s per network on a quiet host, more
    rounds (up to `rounds`) only while the host is too noisy for the halves to agree."""

    warmup: int = 5  # untimed runs per runner before the first round (arenas, caches)
    min_rounds: int = 6  # interleaved rounds always done (capped at `rounds`)
    rounds: int = 20  # at most this many rounds (stop early once every runner is stable)
    runs_per_round: int = 8  # timed runs per runner per round
    round_warmup: int = 1  # untimed run(s) at the start of each turn (caches after a switch)
    statistic: str = "min"  # "pNN", "min", "median" or "mean" of the per-run times
    tolerance: float = 0.02  # even-round vs odd-round statistic must agree within this
    reference: bool = True  # time the fixed reference network in the same rounds
    max_spread: float | None = None  # also unstable if (p90 - p10) / median exceeds this
    drift_tolerance: float | None = 0.05  # unstable if the reference is this much above its recent baseline
    sessions: int = 1  # compiled instances per model, a different one each turn (odd: 1, 3, 5)
    # Warm up until settled (GPU targets): after `warmup` runs, time warm-up windows until
    # two in a row agree within `settle` (a fraction), at most `settle_max` windows. A GPU
    # needs a while to reach its clocks and to fill its caches and allocator pools; a
    # fixed count is either wasted time or too short. None: the fixed `warmup` only.
    settle: float | None = None
    settle_max: int = 30
    # Drift rule: the reference may also be up to `drift_spread` times its own spread in
    # this measurement ((p90 - p10) / median) above its baseline before a group is called
    # drifted; None: `drift_tolerance` alone (see check_reference_drift).
    drift_spread: float | None = None

    def __post_init__(self) -> None:
        self._validate("protocol")

    def _validate(self, where: str) -> None:
        for name in ("warmup", "round_warmup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"{where}: key '{name}' must be an integer >= 0, got {value!r}")
        for name in ("min_rounds", "rounds", "runs_per_round", "sessions", "settle_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{where}: key '{name}' must be an integer >= 1, got {value!r}")
        if not isinstance(self.statistic, str) or not _valid_statistic(self.statistic):
            raise UserError(
                f"{where}: key 'statistic' is {self.statistic!r}; use \"min\", a percentile "
                '"pNN" (0 <= NN <= 100, e.g. "p10"), "median" or "mean"'
            )
        if not isinstance(self.reference, bool):
            raise UserError(f"{where}: key 'reference' must be true or false")
        for name in ("tolerance", "max_spread", "drift_tolerance", "settle", "drift_spread"):
            value = getattr(self, name)
            if name != "tolerance" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"{where}: key '{name}' must be a number > 0, got {value!r}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any], where: str = "protocol") -> Protocol:
        """Defaults with `overrides` (a target's [protocol] table) applied and validated."""
        known = [f.name for f in fields(cls)]
        for key in overrides:
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(
                    f"{where}: unknown key 'protocol.{key}'{hint}; allowed: {', '.join(known)}"
                )
        try:
            proto = cls.__new__(cls)
            for f in fields(cls):
                object.__setattr__(proto, f.name, overrides.get(f.name, f.default))
            proto._validate(where)
        except UserError as exc:
            raise UserError(str(exc).replace("key '", "key 'protocol.", 1)) from None
        return proto

    @classmethod
    def for_target(cls, spec: TargetSpec) -> Protocol:
        """The protocol a target asks for (its [protocol] overrides on the defaults)."""
        return cls.from_overrides(spec.protocol, where=spec.source or spec.name)

    def with_(self, **changes: Any) -> Protocol:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change a figure: what a stored row must be keyed by, too."""
        out = {name: getattr(self, name) for name in FIGURE_FIELDS}
        if self.settle is not None:
            out.update({name: getattr(self, name) for name in LATER_FIGURE_FIELDS})
        return out
