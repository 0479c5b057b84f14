"""The deployment half of the main job (`hwnas run`): search twice, train, export, measure, report.

After `hwnas run` has profiled, fitted the predictor and checked it, this module:

1. searches once without the latency loss (weight 0: the plain network) and once with it (a
   latency weight, or the budget the user gave), through `hwnas.search.run_search`, the two
   at once in child processes of one thread each (on a 2-core host that halves the wall time);
2. trains both found networks (`hwnas train`, two processes at once, one thread each);
3. exports both to ONNX for the target (`hwnas.deploy.export`), and times them together, in the
   same interleaved rounds, with the reference network beside them;
4. returns what the report needs (`summary["networks"]`, `summary["comparison"]`).

Every sub-run lives in its own directory of the main run (`search-plain/`, `train-latency/`,
...). A finished sub-run whose configuration is unchanged is reused on the next run; an
interrupted one is resumed; one of another configuration is replaced (the main run owns them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from hwnas.deploy.export import export_for_target, format_comparison, measure_exports
from hwnas.mainjob.children import Child
from hwnas.mainjob.config import MainJobConfig
from hwnas.mainjob.summary import compare_networks, describe_comparison
from hwnas.search import SearchConfig, run_search
from hwnas.search.config import stored_search
from hwnas.space import get_space
from hwnas.train.loop import train
from hwnas.train.recipe import TrainConfig
from hwnas.train.runs import resolve_source
from predictor.io import read_header
from targets.basics import UserError, atomic_write_text, strict_json
from targets.progress import Progress
from targets.spec import TargetSpec

KEYS = ("plain", "latency")


def step(msg: str) -> float:
    """Print a main-job step's banner; the start time, for its wall time."""
    print(f"\n== {msg}", flush=True)
    return time.perf_counter()


def _stamp_path(run: Path) -> Path:
    """Beside the search directory (which `run_search` wants empty): the predictor it used."""
    return run.with_name(run.name + ".predictor.sha256")


