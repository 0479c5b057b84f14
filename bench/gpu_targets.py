"""The GPU session's check of torch-cuda-graph (issue #17), as one prepared script.

    python bench/gpu_targets.py                       # on the GPU machine, <= ~8 minutes
    python bench/gpu_targets.py --dry-run             # CPU check of the script (tiny, debug)

Every step is a separate `hwnas` process, as a user would run them:

1. `hwnas targets check TARGET --json`, twice: fingerprint keys must match across the two
   processes; the reference figures say how far two processes agree before profiling.
2. `hwnas profile` of N `cifar` architectures, the first part without `--overlap`, the
   rest with it (one store, one fingerprint: the second call continues the first), so the
   throughput (architectures/minute) of both is measured on the same target.
3. `hwnas db repeat -n R`: a later process re-measures stored architectures; the floor is
   how well a measurement predicts a later one (median and p90 |difference|, share within
   ±1/2/5 %).
4. `hwnas predictor fit --include-unstable` on the profiles (time-budgeted; unstable rows
   too, so a few flagged rows cannot stop the fit; their share is reported in 5.): the
   predictor's test metrics.
5. The store's rows: unstable share, latency range, SM clock readings (`clock_mhz`).

Writes `gpu_targets.json` (and each step's stdout/stderr) under `--out` (default `$OUT`,
else runs/bench/gpu-targets). Each step has a deadline within `--budget` seconds; a step
that fails or runs out of time is recorded and the rest is skipped, so the JSON is always
written. Exit code 0 when every step ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Steps:
    """Runs hwnas commands against one deadline, keeping every step's record."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.records: list[dict[str, Any]] = []
        self.failed = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def hwnas(self, name: str, *argv: str, reserve_s: float = 0.0) -> Any:
        """`python -m hwnas ARGV`; its stdout parsed as JSON (None when the step failed)."""
        record: dict[str, Any] = {"step": name, "argv": ["hwnas", *argv]}
        self.records.append(record)
        timeout = self.left() - reserve_s
        if self.failed or timeout < 5:
            record["skipped"] = "an earlier step failed" if self.failed else "out of time"
            self.failed = True
            return None
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "hwnas", *argv],
                capture_output=True, text=True, timeout=timeout, env=env, cwd=self.out,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            record.update(
                wall_s=round(time.monotonic() - t0, 2), error=f"timed out after {timeout:.0f} s"
            )
            (self.out / f"{name}.stderr").write_text(str(exc.stderr or ""))
            self.failed = True
            return None
        record.update(wall_s=round(time.monotonic() - t0, 2), returncode=proc.returncode)
        (self.out / f"{name}.stdout").write_text(proc.stdout)
        (self.out / f"{name}.stderr").write_text(proc.stderr)
        if proc.returncode != 0:
            record["error"] = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            self.failed = True
            return None
        try:
            return json.loads(proc.stdout)
        except ValueError:
            record["error"] = "stdout is not JSON"
            self.failed = True
            return None


def _floor(report: dict[str, Any]) -> dict[str, Any]:
    """How well a measurement predicts a later one (the floor no predictor beats)."""
    diffs = [abs(i["pct_diff"]) for i in report.get("items", []) if i.get("pct_diff") is not None]
    out: dict[str, Any] = {"n": len(diffs), "failed": report.get("failed")}
    if diffs:
        out.update(
            median_abs_pct=statistics.median(diffs),
            p90_abs_pct=_percentile(diffs, 90.0),
            max_abs_pct=max(diffs),
            within_1pct=sum(d <= 1 for d in diffs) / len(diffs),
            within_2pct=sum(d <= 2 for d in diffs) / len(diffs),
            within_5pct=sum(d <= 5 for d in diffs) / len(diffs),
        )
    out["normalised"] = report.get("normalised")
    return out


def _store_summary(db: Path, target: str) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(measurements)")}
        clock = "clock_mhz" if "clock_mhz" in cols else "NULL"
        rows = conn.execute(
            f"SELECT kind, status, latency_ms, stable, spread, {clock}, error "
            "FROM measurements WHERE target_name=?",
            (target,),
        ).fetchall()
    finally:
        conn.close()
    ok = [r for r in rows if r[0] == "profile" and r[1] == "ok"]
    lat = [float(r[2]) for r in ok if r[2] is not None]
    clocks = [float(r[5]) for r in rows if r[5] is not None]
    errors = [str(r[6]).splitlines()[0][:200] for r in rows if r[1] == "failed"]
    return {
        "profile_ok": len(ok),
        "profile_failed": sum(1 for r in rows if r[0] == "profile" and r[1] == "failed"),
        "unstable_share": (sum(1 for r in ok if r[3] == 0) / len(ok)) if ok else None,
        "latency_ms": {"min": min(lat), "median": statistics.median(lat), "max": max(lat)}
        if lat
        else None,
        "median_spread": statistics.median([float(r[4]) for r in ok if r[4] is not None])
        if ok
        else None,
        "clock_mhz": {
            "readings": len(clocks),
            "min": min(clocks),
            "median": statistics.median(clocks),
            "max": max(clocks),
        }
        if clocks
        else None,
        "failure_examples": errors[:5],
    }


