"""The predictor file: weights plus a JSON header, loadable without unpickling code.

`torch.save({"header": <JSON text>, "state_dict": {name: tensor}})`, read back with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers, so a
hostile or foreign file cannot run code. The header carries everything needed to refuse
a mismatch (space key, target fingerprint) and to rebuild the model (feature layout,
MLP config); the buffers carry the normalisation, duplicated in the header for people.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from predictor.dataset import training_hashes
from predictor.features import FeatureLayout
from predictor.model import LatencyPredictor, MLPConfig
from profiling.space_config import version_mismatch
from targets.basics import UserError, atomic_path, load_torch_file, strict_json

FORMAT = "hwnas-latency-predictor"
VERSION = 1


def build_header(model: LatencyPredictor, ds: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The header of a predictor fitted on dataset `ds` (predictor.dataset.Dataset)."""
    d = report.get("dataset", {})
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch_version": torch.__version__,
        "target_name": ds.target_name,
        "fingerprint": ds.fingerprint,
        "fingerprint_key": ds.fingerprint_key,
        "space_name": ds.space_name,
        "space_key": ds.space_key,
        "space_config": ds.space_config,
        "encoding_layout": list(ds.encoding_layout),
        "encoding_layout_hash": layout_hash(ds.encoding_layout),
        "include_unstable": bool(ds.stats.get("include_unstable", False)),
        "label": ds.stats.get("label", "raw"),
        "reference_baseline_ms": ds.stats.get("reference_baseline_ms"),
        "encoding_dim": model.dim,
        "feature_layout": model.features.to_json(),
        "normalisation": model.normalisation_json(),
        "model": {"kind": "mlp-ensemble", "config": model.cfg.to_json()},
        "split": {
            "method": "sha256('hwnas-split:{seed}:{arch_hash}') -> uniform; test below test_frac, then val",
            "seed": ds.split_seed,
            "val_frac": ds.val_frac,
            "test_frac": ds.test_frac,
        },
        "fitted_on": _fitted_on(ds),
        "n_train": d.get("n_train"),
        "n_val": d.get("n_val"),
        "n_test": d.get("n_test"),
        "source_db": ds.db,
        "metrics": {
            "split": report.get("split", "test"),
            "test": report.get("test"),
            "repeatability": report.get("repeatability"),
        },
        "training": report.get("mlp", {}).get("training"),
        "baselines": report.get("baselines"),
        "transfer": report.get("transfer"),  # predictor fit --init: adapted from which predictor
    }


def save_predictor(
    path: str | os.PathLike[str], model: LatencyPredictor, header: dict[str, Any]
) -> Path:
    """Write atomically (temp file in the same folder, then os.replace)."""
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"header": strict_json(header, sort_keys=True), "state_dict": state}  # undefined metrics: null
    payload[CHECKSUM_KEY] = payload_checksum(payload["header"], state)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    model.header = header
    return out


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The header and the tensors of a predictor file; UserError for anything else."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"predictor file {p} does not exist (create one with `hwnas predictor fit ... --out {p}`)"
        )
    # Our words, never torch's: its advice (weights_only=False) would run the file's code.
    payload = load_torch_file(p, "hwnas predictor file", "give a file written by `hwnas predictor fit --out FILE`")
    if not isinstance(payload, dict) or not isinstance(payload.get("header"), str):
        raise UserError(
            f"{p} is not an hwnas predictor file (no header); fit one with `hwnas predictor fit`"
        )
    verify_checksum(p, payload)
    try:
        header = json.loads(payload["header"])
    except ValueError:
        raise UserError(f"{p}: the predictor header is not valid JSON (corrupted file)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise UserError(
            f"{p} is not an hwnas latency predictor (format {fmt!r}, expected {FORMAT!r})"
        )
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(
            f"{p} has predictor format version {version!r}; this hwnas reads up to {VERSION}: upgrade hwnas"
        )
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{p}: the predictor weights are missing or malformed (corrupted file)")
    return header, state


CHECKSUM_KEY = "sha256"


def _fitted_on(ds: Any) -> list[str] | None:
    """Short hashes of the architectures the fit may have consumed (train + val splits)."""
    try:
        return training_hashes(ds)
    except (AttributeError, TypeError, ValueError):
        return None


def payload_checksum(header_text: str, state: dict[str, torch.Tensor]) -> str:
    """sha256 over the header text and every tensor (name, dtype, shape, bytes).

    A truncated file fails to unpickle, but a flipped byte inside a weight does not: it
    loads and predicts inf or 1e36 ms. The checksum turns that into one clear error.
    """
    h = hashlib.sha256(b"hwnas-latency-predictor-checksum-v1\0")
    h.update(header_text.encode("utf-8"))
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def verify_checksum(path: Path, payload: dict[str, Any]) -> None:
    """UserError when the stored checksum does not match the header and weights.

    Files written before checksums existed have none and are read as they are.
    """
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        return
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return  # reported as malformed weights by the caller
    if not isinstance(stored, str) or stored != payload_checksum(payload["header"], state):
        raise UserError(
            f"{path}: the predictor file is corrupted (its sha256 checksum does not match its "
            "header and weights); fit it again or restore it from a copy"
        )


