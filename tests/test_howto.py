"""docs/howto-new-target.md cannot go stale: its `sh` blocks run, verbatim and in order.

The page brings up a file target (ONNX Runtime CPU, 2 threads), sets aside a held-out set
from a seed the profile does not use, profiles, adapts a known predictor (`--init`) and
judges it on the held-out set. The test runs it with a small N; the known predictor it
starts from is fitted here on the `debug` target (another target of the same space).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOWTO = ROOT / "docs" / "howto-new-target.md"
N = 30  # profiles of the new target: the smallest count --init accepts (one rule, stated once)


def sh_blocks(text: str) -> list[str]:
    """The fenced ```sh blocks of a markdown page, in order."""
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_its_steps() -> None:
    script = "\n".join(sh_blocks(HOWTO.read_text()))
    for needle in (
        "targets show ort-cpu",
        "targets check my-ort2.toml",
        "--seed 1001",
        "--seed 0",
        "--init",
        "predictor eval",
    ):
        assert needle in script, needle


@pytest.mark.skipif(sys.platform == "win32", reason="the page's commands are POSIX shell")
@pytest.mark.slow  # ~100-150 s: the whole how-to, verbatim
def test_howto_runs_verbatim(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HWNAS_CACHE_DIR"] = str(tmp_path / "cache")
    env["N"] = str(N)

    def run(script: str, cwd: Path) -> str:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return proc.stdout

    known = tmp_path / "known"
    known.mkdir()
    run(
        "hwnas profile --space tiny --target debug --samples 50 --db known.db --seed 7 --no-progress\n"
        "hwnas predictor fit --db known.db --target debug --out known.pt --no-baselines"
        " --members 2 --max-epochs 60 --include-unstable\n",
        known,
    )
    env["KNOWN"] = str(known / "known.pt")

    work = tmp_path / "work"
    work.mkdir()
    out = run("\n".join(sh_blocks(HOWTO.read_text())), work)

    # A file target, profiled with 2 threads, under its own name.
    assert (work / "my-ort2.toml").is_file()
    assert 'name = "my-ort2"' in (work / "my-ort2.toml").read_text()
    assert "threads: 2" in out
    # The held-out set shares no architecture with the profile.
    import sqlite3

    def hashes(db: Path) -> set[str]:
        with sqlite3.connect(db) as con:
            return {r[0] for r in con.execute("SELECT arch_hash FROM measurements")}

    held, profiled = hashes(work / "heldout.db"), hashes(work / "my-ort2.db")
    assert len(held) == N // 4 + 10 and len(profiled) >= N and not held & profiled
    # The adapted predictor, judged on the held-out set next to the re-measurement floor.
    assert "adapted from" in out
    assert f"scored on {N // 4 + 10} architectures of the all split" in out
    assert "re-measure" in out
    assert (work / "my-ort2.pt").is_file() and (work / "my-ort2.csv").is_file()