def _check_gpu(target: str) -> str | None:
    """Why this target cannot run here (None: it can), without starting the pipeline."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if "cuda" in target and not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--target", default="torch-cuda-graph")
    ap.add_argument("--space", default="cifar")
    ap.add_argument("-n", "--samples", type=int, default=96, help="architectures to profile")
    ap.add_argument(
        "--plain", type=int, default=24, help="of which profiled without --overlap first"
    )
    ap.add_argument("--repeat", type=int, default=32, help="architectures re-measured later")
    ap.add_argument("--fit-budget", type=float, default=60.0, help="seconds for predictor fit")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for everything")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: $OUT, else runs/bench/gpu-targets"
    )
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="check the script on a CPU: --target debug --space tiny, small counts",
    )
    args = ap.parse_args(argv)
    if args.dry_run:
        args.target, args.space = "debug", "tiny"
        args.samples, args.plain, args.repeat, args.fit_budget = 60, 20, 8, 10.0
    if not 0 <= args.plain <= args.samples or args.repeat < 1:
        ap.error("need 0 <= --plain <= --samples and --repeat >= 1")
    out = args.out or Path(os.environ.get("OUT") or ROOT / "runs" / "bench" / "gpu-targets")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = work / "profile.db"
    report: dict[str, Any] = {
        "target": args.target,
        "space": args.space,
        "samples": args.samples,
        "dry_run": args.dry_run,
        "python": sys.version.split()[0],
    }
    started = time.monotonic()
    why = _check_gpu(args.target)
    steps = Steps(work, args.budget)
    if why is not None:
        report["error"] = f"{args.target} cannot run here: {why}"
        steps.failed = True
    else:
        os.environ.setdefault("HWNAS_CACHE_DIR", str(work / "cache"))
        checks = [
            steps.hwnas(f"check{i}", "targets", "check", args.target, "--json") for i in (1, 2)
        ]
        if all(checks):
            a, b = checks
            report["check"] = {
                "fingerprint": a["fingerprint"],
                "same_key_in_two_processes": a["fingerprint_key"] == b["fingerprint_key"],
                "reference_ms": [a["reference"]["latency_ms"], b["reference"]["latency_ms"]],
                "reference_diff_pct": abs(
                    b["reference"]["latency_ms"] / a["reference"]["latency_ms"] - 1
                )
                * 100,
                "reference_spread": [a["reference"]["spread"], b["reference"]["spread"]],
                "reference_clock_mhz": [
                    a["reference"].get("clock_mhz"),
                    b["reference"].get("clock_mhz"),
                ],
            }
        common = [
            "--space",
            args.space,
            "--target",
            args.target,
            "--db",
            str(db),
            "--json",
            "--no-progress",
        ]
        reserve = 90.0  # leave time for repeat and fit
        profiles = {}
        if args.plain:
            profiles["plain"] = steps.hwnas(
                "profile_plain", "profile", *common, "--samples", str(args.plain), reserve_s=reserve
            )
        if args.samples > args.plain:
            profiles["overlap"] = steps.hwnas(
                "profile_overlap",
                "profile",
                *common,
                "--samples",
                str(args.samples),
                "--overlap",
                reserve_s=reserve,
            )
        report["throughput"] = {
            name: {
                "written": s["written"],
                "wall_s": s["wall_s"],
                "archs_per_minute": s["archs_per_minute"],
                "phase_share": s["phase_share"],
            }
            for name, s in profiles.items()
            if s
        }
        rep = steps.hwnas(
            "repeat", "db", "repeat", "--db", str(db), "--target", args.target,
            "-n", str(args.repeat), "--json", "--no-progress", reserve_s=args.fit_budget + 20,
        )  # fmt: skip
        if rep:
            report["floor"] = _floor(rep)
        fit = steps.hwnas(
            "fit", "predictor", "fit", "--db", str(db), "--target", args.target,
            "--out", str(work / "predictor.pt"), "--time-budget", str(args.fit_budget),
            "--include-unstable", "--json", "--no-progress",
        )  # fmt: skip
        if fit:
            report["predictor"] = fit
        if db.exists():
            report["store"] = _store_summary(db, args.target)
    report["steps"] = steps.records
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["ok"] = not steps.failed
    text = json.dumps(report, indent=2, default=str)
    (out / "gpu_targets.json").write_text(text)
    print(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
