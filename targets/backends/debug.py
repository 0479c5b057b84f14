"""The debug backend, for tests and demos: real timing, host-independent fingerprint.

It runs the ONNX file on ONNX Runtime's CPU provider with one thread (so its numbers
are real measurements of real work, never made up), but it fingerprints as a fixed
"debug" device, so test stores and fixtures keep one key on every machine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from targets.backends.base import Backend, ModelArtifact, Runner
from targets.backends.onnxruntime import OnnxRuntimeBackend
from targets.spec import TargetSpec

DEBUG_RUNTIME = "hwnas-debug-1"


class DebugBackend(Backend):
    """ORT CPU underneath; fingerprint depends only on the spec, not on the host."""

    name = "debug"

    def __init__(self, spec: TargetSpec) -> None:
        super().__init__(spec)
        ort_spec = replace(
            spec,
            backend="onnxruntime",
            device="cpu",
            threads=1,
            options={"provider": "cpu", "input_seed": spec.option("input_seed")},
        )
        self._ort = OnnxRuntimeBackend(ort_spec)

    def check_available(self) -> None:
        self._ort.check_available()

    def fingerprint(self) -> dict[str, Any]:
        return {
            "backend": "debug",
            "device": "debug",
            "runtime": {"debug": DEBUG_RUNTIME},
            "precision": self.spec.precision,
            "batch_size": self.spec.batch_size,
            "threads": 1,
        }

    def compile(self, model: ModelArtifact) -> Runner:
        return self._ort.compile(model)
