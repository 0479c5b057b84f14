"""measure_onnx is the one way to time a set of models (`hwnas measure`, `hwnas run` use it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from targets.backends.base import Backend, ModelArtifact, Runner
from targets.basics import UserError
from targets.registry import load_target
from targets.timing import Protocol, measure_onnx

FAST = Protocol(warmup=1, min_rounds=2, rounds=2, runs_per_round=3, round_warmup=0)


class _Runner(Runner):
    def __init__(self, fail_after: int | None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def run(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("device fell over")


class _Backend(Backend):
    """Compiles nothing: 'bad' models fail on their 4th run, eager ones record their build."""

    name = "fake"
    built: list[str] = []

    def check_available(self) -> None:
        pass

    def fingerprint(self) -> dict:
        return {"backend": "fake"}

    def compile(self, model: ModelArtifact) -> Runner:
        if model.build_torch is not None:
            self.built.append(model.build_torch())
        return _Runner(3 if Path(model.onnx_path).stem == "bad" else None)


def test_a_model_failing_while_timed_is_a_user_error_naming_it(tmp_path: Path) -> None:
    spec = load_target("debug")
    paths = [tmp_path / "good.onnx", tmp_path / "bad.onnx"]
    for p in paths:
        p.write_bytes(b"")
    proto = FAST.with_(reference=False)
    with pytest.raises(UserError, match=r"^arch-2\.json: failed while running on target debug"):
        measure_onnx(paths, spec, proto, backend=_Backend(spec), names=["a.json", "arch-2.json"])
    with pytest.raises(UserError, match=r"bad\.onnx: failed while running"):
        measure_onnx(paths, spec, proto, backend=_Backend(spec))


def test_artifacts_carry_the_torch_builder(tmp_path: Path) -> None:
    spec = load_target("debug")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    backend = _Backend(spec)
    backend.built = []
    [m] = measure_onnx(
        [ModelArtifact(path, build_torch=lambda: "module")], spec, FAST.with_(reference=False),
        backend=backend,
    )  # fmt: skip
    assert backend.built == ["module"] and m.repetitions == m.rounds * FAST.runs_per_round
