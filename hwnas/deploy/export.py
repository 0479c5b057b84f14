"""Deployment export: the trained network as an ONNX file for a target, checked and labelled.

`export_for_target` writes, into an export directory, `model.onnx` (the trained weights of a
train run, or fresh weights for a bare architecture, said so in the metadata), checked
against torch on a real batch before it is kept, with the architecture hash, the target and
the predicted latency in the ONNX metadata (`metadata_props`, readable by any ONNX runtime);
for a TensorRT target also `model.engine` (TensorRT 10 API, where TensorRT is installed).
`measure_exports` times exported models on their target with the profiling protocol and
sets the prediction beside the measurement, raw and drift-corrected.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from hwnas import rundir
from hwnas.data.datasets import load_dataset
from hwnas.nets.network import Network, build_network
from hwnas.nets.onnx_export import INPUT_NAME, OUTPUT_NAME, network_to_onnx
from hwnas.rundir import ARCHITECTURE, CONFIG, SUMMARY, run_kind
from hwnas.space import Architecture, head_variant_note, save_architecture
from hwnas.space.encoding import encode
from hwnas.train.runs import load_trained, resolve_source
from predictor import check_space, load_predictor
from predictor.drift import corrected_ms, predictor_baseline
from targets.basics import RuntimeMissing, UserError, atomic_write_text, strict_json
from targets.registry import create_backend
from targets.spec import TargetSpec
from targets.timing import fingerprint_key, measure_onnx

RUN_KIND = "export"
EXPORT_INFO = "export.json"
MODEL = "model.onnx"
ENGINE = "model.engine"
PARITY_EXAMPLES = 8
PARITY_ATOL = 1e-3
PARITY_RTOL = 1e-3


@dataclass
class ExportResult:
    out: Path
    onnx_path: Path
    info: dict[str, Any]
    engine_path: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    """A prediction set beside a measurement, raw and drift-corrected."""

    predicted_ms: float | None
    measured_ms: float
    reference_ms: float | None
    baseline_reference_ms: float | None
    stable: bool

    @property
    def corrected_ms(self) -> float | None:
        """Measured latency moved to the predictor's host state: measured x the predictor's
        baseline reference / the reference figure of this measurement's rounds."""

        return corrected_ms(self.measured_ms, self.reference_ms, self.baseline_reference_ms)

    def error_pct(self, corrected: bool) -> float | None:
        m = self.corrected_ms if corrected else self.measured_ms
        if self.predicted_ms is None or m is None or m <= 0:
            return None
        return 100.0 * (self.predicted_ms / m - 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "corrected_ms": self.corrected_ms,
            "reference_ms": self.reference_ms,
            "baseline_reference_ms": self.baseline_reference_ms,
            "error_pct_raw": self.error_pct(False),
            "error_pct_corrected": self.error_pct(True),
            "stable": self.stable,
        }


# -- sources --------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    net: Network
    arch: Architecture
    trained: bool
    dataset: str | None
    run_dir: Path | None
    summary: dict[str, Any]
    predicted_latency_ms: float | None


def _load_source(raw: str | Path) -> _Loaded:
    path = Path(raw)
    if path.is_dir():
        kind = run_kind(path)
        if kind == "train":
            if not (path / SUMMARY).is_file():
                raise UserError(
                    f"{path}: the train run has not finished (no {SUMMARY}); finish it with "
                    f"`hwnas train ... --out {path} --resume` before exporting"
                )
            net, arch, summary = load_trained(path)
            cfg = json.loads((path / CONFIG).read_text())
            return _Loaded(
                net, arch, True, (cfg.get("config") or {}).get("dataset"), path, summary,
                summary.get("predicted_latency_ms"),
            )
        if kind in ("search", "unknown", None) and (path / ARCHITECTURE).is_file():
            src = resolve_source(path)
            return _Loaded(
                build_network(src.arch).eval(), src.arch, False, src.dataset, path, {}, src.predicted_latency_ms
            )
        raise UserError(
            f"{path}: holds {rundir.describe_kind(kind)}, which has no network to export; give an architecture JSON, a "
            "search run or a train run (`hwnas train ... --out RUN`)"
        )
    src = resolve_source(path)
    with torch.random.fork_rng(devices=[]):  # fresh weights, but the same ones every time
        torch.manual_seed(0)
        net = build_network(src.arch).eval()
    return _Loaded(net, src.arch, False, None, None, {}, None)


