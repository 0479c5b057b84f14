"""The CLI entry point: a reader closing the pipe early, a command module gone missing."""

from __future__ import annotations

import json
import os
import shlex
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


# -- Ctrl-C names the command that continues (issue 21) --------------------------------------------
def _interrupt(*_args: object, **_kw: object) -> None:
    raise KeyboardInterrupt


def _hinted(err: str, lead: str) -> list[str]:
    """The command line a Ctrl-C message offers after `lead`, as argv for hwnas.cli.main."""
    line = err.strip().splitlines()[-1]
    assert line.startswith("hwnas: interrupted; ") and lead in line, err
    words = shlex.split(line.split(lead, 1)[1])
    assert words[0] == "hwnas"
    return words[1:]


def test_ctrl_c_in_search_names_the_resume_that_continues_it(cli, tmp_path: Path, monkeypatch) -> None:
    from searchkit import make_predictor

    from hwnas.search import run as search_run
    from hwnas.search.step import Searcher
    from hwnas.space import get_space

    pred = make_predictor(tmp_path, get_space("digits"), n=80)
    out = tmp_path / "s"
    argv = ["search", "--space", "digits", "--predictor", str(pred), "--epochs", "1", "--subset", "64",
            "--batch-size", "16", "--search-channels", "4", "--search-resolution", "8", "--mode", "sampled",
            "--out", str(out), "--no-progress"]
    with monkeypatch.context() as m:  # before the run directory is written: the same command
        m.setattr(search_run, "Searcher", _interrupt)
        code, _, err = cli(*argv)
        assert code == 130 and _hinted(err, "start it again with: ") == argv and not out.exists()
    with monkeypatch.context() as m:  # in the first epoch: --resume
        m.setattr(Searcher, "run_epoch", _interrupt)
        code, _, err = cli(*argv)
    assert code == 130 and (out / "config.json").is_file()
    again = _hinted(err, "continue with: ")
    assert again == [*argv, "--resume"]
    code, _, err = cli(*again)  # following it finishes the run
    assert code == 0 and (out / "summary.json").is_file(), err


def test_ctrl_c_in_train_names_the_resume_that_continues_it(cli, tmp_path: Path, monkeypatch) -> None:
    from test_train import FAST, cheap_arch

    from hwnas.space import save_architecture
    from hwnas.train import loop

    arch = tmp_path / "a.json"
    save_architecture(cheap_arch(), arch)
    out = tmp_path / "t"
    assert cli("train", arch, "--epochs", "1", "--lr", "0.1", "--out", out, *FAST)[0] == 0
    argv = ["train", str(arch), "--epochs", "1", "--out", str(out), "--force", *FAST]
    with monkeypatch.context() as m:  # before anything is written: the same command (--force kept)
        m.setattr(loop, "_load_data", _interrupt)
        code, _, err = cli(*argv)
    assert code == 130 and _hinted(err, "start it again with: ") == argv
    with monkeypatch.context() as m:  # in the first epoch of the new run: --resume, not --force
        m.setattr(loop, "_train_epoch", _interrupt)
        code, _, err = cli(*argv)
    again = _hinted(err, "continue with: ")
    assert code == 130 and "--force" not in again and again[-1] == "--resume"
    code, _, err = cli(*again)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["lr"] != 0.1  # the forced run, finished


def test_ctrl_c_in_profile_names_the_same_command(cli, tmp_path: Path, monkeypatch) -> None:
    from test_profiling import FAST_TOML

    from profiling.session import ProfileRun
    from profiling.store import ProfileStore

    target = tmp_path / "debug-fast.toml"
    target.write_text(FAST_TOML)
    db = tmp_path / "p.db"
    argv = ["profile", "--space", "tiny", "--target", str(target), "--samples", "3", "--group-size", "1",
            "--db", str(db), "--no-progress"]
    real = ProfileRun.store_group
    calls = []

    def store_one_then_interrupt(self, *a, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(ProfileRun, "store_group", store_one_then_interrupt)
        code, _, err = cli(*argv)
    assert code == 130
    with ProfileStore(db, readonly=True) as st:
        assert st.count_rows(kind="profile", status="ok") == 1
    again = _hinted(err, "continue with the same command: ")
    assert again == argv
    code, out, err = cli(*again)
    assert code == 0 and "3 of 3" in out, err
    with ProfileStore(db, readonly=True) as st:
        assert st.count_rows(kind="profile", status="ok") == 3


def test_ctrl_c_in_run_names_the_same_command_without_force(cli, tmp_path: Path, monkeypatch) -> None:
    from hwnas import rundir
    from hwnas.mainjob import job

    out = tmp_path / "r"
    argv = ["run", "--out", str(out), "--force", "--no-progress"]
    monkeypatch.setattr(job, "run_main_job", _interrupt)
    code, _, err = cli(*argv)
    assert code == 130 and _hinted(err, "start it again with: ") == argv

    def start_then_interrupt(cfg):
        out.mkdir()
        rundir.write_config(out, cfg.to_json())  # as run_main_job does once its checks pass
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run_main_job", start_then_interrupt)
    code, _, err = cli(*argv)
    assert code == 130 and _hinted(err, "continue with: ") == ["run", "--out", str(out), "--no-progress"]


def test_ctrl_c_in_other_commands_is_still_exit_130(cli, monkeypatch) -> None:
    from hwnas.commands import space

    monkeypatch.setattr(space, "_list", _interrupt)  # the parser is built per call: it takes this one
    code, _, err = cli("space", "list")
    assert code == 130 and err.strip() == "hwnas: interrupted"
