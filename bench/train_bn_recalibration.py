"""Eval-mode accuracy with and without BatchNorm recalibration after short training.

    .venv/bin/python bench/train_bn_recalibration.py [--epochs 3] [--subset 400]

Trains one small `digits` network (the fast test architecture) twice with `hwnas.train.loop`,
same seed, so the same weights: once as `hwnas train` does (BatchNorm statistics
recalibrated before each evaluation), once keeping the running averages training leaves.
Recalibration changes no weight; it only decides what eval mode (and the ONNX export) uses.
Prints the test accuracy per epoch of both and the CPU time per epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from test_train import cheap_arch

    from hwnas.space import save_architecture
    from hwnas.train.loop import TrainConfig, resolve_source, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "arch.json"
        save_architecture(cheap_arch(), path)
        cfg = TrainConfig(epochs=a.epochs, subset=a.subset, batch_size=32, seed=a.seed)
        rows = {}
        for recal in (True, False):
            acc: list[float] = []
            t = time.process_time()
            train(resolve_source(path), cfg, Path(tmp) / f"run-{recal}", progress=False, recalibrate=recal,
                  on_epoch=lambda r, acc=acc: acc.append(float(r["test_accuracy"])))
            rows[recal] = (acc, (time.process_time() - t) / a.epochs)
    print(f"digits, subset {a.subset}, seed {a.seed}, batch 32, 1 thread")
    for recal, (acc, cpu) in rows.items():
        label = "recalibrated (hwnas train)" if recal else "running averages         "
        print(f"{label}: test accuracy per epoch {', '.join(f'{x:.3f}' for x in acc)}; CPU {cpu:.1f} s/epoch")


if __name__ == "__main__":
    main()
