"""`hwnas profile`: time sampled architectures on a target, one stored row per measurement.

Safe to interrupt (every row is committed as it is measured) and to rerun: the same
command continues to --samples without measuring an architecture twice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hwnas.commands.common import same_command
from targets.basics import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure sampled architectures on a target into a profile store (resumable)",
        description=(
            "Sample architectures of a space, export and time them on a target, and store "
            "one row per measurement in an SQLite store. Rerun the same command to continue "
            "to --samples; several profilers may share one store."
        ),
    )
    p.add_argument("--space", required=True, help="search space name (hwnas space list)")
    p.add_argument("--target", required=True, help="target name or .toml file (hwnas targets list)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--samples", type=int, help="architectures the store should hold (sampled uniformly)")
    what.add_argument(
        "--architectures", nargs="+", type=Path, metavar="FILE",
        help="these architecture.json files instead of samples (those the store lacks): profile "
        "where a search went, then fit again (docs/search.md)",
    )
    p.add_argument("--db", required=True, type=Path, help="profile store (SQLite file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidate stream")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default: this machine) or ray (a Ray cluster's workers, see --address)")
    p.add_argument("--address", help="Ray cluster address (HEAD:6379) for --executor ray")
    p.add_argument(
        "--group-size", type=int, default=8, help="candidates timed together (interleaved)"
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="export the next group while this one is timed (off: it disturbs CPU timing)",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="measure again architectures that failed"
    )
    p.add_argument(
        "--remeasure-unstable",
        type=int,
        default=0,
        metavar="N",
        help="time figures the protocol marks unstable up to N more times before storing "
        "(costs throughput, see docs/benchmarks.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_profile, on_interrupt=same_command("every measurement taken is stored"))


def space_source(space_name: str, architectures: list[Path] | None = None) -> Any:
    """The candidate source of a named space, or of given architecture files of it (hwnas
    supplies it; imported late)."""
    from hwnas.nets.profile_source import GivenCandidates, SpaceCandidates
    from hwnas.space import get_space, load_architecture

    if architectures is None:
        return SpaceCandidates(space_name)
    space = get_space(space_name)
    archs, seen = [], set()
    for path in architectures:
        arch = load_architecture(path)  # UserError naming the file when it is not one
        if arch.space.key != space.key:
            raise UserError(
                f"{path}: an architecture of space '{arch.space.name}', not of --space {space_name}; "
                f"profile it into a store of its own space (--space {arch.space.name})"
            )
        if arch.hash not in seen:
            seen.add(arch.hash)
            archs.append(arch)
    return GivenCandidates(space_name, archs)


def _unstable(store: Any, fingerprint_key: str, run_id: str) -> dict[str, int]:
    """Unstable rows stored by this run, and why (predictor.dataset.unstable_counts)."""
    from predictor.dataset import unstable_counts

    ok = list(store.rows(kind="profile", status="ok", fingerprint_key=fingerprint_key))
    refs = [float(r["reference_ms"]) for r in ok if r["reference_ms"] and r["reference_ms"] > 0]
    mine = [r for r in ok if r["run_id"] == run_id]
    return unstable_counts(mine, best_reference=min(refs) if refs else None)


def _profile(args: argparse.Namespace) -> int:
    from predictor.dataset import MIN_SAMPLES_INIT, samples_rule
    from profiling.runner import ProfileSettings, run_profile
    from profiling.store import ProfileStore
    from targets.registry import load_target

    if args.samples is not None and args.samples < 1:
        raise UserError(
            f"--samples must be at least 1, got {args.samples} (it is the number of "
            f"architectures the store should hold; {samples_rule()})"
        )
    settings = ProfileSettings(  # checks its fields: a bad one is refused here
        seed=args.seed,
        executor=args.executor,
        address=args.address or None,
        group_size=args.group_size,
        progress=not args.no_progress,  # stderr: --json output stays clean
        overlap=args.overlap,
        retry_failed=args.retry_failed,
        remeasure_unstable=args.remeasure_unstable,
    )
    spec = load_target(args.target)
    source = space_source(args.space, args.architectures)
    with ProfileStore(args.db) as store:
        summary = run_profile(source, spec, store, args.samples, settings=settings)
        unstable = _unstable(store, summary.fingerprint_key, summary.run_id)
    data = summary.to_dict()
    data.update(unstable)
    data["db"] = str(args.db)
    data["space"] = source.space_name
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"profiled {summary.written} architectures of space {source.space_name} on "
        f"{spec.name} ({summary.ok} ok, {summary.failed} failed) in {summary.wall_s:.1f} s: "
        f"{summary.archs_per_minute:.1f} per minute"
    )
    if args.architectures:
        print(
            f"{source.size} distinct architectures given, {source.size - (summary.requested - summary.done_before)} "
            f"of them already in the store; store {args.db} holds {summary.done_after} architectures "
            f"for this target (fingerprint {summary.fingerprint_key[:12]})"
        )
    else:
        print(
            f"store {args.db} holds {summary.done_after} of {summary.requested} architectures "
            f"for this target (fingerprint {summary.fingerprint_key[:12]})"
        )
    if summary.wall_s > 0 and summary.written:
        split = ", ".join(
            f"{k} {v / summary.wall_s:.0%}" for k, v in summary.phases.items() if v > 0
        )
        print(f"wall time: {split}")
    if unstable["unstable_rows"]:
        print(
            f"{unstable['unstable_rows']} of {summary.ok} figures stored now were flagged unstable: "
            f"{unstable['unstable_split_half']} split-half (even and odd rounds disagreed: a busy "
            f"host), {unstable['unstable_reference_drift']} reference drift (the reference network "
            "ran >5% above its recent baseline: the host ran slow); `hwnas db repeat` re-measures a sample"
        )
    if summary.remeasured:
        print(f"{summary.remeasured} unstable figures (host busy) were timed again before storing")
    if summary.kept_as_repeat:
        print(
            f"{summary.kept_as_repeat} architectures were measured by another profiler at the "
            "same time; kept as 'repeat' rows"
        )
    if summary.exhausted and summary.done_after < summary.requested and not args.architectures:
        print(f"the space yields no new architectures: stopped at {summary.done_after}")
    if summary.done_after < MIN_SAMPLES_INIT:
        print(f"note: {samples_rule()}; profile more before fitting")
    return 0
