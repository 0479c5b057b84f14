"""The `hwnas` console script: subcommands grouped by the layer they drive.

Each group lives in `hwnas/commands/<group>.py` and exposes `add_parser(subparsers)`;
bad input raises `targets.errors.UserError`, which becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from targets.errors import UserError

# Order is the order of `hwnas --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "space",
    "arch",
    "targets",
    "measure",
    "profile",
    "db",
    "predictor",
    "search",
    "run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas",
        description="Hardware-aware neural architecture search: profile, predict, search, deploy.",
    )
    from hwnas import __version__

    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"hwnas.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hwnas.commands.{name}":
                continue  # group not written yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except UserError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
