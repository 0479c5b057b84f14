"""The accuracy-latency trade-off study, in resumable parts (`bench/tradeoff.py` is its command line).

One space, one dataset, one target, one latency predictor fitted on that target's profiles:

* searches at latency weight 0 and a ladder of weights, two hard budgets (fractions of the
  weight-0 network's predicted latency), and FLOPs-aware searches (`hwnas.search.flops`: the
  same relative penalty on analytic multiply-adds) of which the one whose FLOPs cut is closest
  to the latency-aware cut at `match_weight` is kept. Every choice uses predictions and the
  search's own validation half, never the test set;
* a random baseline: architectures of the same space picked to span the searched networks'
  predicted latency range; DARTS-V2's cells (`examples/darts_v2_cifar.json`, or its analogue
  at the nearest depth in a smaller space);
* every network trained with one recipe and seed; all measured on the target in one
  interleaved run (random-weight exports: latency depends on the architecture alone), and on
  a CPU target too when the target is another one;
* results.json / results.md / tradeoff.png (the table, the goals, the Pareto front).

Parts: `predictor`, `search`, `train`, `measure`, `report` (each ends with a report of what
exists), or `all`. Every search and training is a run directory (`hwnas.rundir`): finished ones
are reused, interrupted ones resumed, so a part stopped at its time limit (`deadline_s`) goes
on where it stopped when run again. Each part's record (dates, command, wall time) goes to
`parts/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hwnas.deploy.export import export_for_target, measure_exports
from hwnas.mainjob import tradeoff_report as R
from hwnas.mainjob.tradeoff_networks import collect_networks, flops_matching
from hwnas.mainjob.tradeoff_pool import Pool
from hwnas.mainjob.tradeoff_study import (
    MixedCandidates,
    Study,
    TradeoffConfig,
    macs_of,
    now,
    run_name,
    summary_of,
    with_optional_fields,
)
from hwnas.nets.network import build_network
from hwnas.search import SearchConfig
from hwnas.search.config import stored_search
from hwnas.search.flops import FLOPS_TARGET, fit_flops_predictor
from hwnas.space import (
    sample_nth,
)
from hwnas.train.evaluate import count_params
from hwnas.train.recipe import TrainConfig
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    fit_predictor,
    load_profiles,
    save_predictor,
)
from profiling.runner import ProfileSettings, run_profile
from profiling.store import ProfileStore
from targets.basics import UserError, atomic_write_text, strict_json
from targets.protocol import Protocol
from targets.registry import load_target

PARTS = ("predictor", "search", "train", "measure", "report")
# -- part: predictor ----------------------------------------------------------------------------------
def part_predictor(st: Study) -> dict[str, Any]:
    """Profile the space on the target and fit the latency MLP (unless one was given); fit
    the FLOPs model on analytic counts of sampled architectures. Both reused when present."""
    cfg, info = st.cfg, {}
    folder = st.out / "predictor"
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.predictor is None and not st.latency_predictor.is_file():
        spec = load_target(cfg.target)
        protocol = Protocol.for_target(spec)
        if cfg.profile_protocol:
            protocol = replace(protocol, **cfg.profile_protocol)
        db = folder / "profile.db"
        t = time.perf_counter()
        with ProfileStore(db) as store:
            settings = ProfileSettings(seed=cfg.seed, progress=False, protocol=protocol)
            run_profile(MixedCandidates(cfg.space), spec, store, cfg.profile_samples, settings=settings)
        info["profile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        query = ProfileQuery(include_unstable=cfg.profile_include_unstable, seed=cfg.seed)
        ds = load_profiles(db, spec.name, query)
        res = fit_predictor(ds, cfg=MLPConfig(**cfg.predictor_mlp), baselines=("lut",), seed=cfg.seed)
        save_predictor(st.latency_predictor, res.model, build_header(res.model, ds, res.report))
        info["fit_s"] = time.perf_counter() - t
        info["latency_predictor_test"] = (res.report.get("test") or {}).get("mlp")
        print(f"   latency predictor: {cfg.profile_samples} profiles, test "
              f"{json.dumps(info['latency_predictor_test'], default=str)}", flush=True)  # fmt: skip
    if not st.flops_predictor.is_file():
        t = time.perf_counter()
        archs = [sample_nth(st.space, cfg.seed + 1, i) for i in range(cfg.flops_samples)]
        info["flops_predictor_test"] = fit_flops_predictor(
            st.space, [(a, macs_of(a)) for a in archs], st.flops_predictor, seed=cfg.seed
        )
        info["flops_fit_s"] = time.perf_counter() - t
        print(f"   FLOPs model: test {json.dumps(info['flops_predictor_test'], default=str)}", flush=True)
    return info


# -- part: search --------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    h.update(path.read_bytes())
    return h.hexdigest()


def search_config(st: Study, predictor: Path, target: str | None, **latency: Any) -> SearchConfig:
    kw, missing = with_optional_fields(SearchConfig, st.cfg.search, device=st.cfg.device, precision=st.cfg.precision)
    if missing:
        note = f"SearchConfig has no {', '.join(missing)} field yet: searches ran with its default device"
        if note not in st.notes:
            st.notes.append(note)
    return SearchConfig(space=st.cfg.space, dataset=st.cfg.dataset, predictor=str(predictor.resolve()),
                        seed=st.cfg.seed, target=target, **{**kw, **latency})  # fmt: skip


def search_state(run: Path, cfg: SearchConfig) -> str:
    """'done' (finished, same config and predictor), 'resume' (same, unfinished), 'new'
    (absent; one of another configuration is removed: the study owns its sub-runs)."""
    if not run.exists():
        return "new"
    try:
        doc = json.loads((run / "config.json").read_text())
        same = stored_search(doc["search"]) == cfg.to_json() and doc["resolved"].get("predictor_sha256") == _sha256(
            Path(str(cfg.predictor))
        )
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        shutil.rmtree(run)
        return "new"
    return "done" if (run / "summary.json").is_file() and (run / "architecture.json").is_file() else "resume"


def search_plan(st: Study) -> dict[str, SearchConfig]:
    """The searches that do not depend on another's result: the weight ladder (latency) and
    the FLOPs candidates."""
    cfg = st.cfg
    plan = {run_name("lat", w): search_config(st, st.latency_predictor, cfg.target, latency_weight=float(w))
            for w in cfg.weights}  # fmt: skip
    if 0.0 not in cfg.weights:
        raise UserError("the weight ladder must hold 0 (the plain search every comparison starts from)")
    for w in cfg.flops_weights:
        plan[run_name("flops", w)] = search_config(st, st.flops_predictor, FLOPS_TARGET, latency_weight=float(w))
    return plan


def budget_plan(st: Study, plain_ms: float) -> dict[str, SearchConfig]:
    """The hard budgets, fractions of the weight-0 network's predicted latency, kept inside
    the predictor's reachable range."""
    from hwnas.search.discrete import reachable_range

    term = st.term()
    lo, hi = reachable_range(term, seed=st.cfg.seed)
    plan = {}
    for frac in st.cfg.budget_fracs:
        budget = float(f"{min(max(frac * plain_ms, lo * 1.06), hi * 0.94):.4g}")
        plan[f"budget-{frac:g}"] = search_config(st, st.latency_predictor, st.cfg.target, latency_budget_ms=budget)
    return plan


