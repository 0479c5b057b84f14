"""Backends: compile an ONNX file for a target and hand back a Runner that times one pass.

Each module imports its runtime (onnxruntime, torch, tensorrt) inside functions only,
so importing a backend module never fails on a machine without that runtime.
"""

from __future__ import annotations
