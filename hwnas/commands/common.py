"""Flags and entry-point settings shared by the commands that run a search or a training."""

from __future__ import annotations

import argparse

from targets.basics import UserError


def add_run_flags(p: argparse.ArgumentParser, json_help: str) -> None:
    """--threads, --device, --precision, --json, --no-progress (search and train)."""
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="where it runs (default auto: the first CUDA device if torch sees one, else the CPU)")
    p.add_argument("--precision", default=None, metavar="bf16|fp32",
                   help="default: bf16 autocast on a CUDA device that has it, else fp32 (the CPU is always fp32)")
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines (stderr)")


def set_up_process(args: argparse.Namespace) -> None:
    """The entry point owns the process: its threads, and cuDNN's autotuning on CUDA."""
    import torch

    from hwnas import devices

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    devices.tune_backends(devices.resolve_device(args.device))