def part_search(st: Study) -> dict[str, Any]:
    """Every search, `workers` at once; the budgets start once weight 0 has finished."""
    cfg = st.cfg
    for p in (st.latency_predictor, st.flops_predictor):
        if not p.is_file():
            raise UserError(f"no predictor at {p}: run --part predictor first")
    plan = search_plan(st)
    done: dict[str, dict[str, Any]] = {}
    pool: Pool | None = None
    deadline = time.time() + cfg.deadline_s if cfg.deadline_s else None

    def start(name: str, scfg: SearchConfig) -> None:
        nonlocal pool
        run = st.search_dir(name)
        state = search_state(run, scfg)
        if state == "done":
            done[name] = json.loads((run / "summary.json").read_text())
            return
        if pool is None:
            pool = Pool(cfg.workers, cfg.threads, deadline)
        print(f"   search {name}: {'resuming' if state == 'resume' else 'starting'}", flush=True)
        pool.submit(name, "search", {"cfg": scfg, "run": run, "resume": state == "resume"},
                    st.out / "logs" / f"search-{name}.log")  # fmt: skip

    plain = run_name("lat", 0.0)
    start(plain, plan[plain])
    for name, scfg in plan.items():
        if name != plain:
            start(name, scfg)
    budgets_started = False
    stopped = False
    while True:
        if not budgets_started and plain in done:
            budgets_started = True
            for name, scfg in budget_plan(st, float(done[plain]["predicted_latency_ms"])).items():
                start(name, scfg)
        if pool is None or not pool.pending:
            break
        got = pool.next_done()
        if got is None:
            stopped = True
            break
        name, summary = got
        done[name] = summary
        print(f"   search {name}: done, predicted {summary.get('predicted_latency_ms'):.4g}, "
              f"val acc {summary.get('val_accuracy'):.3f} ({summary.get('seconds_total', 0):.0f} s)", flush=True)  # fmt: skip
    if pool is not None and not stopped:
        pool.close()
    return {"finished": sorted(done), "stopped_at_deadline": stopped}


