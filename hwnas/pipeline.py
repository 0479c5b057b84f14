"""The deployment half of the main job (`hwnas run`): search twice, train, export, measure, report.

After `hwnas run` has profiled, fitted the predictor and checked it, this module:

1. searches once without the latency loss (weight 0: the plain network) and once with it (a
   latency budget set below the plain network's predicted latency, or the weight / budget
   the user gave), through `hwnas.search.run_search`;
2. trains both found networks (`hwnas train`, two processes at once, one thread each: on a
   2-core host that halves the wall time);
3. exports both to ONNX for the target (`hwnas.deploy`), and times them together, in the
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

from targets.errors import UserError
from targets.spec import TargetSpec

KEYS = ("plain", "latency")
MAIN_KIND = "main"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The main job's search/train/deploy options."""
    p.add_argument("--dataset", default=None, help="dataset of the search and training (default: digits for the digits space)")
    p.add_argument("--search-epochs", type=int, default=6, help="epochs of each search (default 6)")
    p.add_argument("--search-subset", type=int, default=800,
                   help="training images the searches use, split 50/50 between weights and architecture (default 800)")
    p.add_argument(
        "--search-mode", choices=("full", "sampled"), default="sampled",
        help="sampled (default here: one sub-graph per step, ~8x cheaper, what fits the main job's "
        "15 minutes) or full (the DARTS mixture, `hwnas search`'s default)",
    )
    p.add_argument("--train-epochs", type=int, default=6, help="epochs of training each found network (default 6)")
    p.add_argument("--train-subset", type=int, default=None, help="training images for training (default: all)")
    lat = p.add_mutually_exclusive_group()
    lat.add_argument("--latency-budget", type=float, default=None, metavar="MS",
                     help="budget of the latency-aware search (default: --budget-fraction of the plain network's)")
    lat.add_argument("--latency-weight", type=float, default=None, help="a fixed latency weight instead of a budget")
    p.add_argument("--budget-fraction", type=float, default=0.6,
                   help="default budget: this fraction of the plain network's predicted latency (default 0.6)")
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


def _step(msg: str) -> float:
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


def _search(cfg: Any, run: Path, progress: bool, label: str) -> dict[str, Any]:
    """A finished search of this configuration and predictor is reused, an interrupted one
    resumed, one of another configuration replaced (the main run owns its sub-runs)."""
    from hwnas.search import run_search
    from hwnas.space import atomic_write_text

    stamp = predictor_weights_sha256(Path(cfg.predictor))
    state = _search_state(run, cfg, stamp) if run.exists() else "new"
    if state == "done":
        print(f"   {label}: reusing the finished search in {run} (same configuration and predictor)")
        return json.loads((run / "summary.json").read_text())
    if state == "other":
        shutil.rmtree(run)
    elif state == "resume":
        print(f"   {label}: resuming the interrupted search in {run}")
    if state != "resume":
        atomic_write_text(_stamp_path(run), stamp + "\n")
    res = run_search(cfg, run, resume=state == "resume", progress=progress)
    return res.summary


def _train_state(run: Path, arch_hash: str, args_cfg: dict[str, Any]) -> str:
    try:
        old = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return "new" if not run.exists() else "other"
    if old.get("arch_hash") != arch_hash or old.get("config") != args_cfg:
        return "other"
    return "done" if (run / "summary.json").is_file() else "resume"


def _train_both(out: Path, jobs: dict[str, dict[str, Any]], progress: bool) -> dict[str, dict[str, Any]]:
    """`hwnas train` for each network, as parallel child processes of one torch thread each;
    a line per finished epoch (or a bar on a terminal) while they run."""
    from hwnas.train import TrainConfig

    procs: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Path] = {}
    total = 0
    for key, job in jobs.items():
        cfg: TrainConfig = job["cfg"]
        run: Path = job["run"]
        state = _train_state(run, job["arch_hash"], asdict(cfg))
        if state == "done":
            print(f"   {key}: reusing the finished training in {run}")
            continue
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
        logs[key] = out / f"train-{key}.stderr.log"
        procs[key] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=logs[key].open("w"), text=True, env=env
        )
        total += cfg.epochs
    bar = None
    if progress and sys.stderr.isatty() and procs:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="train", unit="epoch", dynamic_ncols=True)
    seen = {k: 0 for k in procs}
    outputs: dict[str, str] = {}
    while procs:
        time.sleep(1.0)
        for key in list(procs):
            n = _epochs_done(jobs[key]["run"])
            if n > seen[key]:
                if bar is not None:
                    bar.update(n - seen[key])
                else:
                    print(f"   {key}: epoch {n}/{jobs[key]['cfg'].epochs} {_last_acc(jobs[key]['run'])}", flush=True)
                seen[key] = n
            if procs[key].poll() is not None:
                stdout = procs[key].stdout.read() if procs[key].stdout else ""
                outputs[key] = stdout
                if procs[key].returncode != 0:
                    err = logs[key].read_text().strip().splitlines()
                    for p in procs.values():
                        if p.poll() is None:
                            p.terminate()
                    raise UserError(f"training the {key} network failed: {err[-1] if err else 'no message'} (see {logs[key]})")
                del procs[key]
    if bar is not None:
        bar.close()
    result = {}
    for key, job in jobs.items():
        result[key] = json.loads((job["run"] / "summary.json").read_text())
        if key in logs:
            logs[key].unlink(missing_ok=True)
    return result


