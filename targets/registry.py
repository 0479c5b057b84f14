"""The target registry: built-in TOML files plus targets registered at run time (timm style).

Built-ins are read lazily from `targets/builtin/*.toml` (package data), so a new
built-in is one file, and a user target is the same format given by path.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from targets.basics import UserError
from targets.spec import TargetSpec, load_target_file, parse_target_text

if TYPE_CHECKING:
    from targets.backends.base import Backend

DEFAULT_TARGET = "ort-cpu"

# Backend name -> "module:Class", imported only when a backend is created so that
# `import targets` never pulls in onnxruntime, torch or tensorrt.
_BACKEND_CLASSES: dict[str, str] = {
    "onnxruntime": "targets.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "targets.backends.tensorrt:TensorRTBackend",
    "torch": "targets.backends.torch_eager:TorchEagerBackend",
    "debug": "targets.backends.debug:DebugBackend",
}
# A backend whose GPU flavour is its own class: (backend, device kind) -> "module:Class".
_DEVICE_BACKEND_CLASSES: dict[tuple[str, str], str] = {
    ("torch", "cuda"): "targets.backends.torch_cuda:TorchCudaBackend",
}

_registered: dict[str, TargetSpec] = {}


@lru_cache(maxsize=1)
def _builtin_specs() -> dict[str, TargetSpec]:
    specs: dict[str, TargetSpec] = {}
    folder = resources.files("targets") / "builtin"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        stem = entry.name[: -len(".toml")]
        spec = parse_target_text(
            entry.read_text(encoding="utf-8"), f"targets/builtin/{entry.name}", default_name=stem
        )
        if spec.name != stem:  # a packaging mistake, not user input
            raise RuntimeError(f"built-in target file {entry.name} declares name {spec.name!r}")
        specs[spec.name] = _with_source(spec, "builtin")
    return specs


def _with_source(spec: TargetSpec, source: str) -> TargetSpec:
    data = spec.to_dict()
    data["source"] = source
    return TargetSpec(**data)


def builtin_targets() -> list[str]:
    """Names of the targets shipped in targets/builtin."""
    return sorted(_builtin_specs())


def list_targets() -> list[str]:
    """Built-in and registered target names, sorted."""
    return sorted(set(_builtin_specs()) | set(_registered))


def register_target(spec: TargetSpec, *, replace: bool = False) -> None:
    """Make `spec` loadable by name; refuses to shadow another target unless `replace`."""
    if not isinstance(spec, TargetSpec):
        raise TypeError(f"register_target expects a TargetSpec, got {type(spec).__name__}")
    existing = _registered.get(spec.name) or _builtin_specs().get(spec.name)
    if existing is not None and existing != spec and not replace:
        raise UserError(
            f"target '{spec.name}' is already defined ({existing.source or 'registered'}); "
            "pick another name or pass replace=True"
        )
    _registered[spec.name] = spec


def unregister_target(name: str) -> None:
    """Forget a registered target (tests); built-ins stay."""
    _registered.pop(name, None)


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path


def load_target(name_or_path: str | Path) -> TargetSpec:
    """A target by registered/built-in name or by TOML path; UserError naming the known ones."""
    if isinstance(name_or_path, Path):
        return _checked_file_target(load_target_file(name_or_path))
    key = str(name_or_path).strip()
    if key in _registered:
        return _registered[key]
    builtins = _builtin_specs()
    if key in builtins:
        return builtins[key]
    if _looks_like_path(key) or Path(key).is_file():
        return _checked_file_target(load_target_file(key))
    known = ", ".join(list_targets())
    raise UserError(
        f"unknown target '{key}'; known targets: {known}; or give the path of a .toml file "
        "(see docs/targets.md)"
    )


def _checked_file_target(spec: TargetSpec) -> TargetSpec:
    """A file target may repeat a known target's name only with its settings.

    Stores, predictors and hints resolve a target by name; two targets of one name with
    other settings would be mixed up (the built-in would win).
    """
    known = _registered.get(spec.name) or _builtin_specs().get(spec.name)
    if known is None or known.settings() == spec.settings():
        return spec
    ours, theirs = spec.settings(), known.settings()
    diff = [k for k in ours if ours[k] != theirs[k]]
    shown = ", ".join(f"{k} {theirs[k]!r} there, {ours[k]!r} here" for k in diff[:3])
    raise UserError(
        f"{spec.source}: name '{spec.name}' is the {known.source or 'registered'} target with "
        f"other settings ({shown}); give this target its own name, e.g. "
        f'name = "my-{spec.name}"'
    )


def backend_class(backend: str, device: str = "cpu") -> type[Backend]:
    """The Backend subclass for a backend name on a device ("cpu", "cuda:1"; imports its
    module, not its runtime)."""
    try:
        target = _BACKEND_CLASSES[backend]
    except KeyError:
        raise UserError(
            f"unknown backend '{backend}'; known backends: {', '.join(_BACKEND_CLASSES)}"
        ) from None
    target = _DEVICE_BACKEND_CLASSES.get((backend, device.split(":", 1)[0]), target)
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create_backend(spec: TargetSpec) -> Backend:
    """The backend for `spec`, after checking its runtime is there (RuntimeMissing if not)."""
    backend = backend_class(spec.backend, spec.device)(spec)
    backend.check_available()
    return backend