def predictor_weights_sha256(path: Path) -> str:
    """sha256 of a predictor's tensors and the header fields that change its answers (not
    its creation time): the same fit on the same store gives the same stamp."""
    header, state = read_header(path)
    h = hashlib.sha256()
    for k in ("space_key", "target_name", "fingerprint_key", "label", "reference_baseline_ms", "feature_layout",
              "normalisation", "model"):
        h.update(json.dumps(header.get(k), sort_keys=True, default=str).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _search_state(run: Path, cfg: Any, stamp: str) -> str:
    """'done' (finished, same config and predictor), 'resume' (same, unfinished), 'other'."""
    try:
        old = stored_search(json.loads((run / "config.json").read_text())["search"])
        old_stamp = _stamp_path(run).read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return "other"
    new = cfg.to_json()
    new["predictor"] = str(Path(new["predictor"]).resolve()) if new["predictor"] else None
    if old != new or old_stamp != stamp:
        return "other"
    return "done" if (run / "summary.json").is_file() and (run / "architecture.json").is_file() else "resume"


def _search_job(cfg: SearchConfig, run: Path, label: str) -> dict[str, Any]:
    """A finished search of this configuration and predictor is reused, an interrupted one
    resumed, one of another configuration replaced (the main run owns its sub-runs)."""
    stamp = predictor_weights_sha256(Path(cfg.predictor))
    state = _search_state(run, cfg, stamp) if run.exists() else "new"
    if state == "done":
        print(f"   {label}: reusing the finished search in {run} (same configuration and predictor)")
        return {"run": run, "epochs": cfg.epochs, "done": True}
    if state == "other":
        shutil.rmtree(run)
    elif state == "resume":
        print(f"   {label}: resuming the interrupted search in {run}")
    if state != "resume":
        atomic_write_text(_stamp_path(run), stamp + "\n")
    resume = state == "resume"
    return {"run": run, "epochs": cfg.epochs, "start": lambda log: Child(search_child, {"cfg": cfg, "run": run, "resume": resume}, log, cfg.device)}


def search_child(cfg: Any, run: Path, resume: bool) -> None:
    """One search of the main job, in a child process (`hwnas.mainjob.children`)."""
    run_search(cfg, run, resume=resume, progress=False)


def _train_state(run: Path, arch_hash: str, args_cfg: dict[str, Any]) -> str:
    try:
        old = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return "new" if not run.exists() else "other"
    if old.get("arch_hash") != arch_hash or old.get("config") != args_cfg:
        return "other"
    return "done" if (run / "summary.json").is_file() else "resume"


def train_child(source: Path, cfg: TrainConfig, out: Path, resume: bool, force: bool) -> None:
    """One training of the main job, in a child process (`hwnas.mainjob.children`)."""
    train(resolve_source(source), cfg, out, resume=resume, force=force, progress=False)


def _train_job(job: dict[str, Any], label: str) -> dict[str, Any]:
    """A training in a child process of one torch thread (reused when finished)."""
    cfg: TrainConfig = job["cfg"]
    run: Path = job["run"]
    state = _train_state(run, job["arch_hash"], asdict(cfg))
    if state == "done":
        print(f"   {label}: reusing the finished training in {run}")
        return {"run": run, "epochs": cfg.epochs, "done": True}
    kwargs = {"source": job["source"], "cfg": cfg, "out": run, "resume": state == "resume", "force": state == "other"}
    return {"run": run, "epochs": cfg.epochs, "start": lambda log: Child(train_child, kwargs, log, cfg.device)}


def run_in_parallel(
    out: Path, jobs: dict[str, dict[str, Any]], progress: bool, what: str, acc_column: str
) -> dict[str, dict[str, Any]]:
    """Start every job (a child process each), follow their log.csv epochs (a bar on a
    terminal, else a line per epoch with `acc_column`), and return each run's summary.json.
    A failing child stops the others and raises UserError with its last message."""
    procs: dict[str, Any] = {}
    logs: dict[str, Path] = {}
    for key, job in jobs.items():
        if not job.get("done"):
            logs[key] = out / f"{what}-{key}.log"
            procs[key] = job["start"](logs[key])
    bar = Progress(sum(jobs[k]["epochs"] for k in procs), what, unit="epoch", enabled=progress and bool(procs))
    seen = {k: 0 for k in procs}
    t0 = time.perf_counter()
    while procs:
        time.sleep(0.5)
        for key in list(procs):
            n = _epochs_done(jobs[key]["run"])
            if n > seen[key]:
                bar.update(bar.done + n - seen[key])
                if bar.bar is None:
                    print(
                        f"   {what} {key}: epoch {n}/{jobs[key]['epochs']} "
                        f"{_last_value(jobs[key]['run'], acc_column)} ({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
                seen[key] = n
            code = procs[key].poll()
            if code is None:
                continue
            if code != 0:
                for p in procs.values():
                    if p.poll() is None:
                        p.terminate()
                bar.close()
                err = logs[key].read_text().strip().splitlines() if logs[key].is_file() else []
                msg = err[-1] if err else f"exit code {code}"
                raise UserError(f"{what} of the {key} network failed: {msg} (see {logs[key]})")
            del procs[key]
    bar.close()
    result = {key: json.loads((job["run"] / "summary.json").read_text()) for key, job in jobs.items()}
    for log in logs.values():
        log.unlink(missing_ok=True)
        log.with_suffix(".result.json").unlink(missing_ok=True)
    return result


def _epochs_done(run: Path) -> int:
    try:
        return max(0, len((run / "log.csv").read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def _last_value(run: Path, column: str) -> str:
    try:
        rows = (run / "log.csv").read_text().strip().splitlines()
        value = float(rows[-1].split(",")[rows[0].split(",").index(column)])
        return f"({column.replace('_', ' ')} {value:.3f})"
    except (OSError, IndexError, ValueError):
        return ""


def search_configs(cfg: MainJobConfig, spec: TargetSpec, predictor_path: Path, dataset: str) -> tuple[dict[str, SearchConfig], str]:
    """The two searches of the main job (plain: weight 0; latency-aware) and the latter's setting."""
    lat_kw = cfg.latency_setting
    if "latency_budget_ms" in lat_kw:
        setting = f"latency budget {lat_kw['latency_budget_ms']:g} ms"
    else:
        setting = f"latency weight {lat_kw['latency_weight']:g}"
    base = SearchConfig(
        space=cfg.space, dataset=dataset, predictor=str(predictor_path), latency_weight=0.0,
        epochs=cfg.search_epochs, seed=cfg.seed, subset=cfg.search_subset, target=spec.name,
        mode=cfg.search_mode, search_resolution=cfg.search_resolution or get_space(cfg.space).input_size,
        a_lr=cfg.search_arch_lr, schedule=cfg.search_schedule, device=cfg.device, precision=cfg.precision,
    )  # fmt: skip
    return {"plain": base, "latency": replace(base, **lat_kw)}, setting


def _search_both(cfgs: dict[str, SearchConfig], out: Path, progress: bool) -> dict[str, dict[str, Any]]:
    searches = run_in_parallel(
        out, {key: _search_job(cfgs[key], out / f"search-{key}", key) for key in KEYS}, progress, "search", "val_acc"
    )
    for key in KEYS:
        sk = searches[key]
        print(f"   {key}: predicted {sk['predicted_latency_ms']:.3f} ms, supernet val accuracy {sk['val_accuracy']:.3f}")
        for line in sk.get("repair", []) or []:
            print(f"   {key} repair: {line}")
    return searches


def _train_both(cfg: MainJobConfig, dataset: str, searches: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tcfg = TrainConfig(
        dataset=dataset, epochs=cfg.train_epochs, subset=cfg.train_subset, seed=cfg.seed, device=cfg.device,
        precision=cfg.precision,
    )
    jobs = {
        key: _train_job(
            {"cfg": tcfg, "run": cfg.out / f"train-{key}", "source": cfg.out / f"search-{key}",
             "arch_hash": searches[key]["architecture_hash"]},
            key,
        )
        for key in KEYS
    }  # fmt: skip
    trained = run_in_parallel(cfg.out, jobs, cfg.progress, "train", "test_accuracy")
    for key in KEYS:
        s = trained[key]
        print(f"   {key}: test accuracy {s['test_accuracy']:.4f}, {s['params']:,} parameters, {s['flops']:,} multiply-adds")
    return trained


def _export_and_measure(
    cfg: MainJobConfig, spec: TargetSpec, predictor_path: Path, searches: dict[str, Any],
    trained: dict[str, Any], settings: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Both trained networks exported for the target and timed in the same rounds."""
    out = cfg.out
    exports = {}
    for key in KEYS:
        exports[key] = export_for_target(
            out / f"train-{key}", spec, out / f"export-{key}", predictor=predictor_path, force=True, seed=cfg.seed
        )
        print(f"   {exports[key].onnx_path}: parity max |diff| {exports[key].info['parity']['max_abs_diff']:.1e}")
    cmps = measure_exports(
        [exports[k].onnx_path for k in KEYS], spec,
        [exports[k].info["predicted_latency_ms"] for k in KEYS], exports[KEYS[0]].info["reference_baseline_ms"],
    )  # fmt: skip
    networks: dict[str, Any] = {}
    for key, cmp in zip(KEYS, cmps, strict=True):
        print("   " + format_comparison(key.ljust(7), cmp))
        info = exports[key].info
        info["measurement"] = cmp.to_dict()
        atomic_write_text(out / f"export-{key}" / "export.json", strict_json(info, indent=2) + "\n")
        s, search = trained[key], searches[key]
        networks[key] = {
            "search_setting": settings[key], "search_dir": f"search-{key}", "train_dir": f"train-{key}",
            "export_dir": f"export-{key}", "arch_hash": search["architecture_hash"],
            "search_val_accuracy": search.get("val_accuracy"), "test_accuracy": s["test_accuracy"],
            "params": s["params"], "flops": s["flops"], **cmp.to_dict(),
        }  # fmt: skip
    return networks


def deploy_steps(
    cfg: MainJobConfig,
    spec: TargetSpec,
    predictor_path: Path,
    summary: dict[str, Any],
    first_step: int,
    total_steps: int,
) -> None:
    """Search x2, train x2, export x2, measure both: fills summary["networks"] and
    summary["comparison"]; summary["steps"] gets each step's wall time."""
    steps = summary.setdefault("steps", {})
    dataset = summary["dataset"]
    n = first_step
    cfgs, setting = search_configs(cfg, spec, predictor_path, dataset)
    t = step(
        f"{n}/{total_steps} search twice, in parallel: without the latency loss (the plain network) "
        f"and with it ({setting}); {cfg.search_epochs} epochs each"
    )
    searches = _search_both(cfgs, cfg.out, cfg.progress)
    steps["search (both)"] = time.perf_counter() - t
    t = step(f"{n + 1}/{total_steps} train both found networks ({cfg.train_epochs} epochs each, in parallel)")
    trained = _train_both(cfg, dataset, searches)
    steps["train (both)"] = time.perf_counter() - t
    t = step(f"{n + 2}/{total_steps} export both to ONNX (parity-checked), then measure them together on '{spec.name}'")
    networks = _export_and_measure(
        cfg, spec, predictor_path, searches, trained, {"plain": "weight 0", "latency": setting}
    )
    steps["export + measure"] = time.perf_counter() - t
    summary["networks"] = networks
    summary["comparison"] = compare_networks(networks, summary.get("repeat") or {})
    print("   " + describe_comparison(summary["comparison"]))
