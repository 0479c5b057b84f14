"""One run directory protocol for search, train, export and the main job.

A run directory says what it holds in `config.json` (`"kind"`: search, train, export or
main; an export also answers to `export.json`) and what was asked (the config the next
call compares against). `prepare` decides, before anything is written, whether a call may
use the directory:

* absent or empty: a new run (`resume` refused: nothing to resume);
* `force`: a new run over whatever is there (`resume` and `force` contradict);
* another kind, or files that are no hwnas run: refused, naming what is there;
* another configuration: refused, naming what differs;
* the same configuration: `on_same="resume"` continues only when asked (`resume`), else
  refuses (train, search: a rerun would silently redo or mix work); `on_same="reuse"`
  continues (export, the main job: finished steps are reused).

Files in it are written with `targets.basics.atomic_path`, so a killed run leaves either the
old or the new file. The messages name the command-line flags because the commands expose
the library's `resume`/`force` under exactly those names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from targets.basics import UserError, atomic_write_text, strict_json

CONFIG = "config.json"
SUMMARY = "summary.json"
ARCHITECTURE = "architecture.json"
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
EXPORT_INFO = "export.json"

KINDS = ("search", "train", "export", "main")


def read_json(path: Path) -> Any:
    """A JSON file of a run; a missing or damaged one is a UserError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{path}: unreadable or not JSON ({exc.__class__.__name__}); the run is damaged"
        ) from None


def _legacy_kind(data: Mapping[str, Any]) -> str:
    """Runs written before every config.json carried its kind. A main job's config has
    search keys too (latency_weight, latency_budget): it is told apart by `samples`,
    `space` and `target` without a search's `mode` (the main job's is `search_mode`)."""
    schema = str(data.get("schema", ""))
    if schema.startswith("hwnas.search") or isinstance(data.get("search"), dict):
        return "search"
    if schema.startswith("hwnas.train") or ("arch_hash" in data and isinstance(data.get("config"), dict)):
        return "train"
    if "samples" in data and "space" in data and "target" in data and "mode" not in data:
        return "main"
    if "latency_weight" in data or "latency_budget" in data or "mode" in data:
        return "search"
    return "unknown"


def run_kind(directory: Path) -> str | None:
    """'search', 'train', 'export', 'main' (or another kind a config names), 'unknown' for a
    config.json no hwnas command wrote; None when the directory holds no run."""
    cfg_path = directory / CONFIG
    if cfg_path.is_file():
        data = read_json(cfg_path)
        if not isinstance(data, dict):
            return "unknown"
        kind = data.get("kind")
        return kind if isinstance(kind, str) else _legacy_kind(data)
    if (directory / EXPORT_INFO).is_file():
        return "export"
    return None


_COMMANDS = {"search": "hwnas search", "train": "hwnas train", "export": "hwnas export", "main": "hwnas run"}


def _noun(kind: str) -> str:
    return "main-job run" if kind == "main" else f"{kind} run"


def describe_kind(kind: str | None) -> str:
    """What a directory holds, with the command that made it ('a train run (hwnas train)')."""
    if kind is None:
        return "no hwnas run"
    if kind == "unknown":
        return f"a {CONFIG} that no hwnas command wrote"
    made_by = f" ({_COMMANDS[kind]})" if kind in _COMMANDS else ""
    return f"{_a(_noun(kind))} {_noun(kind)}{made_by}"


def read_config(directory: Path) -> dict[str, Any]:
    """The run's config (its export.json for an export written before config.json)."""
    path = directory / CONFIG
    if not path.is_file() and (directory / EXPORT_INFO).is_file():
        path = directory / EXPORT_INFO
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object; the run is damaged")
    return data


def write_config(directory: Path, config: Mapping[str, Any]) -> None:
    atomic_write_text(directory / CONFIG, strict_json(config, indent=2, default=str) + "\n")


def prepare(
    out: Path,
    kind: str,
    differs: Callable[[dict[str, Any]], list[str]],
    *,
    resume: bool = False,
    force: bool = False,
    on_same: str = "resume",
    force_allowed: bool = True,
    resume_allowed: bool = True,
    accept_bare: Callable[[Path], bool] | None = None,
) -> str:
    """'new' or 'resume' (same configuration, continue); UserError when `out` cannot take
    this run. Reads only: nothing in `out` changes.

    `differs(old_config)` names what differs from the config asked for (empty: the same).
    `accept_bare(out)`: a directory without a config that this kind may still take (the
    main job continues a profile store made by `hwnas profile`). `force_allowed` and
    `resume_allowed` say which of the two flags the command has (the messages offer only
    those).
    """
    force_hint = ", or pass --force" if force_allowed else ""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory; choose another --out")
    if force and resume:
        raise UserError("--resume and --force contradict each other; pick one")
    has_files = out.is_dir() and any(out.iterdir())
    if force:
        return "new"
    if not has_files:
        if resume:
            raise UserError(
                f"{out}: holds no run to resume (no {_noun(kind)} there); drop --resume to start one"
            )
        return "new"
    found = run_kind(out)
    if found is None:
        if accept_bare is not None and accept_bare(out):
            return "resume"
        raise UserError(
            f"{out}: not empty and holds no hwnas run; choose an empty or new --out{force_hint}"
        )
    if found != kind:
        raise UserError(
            f"{out}: holds {describe_kind(found)}, not {_a(kind)} {_noun(kind)}; choose another --out"
            + (f" (or --force to write {_a(kind)} {_noun(kind)} over it)" if force_allowed else "")
        )
    diffs = differs(read_config(out))
    if diffs:
        raise UserError(
            f"{out}: holds {_a(kind)} {_noun(kind)} of another configuration (differs in: {'; '.join(diffs)}); "
            "choose another --out"
            + (f", resume it with its own settings (--resume, see {out / CONFIG})" if resume_allowed else "")
            + (", or pass --force to start again there" if force_allowed else "")
        )
    if on_same == "reuse" or resume:
        return "resume"
    state = "a finished" if (out / SUMMARY).is_file() else "an interrupted"
    raise UserError(
        f"{out}: already holds {state} {_noun(kind)} with this configuration; pass --resume to "
        f"continue it{' or --force to start again' if force_allowed else ', or choose another --out'}"
    )


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def key_diffs(old: Mapping[str, Any], new: Mapping[str, Any], keys: Any = None) -> list[str]:
    """'key: run has X, now Y' for every key (of `keys`, else of both) whose value differs."""
    names = sorted(set(old) | set(new)) if keys is None else list(keys)
    return [
        f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}" for k in names if old.get(k) != new.get(k)
    ]


def write_summary(directory: Path, summary: Mapping[str, Any]) -> None:
    """summary.json: written last, so its presence means the run finished."""
    atomic_write_text(directory / SUMMARY, strict_json(summary, indent=2, default=float) + "\n")
