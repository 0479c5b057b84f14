"""Where and how a network runs: target specs (TOML), backends that compile and time ONNX.

The lowest layer: it imports nothing of profiling, predictor or hwnas, and no runtime
(onnxruntime, torch, tensorrt) until a backend is created.
"""

from __future__ import annotations

from targets.basics import RuntimeMissing, UserError
from targets.registry import create_backend, list_targets, load_target, register_target
from targets.spec import TargetSpec

__all__ = [
    "RuntimeMissing",
    "TargetSpec",
    "UserError",
    "create_backend",
    "list_targets",
    "load_target",
    "register_target",
]
