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


# -- numeric options: every one range-checked, one line and exit 2 (issue 21, items 3 and 9) --
_NOPE = "NOPE"  # a path that does not exist: the range check must come before any file is read


def _argv(cmd: str) -> list[str]:
    base = {
        "search": ["search", "--space", "digits", "--predictor", _NOPE, "--epochs", "1", "--out", _NOPE],
        "train": ["train", _NOPE, "--epochs", "1", "--out", _NOPE],
        "run": ["run", "--out", _NOPE],
        "profile": ["profile", "--space", "digits", "--target", "ort-cpu", "--samples", "5", "--db", _NOPE],
        "fit": ["predictor", "fit", "--db", _NOPE, "--target", "ort-cpu", "--out", _NOPE],
        "repeat": ["db", "repeat", "--db", _NOPE, "-n", "3"],
        "sample": ["arch", "sample", "--space", "digits", "--out", _NOPE],
        "export": ["export", _NOPE, "--out", _NOPE],
        "measure": ["measure", "x.onnx", "--target", "ort-cpu"],
        "check": ["targets", "check", "ort-cpu"],
    }
    return list(base[cmd])


@pytest.mark.parametrize(
    ("cmd", "extra", "fragment"),
    [
        ("search", ["--arch-lr", "-1"], "--arch-lr must be a finite number > 0, got -1.0"),
        ("search", ["--arch-lr", "nan"], "--arch-lr must be a finite number > 0, got nan"),
        ("search", ["--threads", "0"], "--threads must be >= 1, got 0"),
        ("search", ["--latency-weight", "nan"], "--latency-weight must be a finite number >= 0"),
        ("search", ["--latency-budget", "-1"], "--latency-budget must be a finite number > 0"),
        ("search", ["--latency-budget", "inf"], "--latency-budget must be a finite number > 0"),
        ("search", ["--subset", "0"], "--subset must be an integer >= 2"),
        ("search", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("search", ["--max-param-free", "99"], "--max-param-free 99: a cell of space 'digits' has 8 edges"),
        ("search", ["--epochs", "0"], "--epochs must be >= 1"),
        ("train", ["--aux-weight", "nan"], "--aux-weight must be a finite number >= 0, got nan"),
        ("train", ["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
        ("train", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("train", ["--threads", "0"], "--threads must be >= 1, got 0"),
        ("run", ["--repeat", "-1"], "--repeat must be an integer >= 0"),
        ("run", ["--fresh", "-1"], "--fresh must be an integer >= 0"),
        ("run", ["--search-epochs", "0"], "--search-epochs must be an integer >= 1"),
        ("run", ["--search-subset", "0"], "--search-subset must be an integer >= 2"),
        ("run", ["--search-resolution", "2"], "--search-resolution must be an integer >= 4"),
        ("run", ["--search-arch-lr", "nan"], "--search-arch-lr must be a finite number > 0"),
        ("run", ["--train-epochs", "0"], "--train-epochs must be an integer >= 1"),
        ("run", ["--train-subset", "0"], "--train-subset must be an integer >= 1"),
        ("run", ["--latency-weight", "nan"], "--latency-weight must be a finite number >= 0"),
        ("run", ["--latency-budget", "-3"], "--latency-budget must be a finite number > 0"),
        ("run", ["--seed", "-3"], "--seed must be an integer >= 0"),
        ("profile", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("fit", ["--max-train", "0"], "--max-train must be an integer >= 1"),
        ("fit", ["--time-budget", "nan"], "--time-budget must be a finite number > 0"),
        ("fit", ["--relaxed-points", "-1"], "--relaxed-points must be an integer >= 0"),
        ("fit", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("repeat", ["--group-size", "0"], "--group-size must be an integer >= 1"),
        ("repeat", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("sample", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("export", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("measure", ["--seed", "-1"], "--seed must be an integer >= 0"),
        ("check", ["--seed", "-1"], "--seed must be an integer >= 0"),
    ],
)
def test_out_of_range_number_is_one_line_exit_2(cmd, extra, fragment, tmp_path, monkeypatch, capsys):
    """NaN, inf, negative or impossible values: refused before anything is read or written."""
    import hwnas.mainjob.job
    import profiling.runner

    def missed(*a, **k):
        raise AssertionError("the range check let the command start its work")

    monkeypatch.setattr(hwnas.mainjob.job, "_profile", missed)  # a missed check fails fast, never profiles
    monkeypatch.setattr(profiling.runner, "run_profile", missed)
    monkeypatch.chdir(tmp_path)
    code = cli.main([*_argv(cmd), *extra])  # an uncaught exception (a traceback) fails the test here
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("hwnas: error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_python_configs_refuse_out_of_range_numbers():
    """The same rules hold for Python users, who never pass through argparse."""
    from hwnas.mainjob.config import MainJobConfig
    from hwnas.search.config import SearchConfig
    from hwnas.space import get_space
    from hwnas.train.recipe import TrainConfig
    from profiling.runner import ProfileSettings
    from targets.basics import UserError

    for cfg in (
        SearchConfig(space="digits", a_lr=float("nan")),
        SearchConfig(space="digits", w_lr=-1.0),
        SearchConfig(space="digits", tau_min=2.0, tau_max=1.0),
        SearchConfig(space="digits", latency_weight=float("inf"), predictor="p.pt"),
    ):
        with pytest.raises(UserError):
            cfg.check()
    with pytest.raises(UserError, match="has 8 edges"):
        SearchConfig(space="digits", max_param_free=9).check_space(get_space("digits"))
    SearchConfig(space="digits", max_param_free=8).check_space(get_space("digits"))  # all 8: allowed
    for bad in ({"aux_weight": float("nan")}, {"momentum": 1.5}, {"grad_clip": 0.0}):
        with pytest.raises(UserError):
            TrainConfig(**bad).validate()
    with pytest.raises(UserError, match="--search-arch-lr"):
        MainJobConfig(search_arch_lr=float("nan")).resolved()
    with pytest.raises(UserError, match="--seed"):
        ProfileSettings(seed=-1)


# -- damaged torch files: our one line, never torch's text (issue 21, item 8) --------------------
def _damaged(tmp_path: Path, how: str) -> Path:
    """A real torch checkpoint cut in half, or a text file where one is expected."""
    import torch

    path = tmp_path / "checkpoint.pt"
    if how == "truncated":
        torch.save({"format": "x", "model": {"w": torch.zeros(64, 64)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_text("epoch,loss\n1,0.5\n")
    return path


def _load_search(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.search import run as search_run

    monkeypatch.setattr(search_run.rundir, "prepare", lambda *a, **k: "resume")  # a run to resume
    search_run._check_run_dir(path.parent, {}, resume=True)


def _load_train(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hwnas.train.runs import load_checkpoint  # export reads a train run through it too

    load_checkpoint(path)


def _load_predictor(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from predictor import load_predictor

    load_predictor(path)


@pytest.mark.parametrize("how", ["truncated", "text"])
@pytest.mark.parametrize(
    ("loader", "what"),
    [(_load_search, "search checkpoint"), (_load_train, "train checkpoint"), (_load_predictor, "hwnas predictor file")],
)
def test_damaged_torch_file_is_one_clean_line(loader, what, how, tmp_path, monkeypatch):
    from targets.basics import UserError

    path = _damaged(tmp_path, how)
    before = path.read_bytes()
    with pytest.raises(UserError) as info:
        loader(path, monkeypatch)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a readable {what} (truncated, corrupted or not written by hwnas); ")
    assert "\n" not in msg and "weights_only" not in msg and "If you" not in msg, msg
    assert path.read_bytes() == before  # left as it was


# -- help and README match behaviour (issue 21, item 7) ------------------------------------------
def _parsers(parser=None, prefix=()):
    """(command words, parser) for every parser under `hwnas`, the top one included."""
    import argparse

    parser = parser or cli.build_parser()
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*prefix, name))


def test_every_option_and_command_has_help_text():
    import argparse

    missing = []
    for words, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join((*words, c.dest.split()[0]))}" for c in action._choices_actions if not c.help]
            elif not action.help:
                missing.append(f"{' '.join(words)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_says_what_run_does_and_what_search_resolution_costs():
    import argparse

    subs = dict(_parsers())
    commands = next(a for a in subs[()]._actions if isinstance(a, argparse._SubParsersAction))
    line = next(c.help for c in commands._choices_actions if c.dest == "run")  # `hwnas --help`'s line
    for step in ("profile", "predictor", "search", "train", "export", "report"):
        assert step in line, line
    res = " ".join(subs[("search",)].format_help().split())
    assert "16x" not in res and "32 for digits" in res and "4-6x cheaper" in res


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_lists_every_dataset_spec():
    from hwnas.data.datasets import PATH_KINDS, parse_spec

    text = _readme()
    assert "| `digits` |" in text and parse_spec("digits") == ("digits", None)
    for kind in PATH_KINDS:
        assert f"| `{kind}:PATH` |" in text, kind
        assert parse_spec(f"{kind}:x")[0] == kind


def test_readme_synopsis_flags_exist():
    """Every --flag the README's command-line synopsis shows is a flag of that command."""
    import re

    block = _readme().split("## Command line", 1)[1].split("```", 2)[1]
    entries, current = [], None
    for line in block.splitlines():
        if line.startswith("hwnas "):
            current = [line]
            entries.append(current)
        elif current is not None and line.startswith(" "):
            current.append(line)
    parsers = dict(_parsers())
    bad = []
    for entry in entries:
        words = entry[0].split()[1:3]
        key = tuple(words) if tuple(words) in parsers else tuple(words[:1])
        known = {o for a in parsers[key]._actions for o in a.option_strings}
        bad += [f"{' '.join(key)} {f}" for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(entry)) if f not in known]
    assert bad == []
    run = next(" ".join(e) for e in entries if e[0].startswith("hwnas run"))
    for flag in ("--dataset", "--no-deploy", "--search-subset", "--train-subset"):
        assert flag in run


def test_search_says_when_the_default_resolution_is_the_upsampled_one():
    from hwnas.search.config import SearchConfig, resolution_note
    from hwnas.space import get_space

    note = resolution_note(SearchConfig(space="digits"), get_space("digits"))
    assert note is not None and "32x32" in note and "--search-resolution 8" in note
    assert resolution_note(SearchConfig(space="digits", search_resolution=8), get_space("digits")) is None
