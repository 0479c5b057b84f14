"""`run_search`: a search's run directory around the in-memory `Searcher`.

Resolves the config (space, predictor, latency penalty, data) before anything is written,
checks the run directory (`hwnas.rundir`), runs the epochs with a checkpoint after each,
derives the architecture (collapse guard, budget repair) and writes `architecture.json` and
`summary.json`. Under torchrun every rank calls it; rank 0 writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwnas import devices, rundir
from hwnas.data.datasets import load_dataset
from hwnas.search import dist as D
from hwnas.search import schedule as S
from hwnas.search.config import (
    SearchConfig,
    resolution_note,
    search_channels,
    search_resolution,
    stored_search,
)
from hwnas.search.derive import param_free_share
from hwnas.search.latency import BudgetLatency, LatencyTerm, WeightedLatency
from hwnas.search.predictor_check import check_predictor_for_search, head_note
from hwnas.search.repair import PRICED_PREFIX, repair_to_budget
from hwnas.search.step import CHECKPOINT_FORMAT, Searcher
from hwnas.space import Architecture, SpaceConfig, get_space
from hwnas.space.encoding import ArchParameters
from predictor import load_predictor
from targets.basics import (
    UserError,
    atomic_write_bytes,
    atomic_write_text,
    load_torch_file,
    strict_json,
)
from targets.progress import Progress

CONFIG_FILE = rundir.CONFIG
LOG_FILE = rundir.LOG
CHECKPOINT_FILE = rundir.CHECKPOINT
ARCH_FILE = rundir.ARCHITECTURE
SUMMARY_FILE = rundir.SUMMARY
#: `--schedule hdas`: the cells phase 1 found (the genotypes phase 2 holds), with the guard applied.
CELLS_FILE = "cells_architecture.json"


@dataclass
class SearchResult:
    """What `run_search` returns (also written to the run directory)."""

    architecture: Architecture
    summary: dict[str, Any]
    log: list[dict[str, Any]]
    run_dir: Path | None
    alpha: ArchParameters = field(repr=False)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the run directory ---------------------------------------------------------------------------
def _placement(cfg: SearchConfig) -> devices.Placement:
    """The search's device and precision; under torchrun `auto`/`cuda` is this rank's GPU."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    return devices.resolve(cfg.device, cfg.precision, local_rank=local)


def _resolve(
    cfg: SearchConfig, device: torch.device | None = None
) -> tuple[SpaceConfig, Any, Any, Any, dict[str, Any]]:
    """Space, latency term and penalty, data, and the resolved config; UserError on bad input.
    Reads only (the run directory is not touched). The predictor is tiny: it runs on the
    search's `device`, so the latency loss needs no host copy."""

    cfg.check()
    named = get_space(cfg.space)
    cfg.check_space(named)  # before the data is read: a bad setting costs nothing
    # the space takes the data's channels and classes (a data variant, README 'Your own data'):
    # config.json's resolved space and architecture.json record it, so train and export rebuild it
    data = load_dataset(cfg.dataset, named, subset=cfg.subset, seed=cfg.seed, fit_space=True)
    assert data.space is not None
    space = data.space
    term = penalty = None
    resolved: dict[str, Any] = {
        "space": space.to_dict(),
        "search_channels": search_channels(cfg, space),
        "search_resolution": search_resolution(cfg, space),
        "schedule": S.describe(cfg.schedule, cfg.epochs, space),
    }
    if cfg.predictor is not None:
        path = Path(cfg.predictor)
        if not path.is_file():
            raise UserError(f"--predictor {path}: no such file; fit one with `hwnas predictor fit`")
        pred = load_predictor(path, device=device or "cpu")
        deploy = check_predictor_for_search(pred, space)
        head = head_note(pred, space)
        if head is not None:
            resolved["predictor_note"] = head
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"search: note: {head}", file=sys.stderr)
        target = str(pred.header.get("target_name", "?"))
        if cfg.target is not None and cfg.target != target:
            raise UserError(
                f"--predictor {path} was fitted for target '{target}', not '{cfg.target}'; "
                f"fit a predictor on profiles of '{cfg.target}' or drop --target"
            )
        term = LatencyTerm(pred, deploy)
        if cfg.latency_budget_ms is not None:
            penalty = BudgetLatency(term, cfg.latency_budget_ms, seed=cfg.seed)
        else:
            penalty = WeightedLatency(term, cfg.latency_weight or 0.0)
        resolved.update(
            predictor_sha256=_file_sha256(path), target=target, latency=penalty.describe(),
            deploy_space=deploy.to_dict(),
        )
    resolved["data"] = data.describe()
    return space, term, penalty, data, resolved


