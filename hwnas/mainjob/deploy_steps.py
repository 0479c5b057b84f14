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

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from targets.basics import UserError
from targets.spec import TargetSpec

KEYS = ("plain", "latency")
MAIN_KIND = "main"
#: The latency-aware search's default weight: latency counts as much as the cross-entropy
#: at the space's centre (relative latency, so it means the same on any target).
DEFAULT_LATENCY_WEIGHT = 1.0
#: Short CPU searches move the logits too little at DARTS's 3e-4 (measured: ~0.01 in 6 epochs).
SEARCH_ARCH_LR = 3e-3


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The main job's search/train/deploy options."""
    p.add_argument("--dataset", default=None, help="dataset of the search and training (default: digits for the digits space)")
    p.add_argument("--search-epochs", type=int, default=8, help="epochs of each search (default 8)")
    p.add_argument("--search-subset", type=int, default=800,
                   help="training images the searches use, split 50/50 between weights and architecture (default 800)")
    p.add_argument(
        "--search-mode", choices=("full", "sampled"), default="full",
        help="full (default: the DARTS mixture, the mode whose supernet learns in CPU-sized budgets) "
        "or sampled (one sub-graph per step; cheaper, but its supernet stays near chance here)",
    )
    p.add_argument(
        "--search-resolution", type=int, default=None, metavar="R",
        help="input size of the searched supernet (default: the data's native size, e.g. 8 for "
        "digits, whose deployed network upsamples to 32; the latency term always predicts the deployed network)",
    )
    p.add_argument(
        "--search-arch-lr", type=float, default=SEARCH_ARCH_LR,
        help=f"Adam lr of the architecture logits (default {SEARCH_ARCH_LR:g}: 10x DARTS's, which is "
        "sized for ~20k steps; these searches make ~100)",
    )
    p.add_argument("--train-epochs", type=int, default=6, help="epochs of training each found network (default 6)")
    p.add_argument("--train-subset", type=int, default=None, help="training images for training (default: all)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latency-weight", type=float, default=None,
                     help=f"latency weight of the latency-aware search (default {DEFAULT_LATENCY_WEIGHT:g}: "
                     "loss = CE + weight x predicted / centre latency)")
    lat.add_argument("--latency-budget", type=float, default=None, metavar="MS",
                     help="a hard latency budget for the latency-aware search instead of a weight")
    p.add_argument("--no-deploy", action="store_true", help="stop after checking the predictor (no search, training, export)")
    p.add_argument("--force", action="store_true", help="use an --out that holds another configuration or kind of run")


