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
    with pytest.raises(UserError, match=r"holds a train run \(hwnas train\), not an export run"):
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


def test_older_runs_read_as_the_kind_they_are(tmp_path: Path) -> None:
    """Issue 21: a main-job run (it has latency_weight too) read as a search run, a train run
    as 'unknown'; a config.json of the user's own is named as such, not as an 'unknown' run."""
    from hwnas.mainjob.config import MainJobConfig

    main = {k: v for k, v in MainJobConfig(out=tmp_path / "m").to_json().items() if k != "kind"}
    legacy_train = {"schema": "hwnas.train/1", "arch_hash": "ab", "space": "digits", "config": {"lr": 0.05}}
    flat_search = {"space": "digits", "samples": 1, "target": None, "mode": "full", "latency_weight": 0.5}
    cases = (("m", main, "main"), ("t", legacy_train, "train"), ("s", flat_search, "search"), ("u", {"name": "mine"}, "unknown"))
    for name, data, kind in cases:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(data))
        assert rundir.run_kind(tmp_path / name) == kind, name
    with pytest.raises(UserError) as err:
        rundir.prepare(tmp_path / "m", "search", _differs({}), force_allowed=False)
    assert "holds a main-job run (hwnas run), not a search run; choose another --out" in str(err.value)
    assert "--resume" not in str(err.value)
    with pytest.raises(UserError) as err:
        rundir.prepare(tmp_path / "u", "train", _differs({}))
    assert "a config.json that no hwnas command wrote" in str(err.value) and "'unknown'" not in str(err.value)


def _follow(message: str, out: Path, kind: str, same: dict[str, object], old: dict[str, object], **flags: bool) -> str:
    """Do what a refusal says, as a user would, and return prepare's answer."""
    if "--resume and --force contradict" in message:
        return rundir.prepare(out, kind, _differs(same), force=flags.get("force", False))
    if "drop --resume" in message:
        return rundir.prepare(out, kind, _differs(same))
    if "--force" in message:
        return rundir.prepare(out, kind, _differs(same), force=True)
    if "--resume" in message:  # with the run's own settings (its config.json)
        return rundir.prepare(out, kind, _differs(old), resume=True)
    assert "choose another --out" in message or "choose an empty or new --out" in message, message
    return rundir.prepare(out.parent / f"{out.name}-other", kind, _differs(same))


@pytest.mark.parametrize("force_allowed", [True, False])
def test_every_refusal_gives_advice_that_works_when_followed(tmp_path: Path, force_allowed: bool) -> None:
    """Each refusal of `prepare`, its advice followed literally: the call then goes through."""
    old = {"lr": 0.1}
    cases = [  # (what --out holds, the kind asked for, its config, flags)
        *((f"a {k} run", k, "train" if k != "train" else "search", {"lr": 0.1}, {}) for k in rundir.KINDS),
        ("a train run", "train", "train", {"lr": 0.2}, {}),  # another configuration
        ("a train run", "train", "train", {"lr": 0.2}, {"resume": True}),
        ("a train run", "train", "train", {"lr": 0.1}, {}),  # the same, no flag
        ("a train run", "train", "train", {"lr": 0.1}, {"resume": True, "force": True}),
        ("nothing", None, "train", {"lr": 0.1}, {"resume": True}),
        ("foreign files", None, "train", {"lr": 0.1}, {}),
    ]
    for i, (_what, found, kind, asked, flags) in enumerate(cases):
        if flags.get("force") and not force_allowed:
            continue
        out = tmp_path / str(i)
        if found is not None:
            _run(out, found, **old)
        elif _what == "foreign files":
            out.mkdir()
            (out / "notes.txt").write_text("mine")
        with pytest.raises(UserError) as err:
            rundir.prepare(out, kind, _differs(asked), force_allowed=force_allowed, **flags)
        message = str(err.value)
        assert "--force" not in message or force_allowed or "contradict" in message, message
        assert _follow(message, out, kind, asked, old, **flags) in ("new", "resume"), message


# -- strict JSON in every file written (issue 21) ------------------------------------------------
def _strict(text: str) -> object:
    """json.loads that refuses NaN/Infinity, as every JSON reader but Python's does."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_config_and_summary_are_strict_json_with_unknowns_as_null(tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    rundir.write_config(tmp_path, {"kind": "train", "config": {"aux_weight": nan}, "at": Path("x")})
    rundir.write_summary(tmp_path, {"test_accuracy": nan, "latency": [1.0, inf], "n": 3})
    assert _strict((tmp_path / "config.json").read_text()) == {
        "kind": "train", "config": {"aux_weight": None}, "at": "x"
    }
    assert _strict((tmp_path / "summary.json").read_text()) == {"test_accuracy": None, "latency": [1.0, None], "n": 3}


def test_predictor_header_is_strict_json(tmp_path: Path) -> None:
    import torch

    from predictor.io import save_predictor

    class Model(torch.nn.Module):
        header: dict = {}

    path = save_predictor(tmp_path / "p.pt", Model(), {"metrics": {"test": {"kendall_tau": float("nan")}}})
    payload = torch.load(path, weights_only=True)
    assert _strict(payload["header"]) == {"metrics": {"test": {"kendall_tau": None}}}


def test_no_library_file_is_written_with_plain_json_dumps() -> None:
    """Every JSON file hwnas writes goes through targets.basics.strict_json (no bare NaN)."""
    root = Path(__file__).resolve().parents[1]
    offenders = [
        f"{p.relative_to(root)}:{i}"
        for layer in ("targets", "profiling", "predictor", "hwnas")
        for p in sorted((root / layer).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "json.dumps(" in line and ("atomic_write" in line or "write_text(" in line or '"header"' in line)
    ]
    assert offenders == []


def test_searches_written_before_schedule_and_derive_are_reused_by_the_main_job_and_study(tmp_path: Path) -> None:
    """A config.json without `schedule` or `derive` (older hwnas) is the same search as the
    default config, not 'another' one to delete and redo."""
    from hwnas.mainjob import deploy_steps, tradeoff
    from hwnas.search import SearchConfig

    predictor = tmp_path / "p.pt"
    predictor.write_bytes(b"weights")
    cfg = SearchConfig(space="digits", predictor=str(predictor), latency_weight=1.0)
    run = tmp_path / "search-latency"
    run.mkdir()
    old = {k: v for k, v in cfg.to_json().items() if k not in ("schedule", "derive")}
    old["predictor"] = str(predictor.resolve())
    (run / "config.json").write_text(json.dumps({"search": old, "resolved": {"predictor_sha256": "x"}}))
    deploy_steps._stamp_path(run).write_text("stamp")
    for name in ("summary.json", "architecture.json"):
        (run / name).write_text("{}")
    assert deploy_steps._search_state(run, cfg, "stamp") == "done"
    assert deploy_steps._search_state(run, SearchConfig(**{**cfg.__dict__, "derive": "priced"}), "stamp") == "other"
    sha = tradeoff._sha256(predictor)
    (run / "config.json").write_text(json.dumps({"search": {**old, "predictor": str(predictor)},
                                                 "resolved": {"predictor_sha256": sha}}))
    assert tradeoff.search_state(run, cfg) != "new" and run.exists()