def _parity_batch(loaded: _Loaded, dataset: str | None, seed: int) -> tuple[torch.Tensor, str]:
    """Real examples from the dataset the network was trained on (or asked for); random
    inputs only when the space has no dataset to draw from (said so)."""
    name = dataset or loaded.dataset or ("digits" if loaded.arch.space.name == "digits" else None)
    if name is None:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(PARITY_EXAMPLES, *loaded.arch.space.input_shape, generator=g), "random normal inputs"

    data = load_dataset(name, loaded.arch.space, subset=None, seed=seed)
    n = min(PARITY_EXAMPLES, len(data.test))
    x = torch.stack([data.test[i][0] for i in range(n)])
    if tuple(x.shape[1:]) != loaded.arch.space.input_shape:
        raise UserError(
            f"dataset '{name}' gives inputs of shape {tuple(x.shape[1:])} but the network takes "
            f"{loaded.arch.space.input_shape}; give the dataset it was trained on (--dataset)"
        )
    return x, f"{n} test examples of '{name}'"


def parity_check(net: Network, model_bytes: bytes, x: torch.Tensor, batch_size: int) -> float:
    """Max |ONNX Runtime - torch| over the logits of `x` (run in chunks of the model's static
    batch size); UserError when beyond tolerance."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    net.eval()
    worst, scale = 0.0, 1.0
    n = (len(x) // batch_size) * batch_size or batch_size
    if len(x) < batch_size:
        x = x.repeat((batch_size + len(x) - 1) // len(x), 1, 1, 1)[:batch_size]
    for i in range(0, n, batch_size):
        chunk = x[i : i + batch_size]
        with torch.no_grad():
            ref = net(chunk).numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: chunk.numpy()})[0]
        worst = max(worst, float(np.max(np.abs(got - ref))))
        scale = max(scale, float(np.max(np.abs(ref))))
        if not np.allclose(got, ref, atol=PARITY_ATOL, rtol=PARITY_RTOL):
            raise UserError(
                f"parity check failed: ONNX Runtime and torch differ by up to {worst:.2e} on the logits "
                "(tolerance 1e-3); the export is wrong, nothing was written (please report it)"
            )
    return worst


def check_predictor_space(
    model: Any, arch: Architecture, *, what: str, space_config: dict[str, Any] | None = None
) -> str | None:
    """None when `model` was fitted on `arch`'s space; a note when that space is the fitted one
    with another class count (its predictions hold: `head_variant_note`); else check_space's
    UserError. The one rule of export, `hwnas measure` and `hwnas predictor predict`."""
    note = head_variant_note(model.header.get("space_config"), arch.space)
    if note is None:
        check_space(model, arch.space.key, what=what, space_config=space_config)
    return note


def _predict(
    predictor: Path | None, arch: Architecture, spec: TargetSpec
) -> tuple[float | None, float | None, str | None]:
    """(predicted ms, the predictor's baseline reference ms, a note) or Nones without a
    predictor. A predictor of the same network with another class count holds (noted)."""
    if predictor is None:
        return None, None, None

    model = load_predictor(predictor)
    note = check_predictor_space(model, arch, what=f"architecture {arch.hash[:12]}")
    target = model.header.get("target_name")
    if target != spec.name:
        raise UserError(
            f"{predictor}: fitted for target '{target}', not '{spec.name}'; give a predictor of "
            f"target '{spec.name}' (`hwnas predictor fit --target {spec.name}`)"
        )
    with torch.no_grad():
        ms = float(model(torch.from_numpy(encode(arch)).unsqueeze(0))[0])

    return ms, predictor_baseline(model.header), note


def _check_out(out: Path, record: dict[str, Any], force: bool) -> None:
    """An export directory of the same configuration is written again; another needs --force."""
    keys = ("arch_hash", "target", "weights", "source")
    rundir.prepare(
        out, RUN_KIND, lambda old: [k for k in keys if old.get(k) != record.get(k)], force=force,
        on_same="reuse", resume_allowed=False,
    )  # fmt: skip


def export_for_target(
    source: str | Path,
    spec: TargetSpec,
    out: Path,
    *,
    predictor: Path | None = None,
    dataset: str | None = None,
    force: bool = False,
    seed: int = 0,
) -> ExportResult:
    """Write model.onnx (+ model.engine for TensorRT), architecture.json and export.json."""
    loaded = _load_source(source)
    arch = loaded.arch
    predicted, baseline, head_note = _predict(predictor, arch, spec)
    if predicted is None and loaded.predicted_latency_ms is not None:
        predicted = float(loaded.predicted_latency_ms)
    weights = "trained" if loaded.trained else "random"
    record: dict[str, Any] = {
        "kind": RUN_KIND,
        "arch_hash": arch.hash,
        "space": arch.space.name,
        "target": spec.name,
        "batch_size": spec.batch_size,
        "weights": weights,
        "source": str(Path(source).resolve()),
        "predicted_latency_ms": predicted,
        "predictor": str(predictor) if predictor else None,
        "reference_baseline_ms": baseline,
        "test_accuracy": loaded.summary.get("test_accuracy"),
    }
    _check_out(out, record, force)
    notes = [head_note] if head_note else []
    if not loaded.trained:
        notes.append("random weights: a bare architecture has no trained weights (train it with `hwnas train`)")

    model = network_to_onnx(loaded.net, spec.batch_size)
    meta = {
        "hwnas.arch_hash": arch.hash,
        "hwnas.space": arch.space.name,
        "hwnas.target": spec.name,
        "hwnas.weights": weights,
        "hwnas.predicted_latency_ms": "" if predicted is None else f"{predicted:.6g}",
        "hwnas.test_accuracy": "" if record["test_accuracy"] is None else f"{record['test_accuracy']:.6g}",
        "hwnas.architecture": arch.to_json(indent=None),
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name = "hwnas"
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    x, what = _parity_batch(loaded, dataset, seed)
    diff = parity_check(loaded.net, data, x, spec.batch_size)
    record["parity"] = {"max_abs_diff": diff, "inputs": what, "tolerance": PARITY_ATOL}

    engine: bytes | None = None
    if spec.backend == "tensorrt":
        engine, why = _build_engine(spec, data)
        record["engine"] = ENGINE if engine is not None else None
        if why:
            notes.append(why)
            record["engine_skipped"] = why
    record["notes"] = notes

    # Stage everything in a temp dir beside `out`, then move file by file (each an atomic
    # rename), export.json last: a crash leaves no export.json claiming a half export.
    out.mkdir(parents=True, exist_ok=True)
    if (kind := run_kind(out)) in rundir.KINDS and kind != RUN_KIND:
        # --force over another hwnas run: its config.json would go on claiming the directory
        for name in (CONFIG, SUMMARY, rundir.CHECKPOINT, rundir.LOG):
            (out / name).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        t = Path(tmp)
        (out / EXPORT_INFO).unlink(missing_ok=True)
        (t / MODEL).write_bytes(data)
        save_architecture(arch, t / ARCHITECTURE)
        if engine is not None:
            (t / ENGINE).write_bytes(engine)
        for name in (MODEL, ARCHITECTURE, ENGINE):
            if (t / name).is_file():
                (t / name).replace(out / name)
        if engine is None:
            (out / ENGINE).unlink(missing_ok=True)
    atomic_write_text(out / EXPORT_INFO, strict_json(record, indent=2) + "\n")
    return ExportResult(out, out / MODEL, record, out / ENGINE if engine is not None else None, notes)


def _build_engine(spec: TargetSpec, onnx_bytes: bytes) -> tuple[bytes | None, str | None]:
    """The serialized TensorRT engine (TensorRT 10's build_serialized_network, through the
    target's backend) or (None, why it was skipped)."""

    try:
        backend = create_backend(spec)
        backend.check_available()
    except RuntimeMissing as exc:
        return None, f"TensorRT engine skipped: {exc}"
    with tempfile.TemporaryDirectory(prefix="hwnas-trt-") as tmp:
        src = Path(tmp) / MODEL
        src.write_bytes(onnx_bytes)
        return backend.build_engine(onnx_bytes, src, fingerprint_key(backend.fingerprint())), None


def read_export(out: Path) -> dict[str, Any]:
    """The export.json of an export directory; UserError for another kind of directory."""
    info = out / EXPORT_INFO
    if not info.is_file() or not (out / MODEL).is_file():
        raise UserError(f"{out}: not an export directory (no {EXPORT_INFO} / {MODEL}); run `hwnas export` first")
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError):
        raise UserError(f"{info}: unreadable; export again (--force)") from None


def measure_exports(paths: list[Path], spec: TargetSpec, predicted: list[float | None],
                    baseline_reference_ms: float | None) -> list[Comparison]:
    """Time exported models together (one protocol run, same interleaved rounds, the
    reference network beside them) and set each prediction beside its measurement."""

    ms = measure_onnx(paths, spec)
    return [
        Comparison(p, m.latency_ms, m.reference_ms, baseline_reference_ms, m.stable)
        for p, m in zip(predicted, ms, strict=True)
    ]


def format_comparison(name: str, c: Comparison) -> str:
    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:8.3f}"

    def pct(v: float | None) -> str:
        return "    n/a" if v is None else f"{v:+6.1f}%"

    return (
        f"{name}: predicted {f(c.predicted_ms)} ms | measured {f(c.measured_ms)} ms (error {pct(c.error_pct(False))}) "
        f"| drift-corrected {f(c.corrected_ms)} ms (error {pct(c.error_pct(True))})"
        + ("" if c.stable else " [unstable: host busy; measure again]")
    )


__all__ = [
    "Comparison",
    "ExportResult",
    "export_for_target",
    "format_comparison",
    "measure_exports",
    "read_export",
]
