"""The trade-off study's networks: the searched ones, the FLOPs-aware one matched to the
latency-aware cut, a random baseline spanning their predicted latency, and DARTS-V2's cells.

Every choice uses predictions and the searches' own validation halves, never the test set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.mainjob.tradeoff_study import Study, mixed_nth, run_name, summary_of
from hwnas.space import Architecture, SpaceConfig, load_architecture
from hwnas.space.encoding import encode
from targets.basics import UserError, atomic_write_text

DARTS_V2 = Path(__file__).resolve().parents[2] / "examples" / "darts_v2_cifar.json"


def flops_matching(st: Study) -> dict[str, Any] | None:
    """The FLOPs weight whose network's FLOPs cut (vs weight 0) is closest to the latency-aware
    network's at `match_weight`; None until those searches have finished."""
    cfg = st.cfg

    def arch(name: str) -> Architecture | None:
        p = st.search_dir(name) / "architecture.json"
        return load_architecture(p) if p.is_file() and summary_of(st.search_dir(name)) else None

    a0, aw = arch(run_name("lat", 0.0)), arch(run_name("lat", cfg.match_weight))
    flops = {w: arch(run_name("flops", w)) for w in cfg.flops_weights}
    if a0 is None or aw is None or any(a is None for a in flops.values()):
        return None
    m0 = st.macs(a0)
    target_cut = 1 - st.macs(aw) / m0
    cuts = {w: 1 - st.macs(a) / m0 for w, a in flops.items() if a is not None}
    best = min(cuts, key=lambda w: (abs(cuts[w] - target_cut), w))
    return {"match_weight": cfg.match_weight, "latency_cut": target_cut, "flops_cuts": {f"{w:g}": c for w, c in cuts.items()},
            "chosen_flops_weight": best, "rule": "FLOPs cut (1 - MACs / MACs of weight 0) closest to the latency-aware "
            "network's at match_weight; analytic MACs of the derived architectures, no test data"}  # fmt: skip


def darts_v2(space: SpaceConfig) -> tuple[Architecture | None, str]:
    """DARTS-V2's cells in `space`: the example file itself for `cifar`; elsewhere the same
    cells and chained connections at the depth choice nearest to its 6 (None if they do not fit)."""
    data = json.loads(DARTS_V2.read_text())
    exact = Architecture.from_dict(data, where=str(DARTS_V2))
    if exact.space.key == space.key:
        return exact, "DARTS-V2 (examples/darts_v2_cifar.json)"
    stages = []
    depth = min(space.depth_choices, key=lambda d: (abs(d - 6), -d))
    for s in data["stages"]:
        stages.append({**s, "depth": depth, "connections": s["connections"][:depth]})
    try:
        arch = Architecture.from_dict({**data, "space": space.to_dict(), "stages": stages}, where="DARTS-V2 analogue")
    except UserError as exc:
        return None, f"DARTS-V2 does not fit space '{space.name}' ({exc}); skipped"
    return arch, f"DARTS-V2 cells, depth {depth} per stage (the {space.name} analogue of examples/darts_v2_cifar.json)"


def random_baseline(st: Study, lo: float, hi: float) -> list[tuple[Architecture, float]]:
    """`random_count` architectures of a seeded stream (`mixed_nth`: half uniform, half biased
    to the fast end), picked so that their predicted latencies step evenly from `lo` to `hi`
    (the nearest unused one to each step)."""
    cfg = st.cfg
    term = st.term()
    pool = [mixed_nth(st.space, cfg.seed + 1000, i) for i in range(cfg.random_pool)]
    ms = term.batch_ms(np.stack([encode(a) for a in pool]))
    used: set[int] = set()
    out = []
    for t in np.linspace(lo, hi, cfg.random_count):
        order = np.argsort(np.abs(ms - t))
        i = next(int(j) for j in order if int(j) not in used)
        used.add(i)
        out.append((pool[i], float(ms[i])))
    return out


def collect_networks(st: Study) -> list[dict[str, Any]]:
    """Every network of the study that exists so far (finished searches, the matched FLOPs
    one, the random baseline once the searched range is known, DARTS-V2)."""
    cfg = st.cfg
    nets: list[dict[str, Any]] = []

    def searched(name: str, kind: str, setting: str, short: str, **extra: Any) -> None:
        run = st.search_dir(name)
        s = summary_of(run)
        if s is None or not (run / "architecture.json").is_file():
            return
        arch = load_architecture(run / "architecture.json")
        nets.append({"name": name, "kind": kind, "setting": setting, "short": short, "arch": arch,
                     "search_val_accuracy": s.get("val_accuracy"), "search_dir": str(run.relative_to(st.out)), **extra})  # fmt: skip

    for w in cfg.weights:
        kind = "plain" if w == 0 else "latency"
        searched(run_name("lat", w), kind, f"latency weight {w:g}", f"w{w:g}")
    match = flops_matching(st)
    if match is not None:
        w = match["chosen_flops_weight"]
        searched(run_name("flops", w), "flops", f"FLOPs weight {w:g} (matched at latency weight {cfg.match_weight:g})", f"F{w:g}")
    for frac in cfg.budget_fracs:
        run = st.search_dir(f"budget-{frac:g}")
        s = summary_of(run)
        if s is not None:
            b = float(s["latency_budget_ms"])
            searched(f"budget-{frac:g}", "budget", f"budget {b:.4g} ms ({frac:g} x weight 0)", f"B{frac:g}", budget_ms=b)
    term = st.term()
    for n in nets:
        n["predicted_ms"] = term.derived_ms(n["arch"])
    expected = len(cfg.weights) + len(cfg.budget_fracs) + 1
    if len(nets) == expected:  # the range is known once every search has finished
        lat = [n["predicted_ms"] for n in nets]
        for k, (arch, ms) in enumerate(random_baseline(st, min(lat), max(lat))):
            nets.append({"name": f"random-{k}", "kind": "random", "setting": "uniform sample, picked by predicted latency",
                         "short": f"r{k}", "arch": arch, "predicted_ms": ms})  # fmt: skip
    else:
        st.notes.append(f"{len(nets)} of {expected} searched networks finished: the random baseline waits for all")
    arch, what = darts_v2(st.space)
    if arch is None:
        st.notes.append(what)
    else:
        nets.append({"name": "darts-v2", "kind": "darts-v2", "setting": what, "short": "D2", "arch": arch,
                     "predicted_ms": term.derived_ms(arch)})  # fmt: skip
    for n in nets:
        h = n["arch"].hash
        n["arch_hash"] = h
        path = st.arch_file(h)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, n["arch"].to_json() + "\n")
    return nets
