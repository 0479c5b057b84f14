"""`hwnas report RUN`: (re)write the HTML report of a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write RUN/report.html (figures beside it) from a run directory")
    p.add_argument("run", type=Path, metavar="RUN", help="a `hwnas run` directory")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from hwnas.mainjob.report import write_report

    path = write_report(args.run)
    print(f"wrote {path}")
    return 0
