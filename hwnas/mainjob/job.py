"""The main job, steps 1-7, from one `MainJobConfig` (what `hwnas run` and `make demo` run).

1. profile sampled architectures of the space on the target into `OUT/profile.db`;
2. re-measure some in a child process (the repeatability floor must not share the
   profiler's process);
3. fit the latency predictor and its baselines, calibrate it on relaxed encodings;
4. predict fresh architectures never profiled and measure them, raw and drift-corrected
   (measured x the predictor's reference baseline / the reference figure of their own
   rounds, predictor/drift.py: the host runs faster or slower between profile and check);
5-7. search twice, train both, export and measure both (`hwnas.mainjob.deploy_steps`);
then summary.json, summary.md and report.html. Every step is resumable: run it again and
the store continues where it stopped, finished sub-runs are reused.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas import devices, rundir
from hwnas.data.datasets import space_for_data
from hwnas.mainjob.children import Child
from hwnas.mainjob.config import IDENTITY, MAIN_KIND, MainJobConfig
from hwnas.mainjob.deploy_steps import deploy_steps, step
from hwnas.mainjob.figures import plot_scatter
from hwnas.mainjob.report import summary_markdown, write_report
from hwnas.mainjob.summary import describe_repeat, finite, fresh_table_lines
from hwnas.nets.onnx_export import export_onnx
from hwnas.nets.profile_source import SpaceCandidates
from hwnas.search.predictor_check import calibrate_predictor
from hwnas.space import get_space, sample_nth, save_architecture
from hwnas.space.encoding import encode
from predictor import (
    ProfileQuery,
    build_header,
    fit_predictor,
    load_predictor,
    load_profiles,
    render_report,
    save_predictor,
    usable_architectures,
)
from predictor.baselines import BASELINES
from predictor.dataset import min_samples, samples_rule
from predictor.drift import compare, predictor_baseline
from predictor.transfer import transfer_predictor
from profiling.repeat import repeat_measurements
from profiling.runner import ProfileSettings, run_profile
from profiling.store import ProfileStore
from targets.basics import UserError, atomic_write_text
from targets.registry import load_target
from targets.spec import TargetSpec
from targets.timing import measure_onnx

FRESH_SEED_OFFSET = 1_000_003  # fresh architectures come from another stream than the profile
TOP_UP_FACTOR = 3  # step 1 profiles up to this many x --samples to reach the fit's floor
REPEAT_KEYS = ("process", "measured", "failed", "within_5pct", "within_10pct", "median_abs_pct", "normalised", "error")


def _check(cfg: MainJobConfig) -> MainJobConfig:
    """Bad input refused before anything is written; the dataset filled in."""
    if cfg.samples < min_samples(cfg.init is not None):
        raise UserError(f"--samples is {cfg.samples}: {samples_rule()}")
    if cfg.max_samples is not None and cfg.max_samples < cfg.samples:
        raise UserError(f"--max-samples {cfg.max_samples} is below --samples {cfg.samples}; raise it or drop it")
    cfg = cfg.resolved()
    if cfg.dataset is not None:  # profile, fit and search the space the data needs (its channels, classes)
        space = space_for_data(cfg.dataset, get_space(cfg.space))
        if space.name != cfg.space:
            print(f"space '{space.name}': {space.description}, from dataset {cfg.dataset!r}", flush=True)
            cfg = replace(cfg, space=space.name)
    if cfg.init is not None:  # refused now, not after profiling: the profiles are of cfg.space
        fitted = load_predictor(cfg.init).header
        if fitted.get("space_key") != get_space(cfg.space).key:
            raise UserError(
                f"--init {cfg.init}: fitted on space '{fitted.get('space_name')}', but this run profiles "
                f"'{cfg.space}' (the space for its data); --init needs a predictor of '{cfg.space}': drop "
                f"--init to fit one from scratch (--samples >= {min_samples(False)})"
            )
    if cfg.deploy:
        devices.resolve(cfg.device, cfg.precision)  # a device that is not there: refused now
    new = cfg.to_json()
    rundir.prepare(
        cfg.out, MAIN_KIND, lambda old: rundir.key_diffs(old, new, [k for k in IDENTITY if k in old]),
        force=cfg.force, on_same="reuse", resume_allowed=False,
        accept_bare=lambda out: (out / "profile.db").is_file(),
    )  # fmt: skip
    return cfg


def run_main_job(cfg: MainJobConfig) -> dict[str, Any]:
    """Run (or continue) the main job in `cfg.out`; its summary (also summary.json)."""
    cfg = _check(cfg)
    init = load_predictor(cfg.init) if cfg.init is not None else None
    out = cfg.out
    steps_total = 7 if cfg.deploy else 4
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    spec = load_target(cfg.target)
    source = SpaceCandidates(cfg.space)
    summary: dict[str, Any] = {
        "space": cfg.space, "target": spec.name, "seed": cfg.seed, "dataset": cfg.dataset, "steps": {}
    }  # fmt: skip
    rundir.write_config(out, cfg.to_json())
    (out / "summary.json").unlink(missing_ok=True)  # written again when this run finishes
    t_total = time.perf_counter()
    _profile(cfg, spec, source, summary, steps_total)
    _remeasure(cfg, spec, summary, steps_total)
    result, ds = _fit(cfg, spec, source, init, summary, steps_total)
    plot = _fresh(cfg, spec, source, result, ds, summary, steps_total)
    if cfg.deploy:
        deploy_steps(cfg, spec, out / "predictor.pt", summary, 5, steps_total)
    summary["steps"]["total"] = time.perf_counter() - t_total
    summary = finite(summary)
    rundir.write_summary(out, summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    report = write_report(out)
    plot_name = f", {plot.name}" if plot is not None else ""
    print(f"\nrun directory {out}: {report.name}, summary.md, summary.json, profile.db, predictor.pt{plot_name}")
    print(f"open {report.resolve()} in a browser ({summary['steps']['total']:.0f} s in all)")
    return summary


def _profile(cfg: MainJobConfig, spec: TargetSpec, source: SpaceCandidates, summary: dict[str, Any], n: int) -> None:
    """Step 1: profile `cfg.samples` architectures, then more (up to `cfg.max_samples`) while
    fewer than the fit needs are usable: failed and unstable rows do not count."""
    t = step(f"1/{n} profile {cfg.samples} architectures of '{cfg.space}' on '{spec.name}'")
    db = cfg.out / "profile.db"
    need = min_samples(cfg.init is not None)
    cap = cfg.max_samples if cfg.max_samples is not None else TOP_UP_FACTOR * cfg.samples
    query = fit_query(cfg)
    settings = ProfileSettings(seed=cfg.seed, progress=cfg.progress)
    with ProfileStore(db) as store:
        prof = run_profile(source, spec, store, cfg.samples, settings=settings)
    written, wanted = prof.written, cfg.samples
    usable = usable_architectures(db, spec.cli_ref, query)
    while usable < need and prof.done_after < cap:
        # profile as many more as this store's usable share says are missing, with a margin
        share = max(usable / max(prof.done_after, 1), 0.1)
        wanted = min(cap, prof.done_after + math.ceil(1.2 * (need - usable) / share) + 4)
        print(
            f"   {usable} of {prof.done_after} profiled architectures are usable for the fit (it needs "
            f"{need}; the rest failed or were flagged unstable: a busy host): profiling up to {wanted}"
        )
        with ProfileStore(db) as store:
            prof = run_profile(source, spec, store, wanted, settings=settings)
        written += prof.written
        usable = usable_architectures(db, spec.cli_ref, query)
    print(
        f"   {written} measured now, {prof.done_after} in the store, {usable} usable for the fit "
        f"({time.perf_counter() - t:.0f} s)"
    )
    if usable < need:
        raise UserError(
            f"{db}: only {usable} of {prof.done_after} profiled architectures are usable for the fit, which "
            f"needs {need} (the rest failed or were flagged unstable while the host was busy); run the same "
            f"command again at a quieter moment (the store is kept and extended), raise --max-samples "
            f"above {cap}, or pass --include-unstable to fit on the unstable rows too"
        )
    summary["profile"] = {"written": written, "in_store": prof.done_after, "usable": usable, "wanted": wanted}
    summary["steps"]["profile"] = time.perf_counter() - t


def fit_query(cfg: MainJobConfig) -> ProfileQuery:
    """What step 3 fits on (and step 1 counts)."""
    return ProfileQuery(
        space=cfg.space, seed=cfg.seed, min_samples=min_samples(cfg.init is not None),
        include_unstable=cfg.include_unstable,
    )  # fmt: skip


def remeasure_child(db: Path, target: str, n: int, seed: int) -> dict[str, Any]:
    """`hwnas db repeat` of the main job, run in a child process: the report as a dict."""
    if not db.exists():
        raise UserError(f"no profile store at {db}; create one with hwnas profile")
    with ProfileStore(db) as store:
        binding = store.space_binding()
        if binding is None:
            raise UserError(f"profile store {db} holds no measurements; run hwnas profile")
        report = repeat_measurements(
            SpaceCandidates(binding["space_name"]), load_target(target), store, n, seed=seed, progress=False
        )
    return report.to_dict()


def remeasure_in_child(db: Path, target: str, n: int, seed: int, log: Path) -> dict[str, Any]:
    """The re-measurement in a new process; its report, or {"error": ...} if it failed."""
    child = Child(remeasure_child, {"db": db, "target": target, "n": n, "seed": seed}, log)
    print(f"   re-measuring in process {child.pid} (not this one, {os.getpid()})", flush=True)
    try:
        data = child.result()
    except UserError as exc:
        return {"process": child.pid, "measured": 0, "failed": None, "error": str(exc)}
    log.unlink(missing_ok=True)
    data["process"] = child.pid
    return data


def _remeasure(cfg: MainJobConfig, spec: TargetSpec, summary: dict[str, Any], n: int) -> None:
    t = step(
        f"2/{n} re-measure {cfg.repeat} architectures in a new process (`hwnas db repeat`), "
        "for the measurement's own repeatability"
    )
    if cfg.repeat <= 0:
        return
    rep = remeasure_in_child(cfg.out / "profile.db", cfg.target, cfg.repeat, cfg.seed, cfg.out / "repeat.log")
    for line in describe_repeat(rep):
        print("   " + line)
    print(f"   ({time.perf_counter() - t:.0f} s)")
    summary["repeat"] = {k: rep.get(k) for k in REPEAT_KEYS}
    summary["repeat"]["items"] = [
        {"old_ms": i.get("old_ms"), "new_ms": i.get("new_ms")} for i in rep.get("items") or []
    ]
    summary["steps"]["re-measure"] = time.perf_counter() - t


def _fit(
    cfg: MainJobConfig, spec: TargetSpec, source: SpaceCandidates, init: Any, summary: dict[str, Any], n: int
) -> tuple[Any, Any]:
    t = step(f"3/{n} fit the latency predictor (MLP) and baselines; score on held-out architectures")
    ds = load_profiles(cfg.out / "profile.db", spec.cli_ref, fit_query(cfg))
    if init is not None:
        result = transfer_predictor(init, ds, baselines=BASELINES, seed=cfg.seed, init_path=str(cfg.init))
    else:
        result = fit_predictor(ds, seed=cfg.seed, progress=cfg.progress)
    # The search asks the predictor about relaxed encodings: calibrate it there, as `predictor fit` does.
    calibration = calibrate_predictor(result.model, source.space, seed=cfg.seed)
    header = build_header(result.model, ds, result.report)
    header["relaxed_correction"] = calibration
    save_predictor(cfg.out / "predictor.pt", result.model, header)
    print(render_report(result.report))
    print(
        f"   relaxed encodings calibrated on {calibration['n_points']} relaxations: mean gap "
        f"{100 * calibration['val_mean_gap_before']:+.1f} % -> {100 * calibration['val_mean_gap_after']:+.1f} % "
        "(one-hot predictions unchanged)"
    )
    summary["predictor_test"] = result.report["test"]
    summary["steps"]["fit predictor"] = time.perf_counter() - t
    return result, ds


def _fresh(
    cfg: MainJobConfig, spec: TargetSpec, source: SpaceCandidates, result: Any, ds: Any, summary: dict[str, Any], n: int
) -> Path | None:
    """Step 4; the predicted-vs-measured plot (None where it could not be drawn)."""
    t = step(f"4/{n} predict {cfg.fresh} fresh architectures, then measure them")
    fresh_dir = cfg.out / "fresh"
    archs = [sample_nth(source.space, cfg.seed + FRESH_SEED_OFFSET, i) for i in range(cfg.fresh)]
    paths = []
    for i, arch in enumerate(archs):
        save_architecture(arch, fresh_dir / f"{i:03d}-{arch.hash[:10]}.json")
        paths.append(export_onnx(arch, fresh_dir / f"{i:03d}.onnx", batch_size=spec.batch_size))
    with torch.no_grad():
        predicted = result.model(torch.from_numpy(np.stack([encode(a) for a in archs]))).numpy()
    measurements = measure_onnx(paths, spec)
    measured = np.array([m.latency_ms for m in measurements])
    refs = [m.reference_ms for m in measurements]
    baseline = predictor_baseline(result.model.header or {})
    fresh = compare(predicted, measured, refs, baseline)
    for p in paths:
        p.unlink()
    lines, items = fresh_table_lines(archs, predicted, measured, refs, baseline, fresh)
    for line in lines:
        print("   " + line)
    summary["fresh"] = {
        "raw": fresh["raw"],
        "drift-corrected": fresh["drift-corrected"],
        "predictor_reference_ms": baseline,
        "note": fresh["note"],
        "items": items,
    }
    test_idx = ds.indices("test")
    summary["scatter"] = {
        "test": [
            [float(m), float(p)]
            for m, p in zip(ds.latency_ms[test_idx], result.model.predict_ms(ds.X[test_idx]), strict=True)
        ]
    }
    plot = plot_scatter(summary, cfg.out / "predicted_vs_measured.png")
    summary["steps"]["fresh architectures"] = time.perf_counter() - t
    return plot
