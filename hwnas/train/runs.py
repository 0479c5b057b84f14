"""Train runs on disk: what a run trains (an architecture file or a search/train run's), its
run directory (`hwnas.rundir`'s protocol), its checkpoint, and the trained network it leaves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwnas import rundir
from hwnas.nets.network import Network, build_network
from hwnas.rundir import read_json as _read_json
from hwnas.rundir import run_kind
from hwnas.space import Architecture, load_architecture
from hwnas.train.recipe import TrainConfig
from targets.basics import UserError, load_torch_file

RUN_KIND = "train"
SCHEMA = "hwnas.train/1"
CONFIG, CHECKPOINT, LOG = rundir.CONFIG, rundir.CHECKPOINT, rundir.LOG
SUMMARY, ARCHITECTURE = rundir.SUMMARY, rundir.ARCHITECTURE
OWN_FILES = (CONFIG, CHECKPOINT, LOG, SUMMARY, ARCHITECTURE)
LOG_FIELDS = ("epoch", "lr", "drop_path", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")


# -- sources: an architecture file or a run directory holding one ------------------------------
@dataclass(frozen=True)
class ArchSource:
    arch: Architecture
    path: Path  # the architecture file read
    kind: str  # "architecture" | "search" | "train"
    run_dir: Path | None
    predicted_latency_ms: float | None


def resolve_source(raw: str | Path) -> ArchSource:
    """An architecture JSON, or a search/train run directory (its architecture.json)."""
    path = Path(raw)
    if path.is_dir():
        arch_path = path / ARCHITECTURE
        if not arch_path.is_file():
            raise UserError(
                f"{path}: a directory without {ARCHITECTURE}; give an architecture JSON, a search "
                "run (after it finished) or a train run"
            )
        kind = run_kind(path) or "search"
        predicted = None
        summary = path / SUMMARY
        if summary.is_file():
            data = _read_json(summary)
            if isinstance(data, dict) and isinstance(data.get("predicted_latency_ms"), int | float):
                predicted = float(data["predicted_latency_ms"])
        return ArchSource(load_architecture(arch_path), arch_path, kind, path, predicted)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; give an architecture JSON or a run directory")
    return ArchSource(load_architecture(path), path, "architecture", None, None)


# -- the run directory ----------------------------------------------------------------------------
def _config_record(source: ArchSource, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "kind": RUN_KIND,
        "schema": SCHEMA,
        "arch_hash": source.arch.hash,
        "space": source.arch.space.name,
        "source": str(source.path),
        "source_kind": source.kind,
        "predicted_latency_ms": source.predicted_latency_ms,
        "config": asdict(cfg),
    }


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of what differs between two train configs (source path aside: same arch hash
    from another path is the same run)."""
    diffs = []
    if old.get("arch_hash") != new["arch_hash"]:
        diffs.append("architecture")
    old_cfg = old.get("config") or {}
    for k, v in new["config"].items():
        if k not in ("device", "precision") and old_cfg.get(k) != v:
            diffs.append(k)
    # where it ran: the resolved device type and precision (any GPU of the type resumes it)
    was = (old.get("device", "cpu"), old.get("precision", "fp32"))
    now = (new.get("device", "cpu"), new.get("precision", "fp32"))
    if was != now:
        diffs.append(
            f"device: the run trained on {was[0]} ({was[1]}), this one would on {now[0]} ({now[1]}); "
            f"resume it with --device {was[0]} --precision {was[1]}"
        )
    return diffs


def prepare_run_dir(out: Path, record: dict[str, Any], *, resume: bool, force: bool) -> bool:
    """Check `out` may take this run; return True when a checkpoint should be resumed."""
    state = rundir.prepare(
        out, RUN_KIND, lambda old: _same_run(old, record), resume=resume, force=force
    )
    return state == "resume"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `train` (weights_only=True); a damaged file is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint; the run never finished an epoch (train it again)")
    ckpt = load_torch_file(path, "train checkpoint", "restore a copy, or train again (--force)")
    if not isinstance(ckpt, dict) or ckpt.get("schema") != SCHEMA or "model" not in ckpt:
        raise UserError(f"{path}: not a train checkpoint of this hwnas version; train again (--force)")
    return ckpt


def load_trained(run: Path) -> tuple[Network, Architecture, dict[str, Any]]:
    """The trained network of a finished train run (eval mode), its architecture and summary."""
    kind = run_kind(run)
    if kind != RUN_KIND:
        what = "no hwnas run" if kind is None else f"a '{kind}' run"
        raise UserError(f"{run}: holds {what}, not a train run; give the --out of `hwnas train`")
    arch = load_architecture(run / ARCHITECTURE)
    ckpt = load_checkpoint(run / CHECKPOINT)
    if ckpt.get("arch_hash") != arch.hash:
        raise UserError(f"{run / CHECKPOINT}: belongs to another architecture than {run / ARCHITECTURE}")
    net = build_network(arch)
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise UserError(
            f"{run / CHECKPOINT}: its weights do not fit the network of {run / ARCHITECTURE} "
            "(made by another network version?); train again"
        ) from None
    summary = _read_json(run / SUMMARY) if (run / SUMMARY).is_file() else {}
    return net.eval(), arch, summary