# -- part: train ----------------------------------------------------------------------------------------
def train_config(st: Study) -> TrainConfig:
    kw, missing = with_optional_fields(TrainConfig, st.cfg.train, device=st.cfg.device, precision=st.cfg.precision)
    if missing:
        note = f"TrainConfig has no {', '.join(missing)} field yet: trainings ran with its default device"
        if note not in st.notes:
            st.notes.append(note)
    return TrainConfig(dataset=st.cfg.dataset, seed=st.cfg.seed, **kw)


def train_state(run: Path, arch_hash: str, tcfg: TrainConfig) -> str:
    try:
        old = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return "new" if not run.exists() else "other"
    if old.get("arch_hash") != arch_hash or old.get("config") != asdict(tcfg):
        return "other"
    return "done" if (run / "summary.json").is_file() else "resume"


def part_train(st: Study) -> dict[str, Any]:
    """Train every network (one per architecture), slowest predicted first, `workers` at once."""
    cfg = st.cfg
    tcfg = train_config(st)
    nets = collect_networks(st)
    seen: set[str] = set()
    todo = []
    for n in sorted(nets, key=lambda n: -n["predicted_ms"]):
        h = n["arch_hash"]
        if h in seen:
            continue
        seen.add(h)
        state = train_state(st.train_dir(h), h, tcfg)
        if state != "done":
            todo.append((n, state))
    if not todo:
        return {"trained": 0}
    pool = Pool(cfg.workers, cfg.threads, time.time() + cfg.deadline_s if cfg.deadline_s else None)
    for n, state in todo:
        h = n["arch_hash"]
        pool.submit(h[:12], "train", {"source": st.arch_file(h), "cfg": tcfg, "run": st.train_dir(h),
                                      "resume": state == "resume", "force": state == "other"},
                    st.out / "logs" / f"train-{h[:12]}.log")  # fmt: skip
    finished = 0
    while pool.pending:
        got = pool.next_done()
        if got is None:
            return {"trained": finished, "stopped_at_deadline": True}
        finished += 1
        print(f"   train {got[0]}: test accuracy {got[1].get('test_accuracy', float('nan')):.3f} "
              f"({finished}/{len(todo)})", flush=True)  # fmt: skip
    pool.close()
    return {"trained": finished}


# -- part: measure --------------------------------------------------------------------------------------
def _export(st: Study, spec: Any, arch_hash: str, predictor: Path | None) -> Any:
    out = st.out / "export" / spec.name / arch_hash[:12]
    return export_for_target(st.arch_file(arch_hash), spec, out, predictor=predictor, force=True, seed=st.cfg.seed)


def part_measure(st: Study) -> dict[str, Any]:
    """Export every network's architecture for the target (and the CPU target) and time each
    target's set together in one interleaved run (latency does not depend on the weights)."""
    cfg = st.cfg
    nets = collect_networks(st)
    hashes = sorted({n["arch_hash"] for n in nets})
    if not hashes:
        return {"networks": 0}
    targets = [(cfg.target, st.latency_predictor)]
    if cfg.cpu_target and cfg.cpu_target != cfg.target:
        targets.append((cfg.cpu_target, cfg.cpu_predictor))
    info = {}
    for name, pred in targets:
        spec = load_target(name)
        t = time.perf_counter()
        exports = [_export(st, spec, h, pred) for h in hashes]
        t_export = time.perf_counter() - t
        cmps = measure_exports([e.onnx_path for e in exports], spec, [e.info["predicted_latency_ms"] for e in exports],
                               exports[0].info["reference_baseline_ms"])  # fmt: skip
        doc = {"target": spec.name, "date": now(), "networks": len(hashes), "export_s": t_export,
               "measure_s": time.perf_counter() - t - t_export,
               "results": {h: c.to_dict() for h, c in zip(hashes, cmps, strict=True)}}  # fmt: skip
        atomic_write_text(st.out / f"measure-{spec.name}.json", strict_json(doc, indent=2) + "\n")
        info[spec.name] = {k: doc[k] for k in ("networks", "export_s", "measure_s")}
        print(f"   measured {len(hashes)} networks on {spec.name} in one run ({doc['measure_s']:.0f} s)", flush=True)
    return info


