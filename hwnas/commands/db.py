"""`hwnas db stats|export|repeat`: look into a profile store, export it, re-measure from it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from targets.basics import UserError, check_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="inspect, export and re-measure a profile store")
    s = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    stats = s.add_parser("stats", help="rows, architectures and latencies per target")
    stats.add_argument("--db", required=True, type=Path, help="profile store (SQLite file)")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=_stats)

    export = s.add_parser("export", help="write every row to a CSV or Parquet file")
    export.add_argument("--db", required=True, type=Path, help="profile store (SQLite file)")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format (default csv)")
    export.add_argument(
        "--out", required=True, type=Path, help="file to write, or - for standard output (csv)"
    )
    export.set_defaults(func=_export)

    repeat = s.add_parser(
        "repeat",
        help="re-measure K stored architectures in this process and report the agreement",
    )
    repeat.add_argument("--db", required=True, type=Path, help="profile store (SQLite file)")
    repeat.add_argument("-n", type=int, required=True, help="architectures to re-measure")
    repeat.add_argument("--seed", type=int, default=0, help="which stored architectures")
    repeat.add_argument(
        "--target", help="target name or .toml file (default: the store's only target)"
    )
    repeat.add_argument("--group-size", type=int, default=8, help="candidates timed together (interleaved; default 8)")
    repeat.add_argument("--no-progress", action="store_true", help="no progress bar or lines (stderr)")
    repeat.add_argument("--json", action="store_true", help="print the report as JSON")
    repeat.set_defaults(func=_repeat)


def space_source(space_name: str) -> Any:
    """The candidate source of a named space (hwnas supplies it; imported late)."""
    from hwnas.nets.profile_source import SpaceCandidates

    return SpaceCandidates(space_name)


def _stats(args: argparse.Namespace) -> int:
    from profiling.store import ProfileStore

    with ProfileStore(args.db, readonly=True) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    space = (
        f"space {stats['space_name']} (config {stats['space_key'][:12]})"
        if stats["space_name"]
        else "no space bound yet"
    )
    print(f"profile store {stats['path']}: schema {stats['schema_version']}, {space}")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats["by_kind_status"].items()))
    print(f"rows: {stats['rows']} ({kinds or 'none'}), architectures: {stats['architectures']}")
    if stats["first_started_at"]:
        print(f"measured from {stats['first_started_at']} to {stats['last_finished_at']}")
    for t in stats["targets"]:
        fp = t["fingerprint"]
        desc = ", ".join(
            str(x)
            for x in (
                fp.get("backend"),
                fp.get("cpu") or fp.get("gpu") or fp.get("device"),
                f"{fp.get('threads')} thread(s)" if fp.get("threads") is not None else None,
                fp.get("precision"),
                f"batch {fp.get('batch_size')}" if fp.get("batch_size") is not None else None,
            )
            if x
        )
        print(f"target {t['target_name']} [fingerprint {t['fingerprint_key'][:12]}] {desc}")
        print(
            f"  architectures {t['architectures']}, failed {t['profile_failed']}, "
            f"repeats {t['repeat']}, unstable {t['unstable']}, runs {t['runs']}"
        )
        lat = t["latency_ms"]
        if lat:
            spread = t["median_spread"]
            print(
                f"  latency ms: min {lat['min']:.4g}, median {lat['median']:.4g}, "
                f"max {lat['max']:.4g}"
                + (f"; median spread {spread:.3f}" if spread is not None else "")
            )
    return 0


def _export(args: argparse.Namespace) -> int:
    from profiling.store import ProfileStore, write_csv

    if str(args.out) == "-":
        if args.format != "csv":
            raise UserError(
                "--out - writes CSV to standard output; parquet is binary: pass --out FILE.parquet"
            )
        with ProfileStore(args.db, readonly=True) as store:
            rows = list(store.rows())
        sys.stdout.flush()
        write_csv(rows, sys.stdout)
        return 0
    with ProfileStore(args.db, readonly=True) as store:
        n = store.export(args.out, args.format)
    print(f"wrote {n} rows to {args.out} ({args.format})")
    return 0


def _pick_target(store: Any, name: str | None) -> Any:
    from targets.registry import load_target

    if name:
        return load_target(name)
    names = sorted({f["target_name"] for f in store.fingerprints()})
    if not names:
        raise UserError(f"profile store {store.path} holds no measurements; run hwnas profile")
    if len(names) > 1:
        raise UserError(
            f"profile store {store.path} holds several targets ({', '.join(names)}); "
            "pick one with --target"
        )
    try:
        return load_target(names[0])
    except UserError as exc:
        raise UserError(
            f"the store's target '{names[0]}' is not a built-in target: it was profiled from a "
            f"target file; pass that file: --target {names[0]}.toml (or its path)"
        ) from exc


def _repeat(args: argparse.Namespace) -> int:
    from profiling.repeat import repeat_measurements
    from profiling.store import ProfileStore

    if args.n < 1:
        raise UserError(f"-n must be >= 1, got {args.n}")
    check_range("--group-size", args.group_size, 1)
    check_range("--seed", args.seed, 0)
    if not args.db.exists():
        raise UserError(f"no profile store at {args.db}; create one with hwnas profile")
    with ProfileStore(args.db) as store:
        binding = store.space_binding()
        if binding is None:
            raise UserError(f"profile store {args.db} holds no measurements; run hwnas profile")
        spec = _pick_target(store, args.target)
        source = space_source(binding["space_name"])
        report = repeat_measurements(
            source,
            spec,
            store,
            args.n,
            seed=args.seed,
            group_size=args.group_size,
            progress=not args.no_progress,  # stderr: --json output stays clean
        )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"re-measured {report.measured} of {min(report.requested, report.measured + report.failed)} "
        f"stored architectures on {report.target_name} in this process"
        + (f" ({report.failed} failed)" if report.failed else "")
    )
    if report.within_5pct is not None:
        print(
            f"agreement with the stored latency: within ±5% {report.within_5pct:.0%}, "
            f"within ±10% {report.within_10pct:.0%}, median |difference| "
            f"{report.median_abs_pct:.2f}%"
        )
    norm = report.normalised
    if norm.get("within_5pct") is not None:
        print(
            f"normalised by the reference network: within ±5% {norm['within_5pct']:.0%}, "
            f"within ±10% {norm['within_10pct']:.0%}, median |difference| "
            f"{norm['median_abs_pct']:.2f}%"
        )
    return 0
