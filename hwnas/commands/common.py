"""Flags and entry-point settings shared by the commands that run a search or a training, and
the hints that name the command continuing one after Ctrl-C."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

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


# -- Ctrl-C: the command that continues ------------------------------------------------------------
#: `on_interrupt(args, argv)` is called by the CLI before the command runs (so it can note what
#: --out held then) and returns the hint printed after "hwnas: interrupted; ".
Hint = Callable[[], str]


def rerun(argv: Sequence[str], *, add: Sequence[str] = (), drop: Sequence[str] = ()) -> str:
    """The command line again (shell-quoted), without `drop` and with `add`."""
    words = [w for w in argv if w not in drop]
    words += [a for a in add if a not in words]
    return shlex.join(["hwnas", *words])


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def continue_run_dir(resume_flag: bool) -> Callable[[argparse.Namespace, Sequence[str]], Hint]:
    """The hint of a command that writes a run directory at --out (search, train: with
    --resume; the main job: the same command again, which reuses what it finished).

    Once this call wrote the run's config.json, the run is there to continue (and --force,
    which would start it again, is dropped); before that, nothing of it is: the same command."""

    def arm(args: argparse.Namespace, argv: Sequence[str]) -> Hint:
        config = Path(args.out) / "config.json"
        before = _stat(config)

        def hint() -> str:
            now = _stat(config)
            continuing = getattr(args, "resume", False) and now is not None
            if now is not None and (now != before or continuing):
                return f"continue with: {rerun(argv, add=['--resume'] if resume_flag else [], drop=['--force'])}"
            return f"nothing of the run was written to {args.out} yet; start it again with: {rerun(argv)}"

        return hint

    return arm


def same_command(what: str) -> Callable[[argparse.Namespace, Sequence[str]], Hint]:
    """The hint of a command that continues when run again (`what`: what it keeps)."""

    def arm(args: argparse.Namespace, argv: Sequence[str]) -> Hint:
        return lambda: f"{what}; continue with the same command: {rerun(argv)}"

    return arm
