"""`hwnas arch sample|validate|show|export`: architectures as JSON files."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hwnas.space import (
    Architecture,
    Genotype,
    get_space,
    load_architecture,
    sample_architectures,
    save_architecture,
)
from targets.basics import UserError, check_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="sample, validate, show and export architectures")
    s = p.add_subparsers(dest="arch_command", metavar="ACTION", required=True)

    sample = s.add_parser("sample", help="sample architectures uniformly, one JSON file each")
    sample.add_argument("--space", required=True, help="search space name (hwnas space list)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the draw (the same seed, the same architectures)")
    sample.add_argument("-n", type=int, default=1, help="how many")
    sample.add_argument("--out", required=True, type=Path, help="output directory")
    sample.add_argument("--json", action="store_true", help="print the written files as JSON")
    sample.set_defaults(func=_sample)

    validate = s.add_parser("validate", help="check architecture files; names the bad field")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="architecture JSON files")
    validate.add_argument("--json", action="store_true", help="print each file's result as JSON")
    validate.set_defaults(func=_validate)

    show = s.add_parser("show", help="print an architecture per stage")
    show.add_argument("file", type=Path, help="architecture JSON file")
    show.set_defaults(func=_show)

    export = s.add_parser("export", help="write the deploy network as a static-shape ONNX file")
    export.add_argument("file", type=Path, help="architecture JSON file")
    export.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    export.add_argument("--batch-size", type=int, default=1, help="batch size of the exported graph (default 1)")
    export.add_argument("--seed", type=int, default=0, help="seed of the (untrained) weights")
    export.set_defaults(func=_export)


def _sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    check_range("--seed", args.seed, 0)
    space = get_space(args.space)
    archs = sample_architectures(space, args.seed, args.n)
    written = []
    for i, arch in enumerate(archs):
        path = args.out / f"{space.name}-s{args.seed}-{i:04d}-{arch.hash[:10]}.json"
        save_architecture(arch, path)
        written.append({"path": str(path), "hash": arch.hash})
    if args.json:
        print(json.dumps(written, indent=2))
    else:
        print(f"wrote {len(written)} architecture(s) of space {space.name} to {args.out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    results = []
    bad = 0
    for f in args.files:
        try:
            arch = load_architecture(f)
            results.append({"path": str(f), "ok": True, "hash": arch.hash, "space": arch.space.name})
        except UserError as exc:
            bad += 1
            results.append({"path": str(f), "ok": False, "error": str(exc)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"ok   {r['path']}  {r['hash'][:12]}" if r["ok"] else f"FAIL {r['error']}")
    if bad:
        raise UserError(f"{bad} of {len(results)} file(s) invalid (see above)")
    return 0


def _format_genotype(g: Genotype) -> list[str]:
    names = ["x0", "x1"] + [f"n{i}" for i in range(len(g))]
    return [
        f"    n{i} = {a_op}({names[a]}) + {b_op}({names[b]})"
        for i, ((a_op, a), (b_op, b)) in enumerate(g)
    ]


def describe(arch: Architecture) -> str:
    """A readable listing: per stage depth, connections and cell ops; per reduction its ops."""
    lines = [f"architecture {arch.hash[:16]} (space {arch.space.name})"]
    for s, stage in enumerate(arch.stages):
        lines.append(f"stage {s}: depth {stage.depth}")
        state = ["in0", "in1"] + [f"cell{k}" for k in range(stage.depth)]
        for k, ((a_op, a), (b_op, b)) in enumerate(stage.connections):
            lines.append(f"  cell{k} <- {a_op}({state[a]}) + {b_op}({state[b]})")
        lines.append("  normal cell:")
        lines += _format_genotype(stage.cell)
        if s < len(arch.reductions):
            lines.append(f"reduction {s}:")
            lines += _format_genotype(arch.reductions[s])
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> int:
    print(describe(load_architecture(args.file)))
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from hwnas.nets.network import build_network
    from hwnas.nets.onnx_export import export_onnx

    arch = load_architecture(args.file)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_range("--seed", args.seed, 0)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    export_onnx(build_network(arch), args.out, batch_size=args.batch_size)
    print(f"wrote {args.out} ({time.perf_counter() - t0:.2f} s)")
    return 0