# -- part: report ---------------------------------------------------------------------------------------
def collect_rows(st: Study) -> list[dict[str, Any]]:
    """One row per network with everything the table needs (None where not yet there)."""
    cfg = st.cfg
    nets = collect_networks(st)

    def measured(target: str | None) -> dict[str, Any]:
        try:
            return json.loads((st.out / f"measure-{target}.json").read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    meas = measured(cfg.target)
    cpu = measured(cfg.cpu_target) if cfg.cpu_target and cfg.cpu_target != cfg.target else {}
    tcfg = train_config(st)
    rows = []
    for n in nets:
        h = n["arch_hash"]
        run = st.train_dir(h)
        trained = summary_of(run) if train_state(run, h, tcfg) == "done" else None
        net = build_network(n["arch"])
        m, c = meas.get(h, {}), cpu.get(h, {})
        row = {k: v for k, v in n.items() if k != "arch"}
        row.update(
            test_accuracy=trained.get("test_accuracy") if trained else None,
            train_dir=str(run.relative_to(st.out)) if trained else None,
            params=count_params(net), macs=st.macs(n["arch"]),
            measured_ms=m.get("measured_ms"), corrected_ms=m.get("corrected_ms"), stable=m.get("stable", True),
            cpu_measured_ms=c.get("measured_ms"), cpu_predicted_ms=c.get("predicted_ms"),
        )  # fmt: skip
        R.budget_errors(row)
        rows.append(row)
    R.mark_pareto(rows)
    return rows


def part_report(st: Study) -> dict[str, Any]:
    """results.json, results.md and tradeoff.png from what the folder holds now."""
    cfg = st.cfg
    rows = collect_rows(st)
    cpu = cfg.cpu_target if cfg.cpu_target and cfg.cpu_target != cfg.target else None
    results = {
        "schema": "hwnas.tradeoff/1", "date": now(), "space": cfg.space, "dataset": cfg.dataset,
        "target": cfg.target, "cpu_target": cpu, "label": cfg.label, "config": cfg.to_json(),
        "flops_matching": flops_matching(st), "rows": rows, "goals": R.goals(rows),
        "cpu_transfer": R.cpu_transfer(rows), "random_range": R.random_range(rows), "notes": list(dict.fromkeys(st.notes)),
        "title": f"{cfg.space} / {cfg.dataset} on {cfg.target}" + (f" ({cfg.label})" if cfg.label else ""),
    }  # fmt: skip
    atomic_write_text(st.out / "results.json", strict_json(results, indent=2, default=str) + "\n")
    atomic_write_text(st.out / "results.md", R.markdown(results))
    png = R.plot(results, st.out / "tradeoff.png")
    done = sum(R.complete(r) for r in rows)
    print(f"   report: {len(rows)} networks, {done} trained and measured; {st.out / 'results.md'}"
          + (f", {png}" if png else ""), flush=True)  # fmt: skip
    return {"networks": len(rows), "complete": done, "plot": str(png) if png else None}


PART_FUNCTIONS = {"predictor": part_predictor, "search": part_search, "train": part_train,
                  "measure": part_measure, "report": part_report}  # fmt: skip


def run_parts(cfg: TradeoffConfig, parts: list[str], command: list[str] | None = None) -> dict[str, Any]:
    """Run the parts in order; each writes parts/<date>-<part>.json (command, dates, wall
    time, what it did), and a report of the folder follows the last one."""
    st = Study(cfg)
    st.check_identity()
    bad = [p for p in parts if p not in PART_FUNCTIONS]
    if bad:
        raise UserError(f"unknown part(s) {', '.join(bad)}; parts: {', '.join(PARTS)}, all")
    if parts[-1] != "report":
        parts = [*parts, "report"]
    records = {}
    for part in parts:
        t0, started = time.perf_counter(), now()
        print(f"\n== tradeoff: part {part}", flush=True)
        info = PART_FUNCTIONS[part](st)
        rec = {"part": part, "command": command, "started": started, "finished": now(),
               "wall_s": time.perf_counter() - t0, "result": info, "notes": list(dict.fromkeys(st.notes))}  # fmt: skip
        stamp = started.replace(":", "").replace("-", "")
        atomic_write_text(st.out / "parts" / f"{stamp}-{part}.json", strict_json(rec, indent=2, default=str) + "\n")
        records[part] = rec
        if isinstance(info, dict) and info.get("stopped_at_deadline"):
            print(f"   part {part} stopped at its time limit: run it again to go on", flush=True)
            if part != "report":
                part_report(st)
            break
    return records
