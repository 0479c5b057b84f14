"""`hwnas targets list | show T | check T|FILE`: what targets exist and whether one runs here.

`check` is how a new target is brought up: it loads the TOML (every mistake named with
its file and key), checks the runtime is installed, prints the fingerprint and times the
reference network with the target's own protocol.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from targets.basics import check_range


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "targets",
        help="list, show and check targets (where and how a network runs)",
        description="Targets are TOML files: built-ins, or your own file given by path.",
    )
    sub = parser.add_subparsers(dest="targets_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("list", help="list the known targets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show a target's settings")
    p.add_argument("target", metavar="NAME|FILE", help="target name or path of a .toml file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "check",
        help="check a target runs here: runtime, fingerprint, reference network latency",
    )
    p.add_argument("target", metavar="NAME|FILE", help="target name or path of a .toml file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--seed", type=int, default=None, help="seed of the fixed input tensor")
    p.set_defaults(func=cmd_check)


def cmd_list(args: argparse.Namespace) -> int:
    from targets.registry import DEFAULT_TARGET, list_targets, load_target

    specs = [load_target(name) for name in list_targets()]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    rows = [("NAME", "BACKEND", "DEVICE", "PREC", "BATCH", "THREADS", "DESCRIPTION")]
    for s in specs:
        name = s.name + (" *" if s.name == DEFAULT_TARGET else "")
        threads = "all" if s.threads == 0 else str(s.threads)
        rows.append(
            (name, s.backend, s.device, s.precision, str(s.batch_size), threads, s.description)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    print("\n* default target. Add your own: write a TOML file, then `hwnas targets check FILE`.")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from targets.registry import load_target
    from targets.timing import Protocol

    spec = load_target(args.target)
    if args.json:
        data = spec.to_dict()
        data["resolved_protocol"] = Protocol.for_target(spec).to_dict()
        print(json.dumps(data, indent=2))
        return 0
    # A valid target file: `targets show T > my.toml` then `targets check my.toml` works.
    print(spec.to_toml(), end="")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from targets.registry import create_backend, load_target
    from targets.timing import (
        Protocol,
        check_reference_drift,
        compile_reference,
        fingerprint_key,
        measure_runners,
    )

    check_range("--seed", args.seed, 0)
    spec = load_target(args.target)
    if args.seed is not None:
        spec = replace(spec, options={**spec.options, "input_seed": args.seed})
    backend = create_backend(spec)  # RuntimeMissing (exit 2) when the runtime is absent
    fp = backend.fingerprint()
    key = fingerprint_key(fp)
    protocol = Protocol.for_target(spec)
    runner = compile_reference(backend, spec)
    try:
        m = measure_runners({"reference": runner}, protocol.with_(reference=False))["reference"]
    finally:
        runner.close()
    # The reference is the measured network here: compare it with its recent figures on
    # this fingerprint (and record it), so `check` also says when the host is running slow.
    m = check_reference_drift(
        {"reference": replace(m, reference_ms=m.latency_ms)},
        key,
        protocol,
        spec.options.get("cache_dir"),
    )["reference"]
    m = replace(m, reference_ms=None)
    if args.json:
        out = {
            "target": spec.to_dict(),
            "available": True,
            "fingerprint": fp,
            "fingerprint_key": key,
            "protocol": protocol.to_dict(),
            "reference": m.to_dict(),
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"target {spec.name} ({spec.source or 'registered'}): runtime available")
    print(f"fingerprint {key}")
    for k, v in sorted(fp.items()):
        print(f"  {k}: {json.dumps(v, sort_keys=True)}")
    verdict = "stable" if m.stable else "UNSTABLE (host busy or drifting: run check again)"
    print(
        f"reference network: {m.latency_ms:.3f} ms ({m.statistic} of {m.repetitions} runs in "
        f"{m.rounds} rounds; median {m.median_ms:.3f}, p10 {m.p10_ms:.3f}, "
        f"spread {m.spread:.2f}) {verdict}"
    )
    return 0