# -- the main run directory -------------------------------------------------------------------------
def check_run_dir(out: Path, config: dict[str, Any], force: bool) -> None:
    """Refuse an --out holding another kind of run or another configuration (no overwrite
    without --force); the same configuration is reused (the profile store continues)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        if (out / "profile.db").is_file():
            return  # a store alone (e.g. from `hwnas profile --db OUT/profile.db`): reuse it
        raise UserError(f"{out}: not empty and holds no hwnas run; choose an empty or new --out, or pass --force")
    try:
        old = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{cfg_path}: unreadable; choose another --out, or pass --force") from None
    kind = old.get("kind") if isinstance(old, dict) else None
    if kind is None and isinstance(old, dict) and "samples" in old and "space" in old and "target" in old:
        kind = MAIN_KIND  # written by an earlier hwnas run, before runs had a kind
        old = {**old, "kind": MAIN_KIND}
    if kind != MAIN_KIND:
        what = kind or ("search" if str(old.get("schema", "")).startswith("hwnas.search") else "another")
        raise UserError(f"{out}: holds a '{what}' run, not a main-job run; choose another --out (or --force)")
    identity = ("space", "target", "seed", "dataset")
    diffs = [k for k in identity if k in old and old.get(k) != config.get(k)]
    if diffs:
        raise UserError(
            f"{out}: holds a main-job run of another configuration (differs in: {', '.join(diffs)}); its "
            "profile store belongs to that one: choose another --out, or pass --force"
        )


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
    import hashlib

    from predictor.io import read_header

    header, state = read_header(path)
    h = hashlib.sha256()
    for k in ("space_key", "target_name", "fingerprint_key", "label", "reference_baseline_ms", "feature_layout",
              "normalisation", "model"):
        h.update(json.dumps(header.get(k), sort_keys=True, default=str).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch_uint8()).numpy().tobytes())
    return h.hexdigest()


def torch_uint8() -> Any:
    import torch

    return torch.uint8


def _search_state(run: Path, cfg: Any, stamp: str) -> str:
    """'done' (finished, same config and predictor), 'resume' (same, unfinished), 'other'."""
    try:
        old = json.loads((run / "config.json").read_text())["search"]
        old_stamp = _stamp_path(run).read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return "other"
    new = cfg.to_json()
    new["predictor"] = str(Path(new["predictor"]).resolve()) if new["predictor"] else None
    if old != new or old_stamp != stamp:
        return "other"
    return "done" if (run / "summary.json").is_file() and (run / "architecture.json").is_file() else "resume"


def _search_job(cfg: Any, run: Path, label: str) -> dict[str, Any]:
    """A finished search of this configuration and predictor is reused, an interrupted one
    resumed, one of another configuration replaced (the main run owns its sub-runs)."""
    from targets.basics import atomic_write_text

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
    return {"run": run, "epochs": cfg.epochs, "start": lambda log: _SpawnedSearch(cfg, run, state == "resume", log)}


def _search_child(cfg: Any, run: Path, resume: bool, log: Path) -> None:
    """A search in a child process of one torch thread; its messages go to `log`."""
    import traceback

    from hwnas.search import run_search

    with log.open("w") as f:
        sys.stdout = sys.stderr = f
        try:
            run_search(cfg, run, resume=resume, progress=False, threads=1)
        except UserError as exc:
            print(f"hwnas: error: {exc}", flush=True)
            sys.exit(2)
        except BaseException:
            traceback.print_exc()
            f.flush()
            sys.exit(1)


class _SpawnedSearch:
    """`run_search` in a fresh interpreter (spawn: no forked torch state), polled like Popen."""

    def __init__(self, cfg: Any, run: Path, resume: bool, log: Path):
        import multiprocessing as mp

        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by the child's OpenMP at start-up; ours is left as it was
        try:
            self.proc = mp.get_context("spawn").Process(
                target=_search_child, args=(cfg, run, resume, log), daemon=True
            )
            self.proc.start()
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old

    def poll(self) -> int | None:
        return None if self.proc.is_alive() else self.proc.exitcode

    def terminate(self) -> None:
        self.proc.terminate()


def _train_state(run: Path, arch_hash: str, args_cfg: dict[str, Any]) -> str:
    try:
        old = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return "new" if not run.exists() else "other"
    if old.get("arch_hash") != arch_hash or old.get("config") != args_cfg:
        return "other"
    return "done" if (run / "summary.json").is_file() else "resume"


def _train_job(job: dict[str, Any], label: str) -> dict[str, Any]:
    """`hwnas train` as a child process of one torch thread (reused when finished)."""
    from hwnas.train.loop import TrainConfig

    cfg: TrainConfig = job["cfg"]
    run: Path = job["run"]
    state = _train_state(run, job["arch_hash"], asdict(cfg))
    if state == "done":
        print(f"   {label}: reusing the finished training in {run}")
        return {"run": run, "epochs": cfg.epochs, "done": True}
    cmd = [
        sys.executable, "-m", "hwnas.cli", "train", str(job["source"]), "--dataset", cfg.dataset,
        "--epochs", str(cfg.epochs), "--out", str(run), "--seed", str(cfg.seed),
        "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr), "--threads", "1", "--no-progress",
        "--json",
    ]  # fmt: skip
    if cfg.subset is not None:
        cmd += ["--subset", str(cfg.subset)]
    cmd += ["--resume"] if state == "resume" else (["--force"] if state == "other" else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(log: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True, env=env)

    return {"run": run, "epochs": cfg.epochs, "start": start}


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
    bar = None
    if progress and sys.stderr.isatty() and procs:
        from tqdm import tqdm

        bar = tqdm(total=sum(jobs[k]["epochs"] for k in procs), desc=what, unit="epoch", dynamic_ncols=True)
    seen = {k: 0 for k in procs}
    t0 = time.perf_counter()
    while procs:
        time.sleep(0.5)
        for key in list(procs):
            n = _epochs_done(jobs[key]["run"])
            if n > seen[key]:
                if bar is not None:
                    bar.update(n - seen[key])
                else:
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
                err = logs[key].read_text().strip().splitlines() if logs[key].is_file() else []
                for p in procs.values():
                    if p.poll() is None:
                        p.terminate()
                msg = err[-1] if err else f"exit code {code}"
                raise UserError(f"{what} of the {key} network failed: {msg} (see {logs[key]})")
            del procs[key]
    if bar is not None:
        bar.close()
    result = {key: json.loads((job["run"] / "summary.json").read_text()) for key, job in jobs.items()}
    for log in logs.values():
        log.unlink(missing_ok=True)
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


def deploy_steps(
    args: argparse.Namespace,
    out: Path,
    spec: TargetSpec,
    predictor_path: Path,
    summary: dict[str, Any],
    first_step: int,
    total_steps: int,
) -> None:
    """Search x2, train x2, export x2, measure both: fills summary["networks"] and
    summary["comparison"]; summary["steps"] gets each step's wall time."""
    from hwnas.deploy.export import export_for_target, format_comparison, measure_exports
    from hwnas.search import SearchConfig
    from hwnas.space import get_space
    from hwnas.train.loop import TrainConfig

    progress = not args.no_progress
    steps = summary.setdefault("steps", {})
    dataset = summary["dataset"]
    n = first_step

    if args.latency_budget is not None:
        setting = f"latency budget {args.latency_budget:g} ms"
        lat_kw: dict[str, Any] = {"latency_weight": None, "latency_budget_ms": float(args.latency_budget)}
    else:
        weight = DEFAULT_LATENCY_WEIGHT if args.latency_weight is None else args.latency_weight
        setting = f"latency weight {weight:g}"
        lat_kw = {"latency_weight": float(weight)}
    base = SearchConfig(
        space=args.space, dataset=dataset, predictor=str(predictor_path), latency_weight=0.0,
        epochs=args.search_epochs, seed=args.seed, subset=args.search_subset, target=spec.name,
        mode=getattr(args, "search_mode", "full"),
        search_resolution=getattr(args, "search_resolution", None) or get_space(args.space).input_size,
        a_lr=getattr(args, "search_arch_lr", SEARCH_ARCH_LR),
    )  # fmt: skip
    cfgs = {"plain": base, "latency": replace(base, **lat_kw)}
    settings = {"plain": "weight 0", "latency": setting}
    t = step(
        f"{n}/{total_steps} search twice, in parallel: without the latency loss (the plain network) "
        f"and with it ({setting}); {args.search_epochs} epochs each"
    )
    searches = run_in_parallel(
        out,
        {key: _search_job(cfgs[key], out / f"search-{key}", key) for key in KEYS},
        progress,
        "search",
        "val_acc",
    )
    for key in KEYS:
        sk = searches[key]
        print(
            f"   {key}: predicted {sk['predicted_latency_ms']:.3f} ms, supernet val accuracy "
            f"{sk['val_accuracy']:.3f}"
        )
        for line in sk.get("repair", []) or []:
            print(f"   {key} repair: {line}")
    steps["search (both)"] = time.perf_counter() - t

    n += 1
    t = step(f"{n}/{total_steps} train both found networks ({args.train_epochs} epochs each, in parallel)")
    tcfg = TrainConfig(dataset=dataset, epochs=args.train_epochs, subset=args.train_subset, seed=args.seed)
    jobs = {
        key: _train_job(
            {
                "cfg": tcfg,
                "run": out / f"train-{key}",
                "source": out / f"search-{key}",
                "arch_hash": searches[key]["architecture_hash"],
            },
            key,
        )
        for key in KEYS
    }
    trained = run_in_parallel(out, jobs, progress, "train", "test_accuracy")
    for key in KEYS:
        s = trained[key]
        print(f"   {key}: test accuracy {s['test_accuracy']:.4f}, {s['params']:,} parameters, {s['flops']:,} multiply-adds")
    steps["train (both)"] = time.perf_counter() - t

    n += 1
    t = step(f"{n}/{total_steps} export both to ONNX (parity-checked), then measure them together on '{spec.name}'")
    exports = {}
    for key in KEYS:
        exports[key] = export_for_target(out / f"train-{key}", spec, out / f"export-{key}", predictor=predictor_path, force=True, seed=args.seed)
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
        (out / f"export-{key}" / "export.json").write_text(json.dumps(info, indent=2) + "\n")
        s, search, setting_k = trained[key], searches[key], settings[key]
        networks[key] = {
            "search_setting": setting_k,
            "search_dir": f"search-{key}",
            "train_dir": f"train-{key}",
            "export_dir": f"export-{key}",
            "arch_hash": search["architecture_hash"],
            "search_val_accuracy": search.get("val_accuracy"),
            "test_accuracy": s["test_accuracy"],
            "params": s["params"],
            "flops": s["flops"],
            **cmp.to_dict(),
        }
    steps["export + measure"] = time.perf_counter() - t
    summary["networks"] = networks
    summary["comparison"] = compare_networks(networks, summary.get("repeat") or {})
    print("   " + describe_comparison(summary["comparison"]))


