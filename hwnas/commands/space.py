"""`hwnas space show NAME`: a space's config and how many architectures it holds."""

from __future__ import annotations

import argparse
import json
import math

from hwnas.space import CELL_OPS, STAGE_OPS, get_space, list_spaces
from hwnas.space.layout import encoding_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect search spaces")
    s = p.add_subparsers(dest="space_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="list the registered spaces")
    ls.add_argument("--json", action="store_true", help="print the names as a JSON list")
    ls.set_defaults(func=_list)
    show = s.add_parser("show", help="print a space's config and size")
    show.add_argument(
        "name", help=f"one of: {', '.join(list_spaces())}, or a data variant BASE-<C>ch-<K>class (tiny-1ch-3class)"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    names = list_spaces()
    if args.json:
        print(json.dumps(names))
    else:
        for n in names:
            print(f"{n:8s} {get_space(n).description}")
    return 0


def _show(args: argparse.Namespace) -> int:
    space = get_space(args.name)
    count = space.count()
    info = {
        "config": space.to_dict(),
        "key": space.key,
        "architectures": str(count),
        "architectures_log10": round(math.log10(count), 3),
        "cell_genotypes": space.cell_count(),
        "stage_choices": space.stage_count(),
        "encoding_size": encoding_size(space),
        "cell_ops": list(CELL_OPS),
        "stage_ops": list(STAGE_OPS),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"space {space.name}: {space.description}")
    for k, v in space.to_dict().items():
        if k not in ("name", "description"):
            print(f"  {k:16s} {v}")
    print(f"  {'key':16s} {space.key[:16]}")
    print(f"  cell ops         {', '.join(CELL_OPS)}")
    print(f"  stage ops        {', '.join(STAGE_OPS)}")
    print(f"  encoding size    {info['encoding_size']}")
    print(f"  cell genotypes   {space.cell_count():,} per cell")
    print(f"  architectures    10^{info['architectures_log10']} ({count:.4e})")
    return 0