def _epochs_done(run: Path) -> int:
    try:
        return max(0, len((run / "log.csv").read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def _last_acc(run: Path) -> str:
    try:
        last = (run / "log.csv").read_text().strip().splitlines()[-1].split(",")
        return f"(test accuracy {float(last[6]):.3f})"
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
    from hwnas.deploy import export_for_target, format_comparison, measure_exports
    from hwnas.search import SearchConfig
    from hwnas.train import TrainConfig

    progress = not args.no_progress
    steps = summary.setdefault("steps", {})
    dataset = summary["dataset"]
    n = first_step

    t = _step(f"{n}/{total_steps} search without the latency loss (weight 0): the plain network")
    base = SearchConfig(
        space=args.space, dataset=dataset, predictor=str(predictor_path), latency_weight=0.0,
        epochs=args.search_epochs, seed=args.seed, subset=args.search_subset, target=spec.name,
        mode=getattr(args, "search_mode", "sampled"),
    )  # fmt: skip
    plain = _search(base, out / "search-plain", progress, "plain")
    print(
        f"   plain: predicted {plain['predicted_latency_ms']:.3f} ms, search val accuracy "
        f"{plain['val_accuracy']:.3f} ({time.perf_counter() - t:.0f} s)"
    )
    steps["search (plain)"] = time.perf_counter() - t

    n += 1
    if args.latency_weight is not None:
        lat_cfg = replace(base, latency_weight=args.latency_weight)
        setting = f"latency weight {args.latency_weight:g}"
    else:
        budget = args.latency_budget
        if budget is None:
            budget = _default_budget(predictor_path, args.space, plain["predicted_latency_ms"], args.budget_fraction, args.seed)
        lat_cfg = replace(base, latency_weight=None, latency_budget_ms=float(budget))
        setting = f"latency budget {budget:.3f} ms"
    t = _step(f"{n}/{total_steps} search with the latency loss ({setting})")
    lat = _search(lat_cfg, out / "search-latency", progress, "latency-aware")
    print(
        f"   latency-aware: predicted {lat['predicted_latency_ms']:.3f} ms, search val accuracy "
        f"{lat['val_accuracy']:.3f} ({time.perf_counter() - t:.0f} s)"
    )
    for line in lat.get("repair", []) or []:
        print(f"   repair: {line}")
    steps["search (latency-aware)"] = time.perf_counter() - t
    searches = {"plain": (plain, "weight 0"), "latency": (lat, setting)}

    n += 1
    t = _step(f"{n}/{total_steps} train both found networks ({args.train_epochs} epochs each, in parallel)")
    tcfg = TrainConfig(dataset=dataset, epochs=args.train_epochs, subset=args.train_subset, seed=args.seed)
    jobs = {
        key: {
            "cfg": tcfg,
            "run": out / f"train-{key}",
            "source": out / f"search-{key}",
            "arch_hash": searches[key][0]["architecture_hash"],
        }
        for key in KEYS
    }
    trained = _train_both(out, jobs, progress)
    for key in KEYS:
        s = trained[key]
        print(f"   {key}: test accuracy {s['test_accuracy']:.4f}, {s['params']:,} parameters, {s['flops']:,} multiply-adds")
    steps["train (both)"] = time.perf_counter() - t

    n += 1
    t = _step(f"{n}/{total_steps} export both to ONNX (parity-checked), then measure them together on '{spec.name}'")
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
        s, (search, setting_k) = trained[key], searches[key]
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


def _default_budget(predictor_path: Path, space: str, plain_ms: float, fraction: float, seed: int) -> float:
    """`fraction` of the plain network's predicted latency, moved into the range the predictor
    can reach in this space (a budget out of reach is refused by the search)."""
    from hwnas.search.latency import LatencyTerm, reachable_range
    from hwnas.space import get_space
    from predictor import load_predictor

    if not 0 < fraction < 1:
        raise UserError(f"--budget-fraction must lie in (0, 1), got {fraction}")
    term = LatencyTerm(load_predictor(predictor_path), get_space(space))
    lo, hi = reachable_range(term, seed=seed)
    return float(min(max(plain_ms * fraction, lo * 1.08), hi))


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
