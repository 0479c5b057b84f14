"""Data-parallel search under torchrun: 2 CPU processes (gloo) keep bit-identical
architecture logits after every step, while each trains on its own shard of every batch.
HWNAS_DDP_DEVICE=cuda runs the same on two GPUs with nccl (bench/gpu_checks.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from searchkit import make_predictor

from hwnas.space import get_space

SCRIPT = """
import os, sys, torch
import torch.distributed as dist
from hwnas.search import SearchConfig, run_search

out, pred, rec = sys.argv[1], sys.argv[2], sys.argv[3]
steps, shards = [], []

def on_step(s, step):
    steps.append(torch.cat([p.detach().reshape(-1) for p in s.model.arch_parameters()]).cpu())

def main():
    from hwnas.search.step import Searcher
    batch = Searcher._batch
    def spy(self, ds, idx):
        x, y = batch(self, ds, idx)
        shards.append(y.cpu())
        return x, y
    Searcher._batch = spy
    cfg = SearchConfig(space="digits", predictor=pred, latency_weight=0.5, search_channels=4, epochs=2, mode="sampled",
                       subset=64, batch_size=16, seed=0, device=os.environ.get("HWNAS_DDP_DEVICE", "cpu"))
    run_search(cfg, out, progress=False, on_step=on_step)
    rank = dist.get_rank()
    torch.save({"steps": steps, "shards": shards, "world": dist.get_world_size()}, f"{rec}.rank{rank}.pt")
    dist.destroy_process_group()

main()
"""


@pytest.mark.slow  # ~11-13 s: two processes
def test_two_rank_search_keeps_identical_architecture_logits(tmp_path: Path) -> None:
    pred = make_predictor(tmp_path, get_space("digits"))
    script = tmp_path / "ddp_search.py"
    script.write_text(SCRIPT)
    rec = tmp_path / "rec"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path / "run"), str(pred), str(rec)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(f"{rec}.rank0.pt", weights_only=True)
    r1 = torch.load(f"{rec}.rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert len(r0["steps"]) == len(r1["steps"]) >= 4
    for a, b in zip(r0["steps"], r1["steps"], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(r0["steps"][0], r0["steps"][-1])  # the logits did move
    # each rank saw its own half of every batch
    assert all(len(y) == 8 for y in r0["shards"] + r1["shards"])
    assert any(not torch.equal(a, b) for a, b in zip(r0["shards"], r1["shards"], strict=True))
    # rank 0 alone wrote the run directory, with the ranks recorded
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"ranks": 2' in summary
