"""The CLI entry point: a reader closing the pipe early, a command module gone missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        (["arch", "show", str(ROOT / "examples" / "darts_v2_cifar.json")], {141}),
        (["space", "show", "cifar"], {141}),
        (["--help"], {0, 141}),  # argparse swallows the write error itself
    ],
)
def test_pipe_closed_early_ends_quietly(args, codes):
    """`hwnas ... | head -1` with head gone before hwnas writes: no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write gets EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hwnas.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode in codes  # 141: as a tool killed by SIGPIPE


def test_pipe_read_to_the_end_is_unchanged():
    proc = subprocess.run(
        [sys.executable, "-m", "hwnas.cli", "arch", "show", str(ROOT / "examples" / "darts_v2_cifar.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("architecture 5541ca20c4f6e554 (space cifar)")


def test_missing_command_module_is_an_error_naming_it(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "no_such_group"))
    with pytest.raises(cli.MissingCommand, match=r"command 'no_such_group' has no module hwnas/commands/no_such_group\.py"):
        cli.build_parser()
    assert cli.main(["space", "list"]) == 1
    err = capsys.readouterr().err
    assert "no_such_group" in err and "Traceback" not in err


def test_every_listed_command_module_exists():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(cli.COMMAND_MODULES) <= set(sub.choices)
