"""Train runs on disk: what a run trains (an architecture file or a search/train run's), its
run directory (`hwnas.rundir`'s protocol), its checkpoint, and the trained network it leaves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hwnas import rundir
from hwnas.data.datasets import parse_spec
from hwnas.nets.network import Network, build_network
from hwnas.rundir import describe_kind, run_kind
from hwnas.rundir import read_json as _read_json
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
    dataset: str | None = None  # the data the run searched or trained on (None: a bare architecture)


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
        return ArchSource(load_architecture(arch_path), arch_path, kind, path, predicted, _run_dataset(path))
    if not path.exists():
        raise UserError(f"{path}: no such file or directory; give an architecture JSON or a run directory")
    return ArchSource(load_architecture(path), path, "architecture", None, None)


def _run_dataset(run: Path) -> str | None:
    """The dataset spec a search or train run recorded in its config.json (None: none there)."""
    if not (run / CONFIG).is_file():
        return None
    data = _read_json(run / CONFIG)
    if not isinstance(data, dict):
        return None
    for section in ("search", "config"):  # a search run's settings, a train run's recipe
        inner = data.get(section)
        if isinstance(inner, dict) and isinstance(inner.get("dataset"), str):
            return str(inner["dataset"])
    return None


def _same_dataset(a: str, b: str) -> bool:
    """Two specs of the same data (a path relative to here and its absolute form alike)."""
    try:
        (ka, pa), (kb, pb) = parse_spec(a), parse_spec(b)
    except UserError:
        return a == b
    if pa is None or pb is None:
        return (ka, pa) == (kb, pb)
    return ka == kb and pa.resolve() == pb.resolve()


def resolve_dataset(source: ArchSource, asked: str | None) -> str:
    """The data a train run uses: a run's own (searched or trained on it; other data asked
    for is refused: the run's data is what the user relies on), else the one asked for, else
    the space's default (digits for the digits space only).

    A run that recorded a relative path, trained from another directory, takes `asked` when
    it names a file or folder of the same name and kind (the same data, seen from here)."""
    if source.dataset is None:
        if asked is not None:
            return asked
        if source.arch.space.name == "digits":
            return "digits"
        raise UserError(
            f"{source.path}: an architecture of space '{source.arch.space.name}' has no default dataset; "
            "pass --dataset (cifar10:PATH, imagefolder:PATH or npz:PATH)"
        )
    kind, path = parse_spec(source.dataset)
    lost = path is not None and not path.is_absolute() and not path.exists()
    what = f"{source.run_dir} is a {source.kind} run on {source.dataset}"
    if asked is None:
        if lost:
            raise UserError(
                f"{what}, a path relative to where it ran and not found from here; run from there, or "
                f"pass --dataset {kind}:PATH naming the same data from here"
            )
        return source.dataset
    if _same_dataset(asked, source.dataset):
        return source.dataset
    if lost and path is not None:
        asked_kind, asked_path = parse_spec(asked)
        if asked_kind == kind and asked_path is not None and asked_path.name == path.name:
            return asked
    raise UserError(
        f"--dataset {asked}: {what}; drop --dataset to train on that data, or train its "
        f"architecture on other data with `hwnas train {source.path} --dataset {asked} ...`"
    )


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
        raise UserError(f"{run}: holds {describe_kind(kind)}, not a train run; give the --out of `hwnas train`")
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
