"""CLI subcommand groups; each module exposes add_parser(subparsers)."""

from __future__ import annotations