def _config_doc(cfg: SearchConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    search = cfg.to_json()
    if search["predictor"] is not None:
        search["predictor"] = str(Path(search["predictor"]).resolve())
    return {"kind": "search", "schema": "hwnas.search-config/1", "search": search, "resolved": resolved}


def _differs(doc: dict[str, Any]) -> Any:
    """What differs between a run's config.json and this search's (rundir.prepare's test)."""

    def differs(old: dict[str, Any]) -> list[str]:
        old_search = old.get("search")
        if not isinstance(old_search, dict):
            return ["config.json has no 'search' section (damaged)"]
        old_search = stored_search(old_search)  # settings older runs did not write
        placed = ("device", "precision")  # compared as resolved below: a run resumes on any GPU of its type
        diff = rundir.key_diffs(
            {k: v for k, v in old_search.items() if k not in placed},
            {k: v for k, v in doc["search"].items() if k not in placed},
        )
        old_resolved = old.get("resolved", {})
        was = tuple(old_resolved.get(k, d) for k, d in zip(placed, ("cpu", "fp32"), strict=True))
        now = tuple(doc["resolved"].get(k) for k in placed)
        if was != now:
            diff.append(
                f"device: the run searched on {was[0]} ({was[1]}), this one would on {now[0]} ({now[1]}); "
                f"resume it with --device {was[0]} --precision {was[1]}"
            )
        if old.get("resolved", {}).get("predictor_sha256") != doc["resolved"].get("predictor_sha256"):
            diff.append("the predictor file's content changed")
        return diff

    return differs


def _check_run_dir(out: Path, doc: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start); UserError if `out` cannot take this run."""
    state = rundir.prepare(out, "search", _differs(doc), resume=resume, force_allowed=False)
    if state == "new":
        return None
    ck = out / CHECKPOINT_FILE
    if not ck.exists():
        return None
    fix = "restore it, or delete it to restart the run from epoch 0"
    st = load_torch_file(ck, "search checkpoint", fix)
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{ck}: not a search checkpoint of this hwnas version; {fix}")
    return st


def _write_log(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out / LOG_FILE, buf.getvalue())


def _save_checkpoint(out: Path, st: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(st, buf)
    atomic_write_bytes(out / CHECKPOINT_FILE, buf.getvalue())


def run_search(
    cfg: SearchConfig,
    out: str | Path | None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    on_step: Callable[[Searcher, int], None] | None = None,
    on_epoch: Callable[[Searcher, dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search; write the run directory `out` (None: nothing written).

    `progress`: a bar on a terminal, a line every ~10 s elsewhere (None: only on a
    terminal); a line per epoch whenever there is no bar.
    `on_step(searcher, step)` / `on_epoch(searcher, row)` are hooks for tests and tools.
    Bad input raises UserError before anything in `out` changes. Under torchrun every rank
    calls this; rank 0 writes the run directory.
    """
    out_path = Path(out) if out is not None else None
    placement = _placement(cfg)
    space, term, penalty, data, resolved = _resolve(cfg, placement.device)
    resolved.update(placement.record())
    device = placement.device
    info = D.init_from_env(device)
    resolved["ranks"] = info.world
    doc = _config_doc(cfg, resolved)
    state = _check_run_dir(out_path, doc, resume) if out_path is not None else None
    D.barrier(info)  # every rank has checked the run directory before rank 0 writes to it
    plan = S.phases(cfg.schedule, cfg.epochs)
    start, cells = 0, None
    if state is not None:  # the phase the checkpoint was written in (runs before schedules: joint)
        names = [p.name for p in plan]
        name = state.get("phase", "joint")
        try:
            start = names.index(name)
            if not plan[start].train_cells:
                cells = Architecture.from_dict(state["cells"], where=f"{out_path / CHECKPOINT_FILE} cells")
        except (ValueError, KeyError, TypeError, UserError):
            raise UserError(
                f"--resume: {out_path / CHECKPOINT_FILE} was written in phase {name!r}, which schedule "
                f"{cfg.schedule!r} does not have ({', '.join(names)}); resume with the run's own --schedule"
            ) from None
    searcher = Searcher(cfg, space, data, term, penalty, info, device, plan[start], cells)
    if state is not None:
        try:
            searcher.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise UserError(
                f"--resume: {out_path / CHECKPOINT_FILE} does not fit this run ({str(exc).splitlines()[0][:160]}); "
                "delete it to restart from epoch 0"
            ) from None
    if out_path is not None and info.main:
        out_path.mkdir(parents=True, exist_ok=True)
        if state is None:
            atomic_write_text(out_path / CONFIG_FILE, strict_json(doc, indent=2) + "\n")
    note = resolution_note(cfg, space)
    if note is not None and info.main:
        print(note, file=sys.stderr, flush=True)
    show = sys.stderr.isatty() if progress is None else progress
    spe = searcher.steps_per_epoch
    bar = Progress(
        cfg.epochs * spe, "search", initial=(searcher.phase.first_epoch + searcher.epoch) * spe, unit="step",
        enabled=show and info.main,
    )
    t_start = time.perf_counter()
    try:
        while True:
            if searcher.epoch >= searcher.phase.epochs:
                if searcher.phase.index + 1 >= len(plan):
                    break
                # the next phase holds the cells this one found (with the collapse guard, as
                # the final derive): fresh weights and optimisers, H-DAS runs its phases apart
                cells, _ = searcher.derive()
                if out_path is not None and info.main:
                    atomic_write_text(out_path / CELLS_FILE, cells.to_json() + "\n")
                rows = searcher.rows
                searcher = Searcher(cfg, space, data, term, penalty, info, device, plan[searcher.phase.index + 1], cells)
                searcher.rows = [dict(r) for r in rows]
                continue
            row = searcher.run_epoch(on_step, bar)
            if out_path is not None and info.main:
                _write_log(out_path, searcher.rows)
                _save_checkpoint(out_path, searcher.state_dict())
            if info.main and bar.bar is None:
                print(
                    f"search: epoch {row['epoch']}/{cfg.epochs} ({row['phase']}) train acc {row['train_acc']:.3f} "
                    f"val acc {row['val_acc']:.3f} relaxed {row['relaxed_ms']:.4g} ms derived "
                    f"{row['derived_ms']:.4g} ms weight {row['latency_weight']:.3g} {row['seconds']:.1f} s",
                    file=sys.stderr,
                )
            if on_epoch is not None:
                on_epoch(searcher, row)
    finally:
        bar.close()
    arch, derive_log = searcher.derive()
    repair_log: list[str] = []
    if penalty is not None and cfg.latency_budget_ms is not None:
        arch, repair_log = repair_to_budget(
            arch, searcher.alpha, term, cfg.latency_budget_ms, tol=penalty.tol, max_param_free=cfg.max_param_free
        )
    arch = Architecture.from_dict(arch.to_dict(), where="derived architecture")  # validates
    last = searcher.rows[-1] if searcher.rows else {}
    summary: dict[str, Any] = {
        "architecture_hash": arch.hash,
        "predicted_latency_ms": term.derived_ms(arch) if term is not None else None,
        "relaxed_latency_ms": last.get("relaxed_ms"),
        "latency0_ms": term.latency0_ms if term is not None else None,
        "val_accuracy": last.get("val_acc"),
        "train_accuracy": last.get("train_acc"),
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "schedule": cfg.schedule,
        "depth_penalty": cfg.depth_weight,
        "depths": [st.depth for st in arch.stages],
        "samples": cfg.samples,
        "second_order": cfg.second_order,
        "search_channels": resolved["search_channels"],
        "param_free_share": param_free_share(arch),
        "derive": cfg.derive,
        "latency_price_per_ms": searcher.price_per_ms(),
        "collapse_guard": [line for line in derive_log if not line.startswith(PRICED_PREFIX)],
        "priced_changes": [line for line in derive_log if line.startswith(PRICED_PREFIX)],
        "repair": repair_log,
        "ranks": info.world,
        "seconds_this_process": time.perf_counter() - t_start,
        "seconds_total": float(sum(r["seconds"] for r in searcher.rows)),
    }
    if cfg.latency_budget_ms is not None:
        summary["latency_budget_ms"] = cfg.latency_budget_ms
        summary["final_latency_weight"] = penalty.weight if penalty is not None else None
    else:
        summary["latency_weight"] = cfg.latency_weight or 0.0
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    if out_path is not None and info.main:
        atomic_write_text(out_path / ARCH_FILE, arch.to_json() + "\n")
        atomic_write_text(out_path / SUMMARY_FILE, strict_json(summary, indent=2) + "\n")
    return SearchResult(arch, summary, searcher.rows, out_path, searcher.alpha)
