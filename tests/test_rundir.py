"""The one run-directory protocol (hwnas/rundir.py) that search, train, export and the main
job share: each rule once, directly; the commands' own tests check their messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas import rundir
from targets.basics import UserError


def _run(path: Path, kind: str, **config: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rundir.write_config(path, {"kind": kind, **config})
    return path


def _differs(new: dict[str, object]):
    return lambda old: rundir.key_diffs(old, new, [k for k in new])


def test_new_and_empty_directories_start_a_run(tmp_path: Path) -> None:
    assert rundir.prepare(tmp_path / "absent", "train", _differs({})) == "new"
    (tmp_path / "empty").mkdir()
    assert rundir.prepare(tmp_path / "empty", "train", _differs({})) == "new"
    with pytest.raises(UserError, match="no run to resume"):
        rundir.prepare(tmp_path / "absent", "train", _differs({}), resume=True)


def test_the_same_config_resumes_only_when_asked_unless_reused(tmp_path: Path) -> None:
    run = _run(tmp_path / "r", "train", lr=0.1)
    with pytest.raises(UserError, match="already holds an interrupted train run.*--resume.*--force"):
        rundir.prepare(run, "train", _differs({"lr": 0.1}))
    assert rundir.prepare(run, "train", _differs({"lr": 0.1}), resume=True) == "resume"
    assert rundir.prepare(run, "train", _differs({"lr": 0.1}), on_same="reuse") == "resume"
    (run / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="a finished train run"):
        rundir.prepare(run, "train", _differs({"lr": 0.1}))


def test_another_config_kind_or_foreign_files_are_refused_and_force_overrides(tmp_path: Path) -> None:
    run = _run(tmp_path / "r", "train", lr=0.1)
    with pytest.raises(UserError, match=r"another configuration \(differs in: lr: run has 0.1, now 0.2\)"):
        rundir.prepare(run, "train", _differs({"lr": 0.2}), resume=True)
    with pytest.raises(UserError, match="holds a 'train' run, not an export run"):
        rundir.prepare(run, "export", _differs({}), resume_allowed=False)
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no hwnas run.*--force"):
        rundir.prepare(foreign, "train", _differs({}))
    assert rundir.prepare(foreign, "train", _differs({}), force=True) == "new"
    with pytest.raises(UserError, match="contradict"):
        rundir.prepare(run, "train", _differs({}), force=True, resume=True)
    assert json.loads((run / "config.json").read_text())["lr"] == 0.1  # nothing written


def test_messages_offer_only_the_flags_a_command_has(tmp_path: Path) -> None:
    run = _run(tmp_path / "r", "search", lr=0.1)
    with pytest.raises(UserError) as err:
        rundir.prepare(run, "search", _differs({"lr": 0.2}), force_allowed=False)
    assert "--force" not in str(err.value) and "--resume" in str(err.value)
    main = _run(tmp_path / "m", "main", seed=1)
    with pytest.raises(UserError) as err:
        rundir.prepare(main, "main", _differs({"seed": 0}), on_same="reuse", resume_allowed=False)
    assert "--resume" not in str(err.value) and "--force" in str(err.value)


def test_kinds_of_older_runs_and_a_bare_store(tmp_path: Path) -> None:
    search = tmp_path / "s"
    search.mkdir()
    (search / "config.json").write_text(json.dumps({"schema": "hwnas.search-config/1", "search": {}}))
    assert rundir.run_kind(search) == "search"
    export = tmp_path / "e"
    export.mkdir()
    (export / "export.json").write_text("{}")
    assert rundir.run_kind(export) == "export"
    bare = tmp_path / "b"
    bare.mkdir()
    (bare / "profile.db").write_bytes(b"")
    assert rundir.prepare(bare, "main", _differs({}), accept_bare=lambda p: (p / "profile.db").is_file()) == "resume"
