#!/usr/bin/env python3
"""Does profiling the search's own architectures fix the predictor where the search goes?

Leave-one-seed-out over an issue-18 sweep (bench/issue18_sweep.sh): copy the predictor's
profile store, add as profile rows the measured sweep architectures of the *other* seeds
(latency and reference = medians of the `measure` passes, in the store's fingerprint, so the
loader's reference correction applies), refit the MLP (`fit_predictor`, seed 0), and compare
its predictions on the held-out seed's architectures with their measurement (reference-
corrected to the predictor's baseline), against a refit on the store alone.

    python bench/predictor_coverage_check.py STORE.db BASELINE_MS LIST PASS.json [PASS.json ...]

LIST: the architecture.json paths measured (remeasure.list), in the order of each PASS. Paths
are grouped by their sweep folder (sweep, sweep-s1, ...); `OLD/NEW` folders are both used.
A bench experiment: rows are written with sqlite3 into copies in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from hwnas.space import load_architecture
from hwnas.space.encoding import encode
from predictor import fit_predictor, load_profiles

torch.set_num_threads(1)
store, baseline, listing, *pass_files = sys.argv[1:]
base = float(baseline)
archs = Path(listing).read_text().split()
passes = [json.loads(Path(p).read_text()) for p in pass_files]
meas = {}
for i, a in enumerate(archs):
    raw = statistics.median(p[i]["latency_ms"] for p in passes)
    ref = statistics.median(p[i]["reference_ms"] for p in passes)
    meas[a] = (raw, ref, raw * base / ref)


def group(a: str) -> str:
    return Path(a).parent.parent.name  # sweep, sweep-s1, ...


def store_with(extra: list[str], path: Path) -> int:
    shutil.copy(store, path)
    con = sqlite3.connect(path)
    cols = [d[1] for d in con.execute("pragma table_info(measurements)")]
    row0 = con.execute("select * from measurements where kind='profile' and status='ok' limit 1").fetchone()
    tmpl = dict(zip(cols, row0, strict=True))
    seen: set[str] = set()
    for a in extra:
        arch = load_architecture(a)
        if arch.hash in seen:
            continue
        seen.add(arch.hash)
        row = {k: v for k, v in tmpl.items() if k != "id"}
        raw, ref, _ = meas[a]
        row.update(arch_hash=arch.hash, arch_json=arch.to_json(None), encoding=json.dumps(encode(arch).tolist()),
                   latency_ms=raw, median_ms=raw, p10_ms=raw, min_ms=raw, reference_ms=ref, stable=1)
        con.execute(f"insert into measurements ({','.join(row)}) values ({','.join('?' * len(row))})", list(row.values()))
    con.commit()
    con.close()
    return len(seen)


def predict(model: torch.nn.Module, a: str) -> float:
    with torch.no_grad():
        return float(model(torch.from_numpy(encode(load_architecture(a)))[None]).reshape(-1)[0])


with tempfile.TemporaryDirectory() as tmp:
    for held in sorted({group(a) for a in archs}):
        test = [a for a in archs if group(a) == held]
        for name, extra in (("store only", []), ("+ the other seeds' sweep architectures", [a for a in archs if group(a) != held])):
            db = Path(tmp) / f"{held}-{len(extra)}.db"
            n = store_with(extra, db)
            fit = fit_predictor(load_profiles(db, "ort-cpu"), seed=0, baselines=())
            pred = {a: predict(fit.model, a) for a in test}
            errs = [pred[a] / meas[a][2] - 1 for a in test]
            print(f"{held}, {name} (+{n}): |error| median {statistics.median(map(abs, errs)):.1%}, "
                  f"max {max(map(abs, errs)):.1%}")
            for folder in sorted({str(Path(a).parent.parent) for a in test}):
                seq = [(Path(a).parent.name, pred[a]) for a in test if str(Path(a).parent.parent) == folder]
                print(f"    {folder}: " + ", ".join(f"{r} {v:.3f}" for r, v in seq))