def _device(device: str | torch.device | None, path: str | os.PathLike[str]) -> torch.device:
    """A usable torch device, or UserError naming what to pass instead."""
    try:
        dev = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError, ValueError):
        raise UserError(
            f"loading {path}: {device!r} is not a torch device (use 'cpu', 'cuda' or 'cuda:N')"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"loading {path} on {dev}: this torch has no usable CUDA device; use device='cpu'"
        )
    return dev


def load_predictor(
    path: str | os.PathLike[str], device: str | torch.device | None = "cpu"
) -> LatencyPredictor:
    """Rebuild a saved predictor (eval mode, on `device`) with its header in `.header`.

    Its weights are frozen (the search optimises the architecture, not the predictor);
    gradients still flow through it to the encoding. Encodings on another device are
    moved to the predictor's; `predict_ms` returns NumPy on the CPU from any device.
    """
    dev = _device(device, path)
    header, state = read_header(path)
    try:
        features = FeatureLayout.from_json(header["feature_layout"])
        cfg = MLPConfig.from_json(header["model"]["config"])
        model = LatencyPredictor(features, cfg)
        if "relax_w" not in state:  # a file from before the relaxed correction: uncalibrated
            state = {**state, "relax_w": torch.zeros(features.dim)}
        model.load_state_dict(state, strict=True)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise UserError(
            f"{path}: the predictor header and weights do not fit together (corrupted file); "
            "fit it again with `hwnas predictor fit`"
        ) from None
    if len(header.get("encoding_layout", [])) != model.dim:
        raise UserError(
            f"{path}: the header's encoding layout does not match the weights (corrupted file)"
        )
    model.header = header
    model.eval()
    model.requires_grad_(False)
    return model.to(dev)


def check_space(
    model: LatencyPredictor,
    space_key: str,
    *,
    what: str = "the architecture",
    space_config: dict[str, Any] | None = None,
) -> None:
    """UserError unless `space_key` is the space the predictor was fitted on; with
    `space_config` a predictor fitted for another network version says so (profile again)."""
    h = model.header
    if space_key != h.get("space_key"):
        if space_config is not None and space_config.get("name") == h.get("space_name"):
            msg = version_mismatch(
                h.get("space_config"),
                space_config,
                made=f"{what}: the predictor was fitted on profiles (space '{h.get('space_name')}') made",
                redo=f"profile again (`hwnas profile --space {h.get('space_name')} --db NEW.db ...`) "
                "and fit a new predictor on that store (`hwnas predictor fit`)",
            )
            if msg:
                raise UserError(msg)
        raise UserError(
            f"{what} belongs to another space (key {space_key[:12]}) than the predictor, which was fitted on "
            f"space '{h.get('space_name')}' (key {str(h.get('space_key'))[:12]}); fit a predictor on profiles "
            "of that space (`hwnas profile --space ...` then `hwnas predictor fit`)"
        )


# -- what a predictor predicts for: the encoding layout and the deploy space ---------------------
def layout_hash(names: Sequence[str]) -> str:
    """sha256 of the encoding layout's entry names, in order (JSON list): two spaces with one
    hash encode their architectures identically, whatever their widths."""
    text = json.dumps([str(n) for n in names], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def predictor_layout_hash(model: LatencyPredictor) -> str:
    """The layout hash of the encoding the predictor reads (from the names in its header)."""
    names = model.header.get("encoding_layout")
    if not isinstance(names, list) or len(names) != model.dim:
        raise UserError(
            "the predictor's header has no encoding layout of its input size (corrupted or "
            "hand-built file); fit it again with `hwnas predictor fit`"
        )
    return layout_hash(names)


def check_layout(
    model: LatencyPredictor, names: Sequence[str], *, what: str = "the search space"
) -> None:
    """UserError unless encodings laid out as `names` are what the predictor reads.

    Separate from the deploy space: a supernet of another width encodes the same choices
    in the same layout, and the predictor's answer for it is the deploy network's latency.
    """
    mine = predictor_layout_hash(model)
    theirs = layout_hash(names)
    if mine == theirs:
        return
    own = model.header.get("encoding_layout") or []
    diff = next(
        (
            f"entry {i}: '{a}' vs the predictor's '{b}'"
            for i, (a, b) in enumerate(zip(names, own, strict=False))
            if a != b
        ),
        f"{len(names)} entries vs the predictor's {len(own)}",
    )
    raise UserError(
        f"{what} encodes architectures differently from the predictor (layout {theirs[:12]} vs "
        f"{mine[:12]}; first difference: {diff}): its nodes, depth choices or window differ from "
        f"space '{model.header.get('space_name')}'; fit a predictor on profiles of a space with "
        "the same choices"
    )


def deploy_space_config(model: LatencyPredictor) -> dict[str, Any]:
    """The space config (a dict, as stored) of the deploy network whose latency the predictor
    predicts; hwnas turns it into a SpaceConfig (hwnas.search.predictor_check.check_predictor_for_search)."""
    cfg = model.header.get("space_config")
    if not isinstance(cfg, dict) or not cfg:
        raise UserError(
            "the predictor's header records no space config (fitted on a store without one); "
            "fit it again on a store written by `hwnas profile`"
        )
    return dict(cfg)
