"""The `hwnas` console script: subcommands grouped by the layer they drive.

Each group lives in `hwnas/commands/<group>.py` and exposes `add_parser(subparsers)`;
bad input raises `targets.basics.UserError`, which becomes one line on stderr and exit 2; Ctrl-C
ends with exit 130 and, for a command that can continue, the command line that does.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from targets.basics import UserError

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
    "train",
    "export",
    "report",
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
                raise MissingCommand(
                    f"hwnas: command '{name}' has no module hwnas/commands/{name}.py (listed in "
                    "hwnas.cli.COMMAND_MODULES): a file was renamed or the install is incomplete; "
                    "reinstall hwnas (`pip install -e .`) or fix COMMAND_MODULES"
                ) from None
            raise
        module.add_parser(sub)
    return parser


class MissingCommand(RuntimeError):
    """A command listed in COMMAND_MODULES whose module does not exist (a broken install)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that closes the pipe early (`hwnas ... | head -1`) ends it
    quietly with the status a tool killed by SIGPIPE has (141), not a traceback."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush is silent too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MissingCommand as exc:
        print(exc, file=sys.stderr)
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    arm = getattr(args, "on_interrupt", None)  # hwnas.commands.common: the command that continues
    hint = arm(args, words) if arm is not None else None
    try:
        code = args.func(args)
    except UserError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted" + (f"; {hint()}" if hint is not None else ""), file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
