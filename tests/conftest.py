"""Shared fixtures: paths, the shared data folder, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite's networks are small, and on a busy 2-core host torch's
# thread pool oversubscribes (a 30 ms forward pass took 4 s with 2 threads under load).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWNAS_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Tests keep the reference network and its recent figures (the drift check's baseline,
    which every profile run reads and extends) in a cache of their own, not the user's."""
    if os.environ.get("HWNAS_CACHE_DIR"):
        yield
        return
    os.environ["HWNAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("hwnas-cache"))
    try:
        yield
    finally:
        os.environ.pop("HWNAS_CACHE_DIR", None)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `hwnas ...` in-process; returns (exit code, stdout, stderr)."""
    from hwnas.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu`-marked tests are skipped where torch sees no CUDA device (CI, most hosts);
    bench/gpu_checks.sh runs them on a GPU machine."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