def compare_networks(networks: dict[str, Any], repeat: dict[str, Any]) -> dict[str, Any]:
    """The measured difference between the two networks against the re-measurement floor
    (the 90th percentile of |old - new| / old over the re-measured architectures)."""
    p, lat = networks.get("plain") or {}, networks.get("latency") or {}
    out: dict[str, Any] = {}
    if p.get("measured_ms") and lat.get("measured_ms"):
        out["speedup_pct"] = 100.0 * (1.0 - lat["measured_ms"] / p["measured_ms"])
        if p.get("corrected_ms") and lat.get("corrected_ms"):
            out["speedup_pct_corrected"] = 100.0 * (1.0 - lat["corrected_ms"] / p["corrected_ms"])
        if p.get("test_accuracy") is not None and lat.get("test_accuracy") is not None:
            out["accuracy_cost_points"] = 100.0 * (p["test_accuracy"] - lat["test_accuracy"])
    diffs = [
        abs(i["new_ms"] / i["old_ms"] - 1.0) * 100.0
        for i in repeat.get("items") or []
        if i.get("new_ms") and i.get("old_ms")
    ]
    if diffs:
        out["floor_pct"] = float(np.percentile(diffs, 90))
        out["floor_definition"] = "90th percentile of |re-measured / first - 1| over the re-measured architectures"
    elif repeat.get("median_abs_pct") is not None:
        out["floor_pct"] = float(repeat["median_abs_pct"])
        out["floor_definition"] = "median |re-measured / first - 1|"
    if "speedup_pct" in out and "floor_pct" in out:
        out["above_floor"] = abs(out["speedup_pct"]) > out["floor_pct"]
    return out


def describe_comparison(c: dict[str, Any]) -> str:
    if "speedup_pct" not in c:
        return "the two networks were not both measured"
    text = f"latency-aware vs plain: {c['speedup_pct']:+.1f}% faster measured (raw)"
    if "speedup_pct_corrected" in c:
        text += f", {c['speedup_pct_corrected']:+.1f}% drift-corrected"
    if "accuracy_cost_points" in c:
        text += f"; accuracy cost {c['accuracy_cost_points']:+.2f} points"
    if "floor_pct" in c:
        text += f"; re-measurement floor {c['floor_pct']:.1f}% ({'above' if c.get('above_floor') else 'NOT above'} it)"
    return text
