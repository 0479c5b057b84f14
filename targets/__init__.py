"""Where and how a network runs: target specs (TOML), backends that compile and time ONNX."""

from __future__ import annotations
