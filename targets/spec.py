"""Target specs: what a TOML target file may say, parsed and validated in one place.

(Over 400 lines on purpose: every key's rule and message in one file is the point.)

A target is plain data (name, backend, device, precision, batch, threads, backend
options, protocol overrides). Validation happens here, at load time, so a typo in
a TOML file fails with the file, the key and the fix before anything is compiled or
timed, instead of as a backend exception halfway through a profile run.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from targets.basics import UserError
from targets.protocol import Protocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt", "torch", "debug")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "backend",
    "device",
    "precision",
    "batch_size",
    "threads",
    "options",
    "protocol",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+|debug)$")


@dataclass(frozen=True)
class OptionSpec:
    """One backend option: its type, allowed values and default (None: not set)."""

    type: type
    default: Any = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    fingerprint: bool = True  # False for options that cannot change a latency (paths, seeds)


# Backend options, declared here (not in the backends) so loading a spec never imports
# a runtime. Keep in step with targets/backends/*.py and docs/targets.md.
BACKEND_OPTIONS: dict[str, dict[str, OptionSpec]] = {
    "onnxruntime": {
        "provider": OptionSpec(str, "cpu", ("cpu", "cuda", "tensorrt"), "execution provider"),
        "inter_op_threads": OptionSpec(int, 1, None, "inter-op threads (0 = ORT default)"),
        "execution_mode": OptionSpec(str, "sequential", ("sequential", "parallel")),
        "graph_optimization_level": OptionSpec(str, "all", ("disable", "basic", "extended", "all")),
        "io_binding": OptionSpec(bool, None, None, "bind inputs/outputs on the device (CUDA)"),
        "trt_engine_cache": OptionSpec(bool, True, None, "TensorRT EP: cache built engines"),
        "trt_timing_cache": OptionSpec(bool, True, None, "TensorRT EP: persist the timing cache"),
        "trt_workspace_mb": OptionSpec(int, None, None, "TensorRT EP: workspace limit in MiB"),
        "cache_dir": OptionSpec(str, None, None, "where engines/caches go", fingerprint=False),
        "input_seed": OptionSpec(int, 0, None, "seed of the fixed input", fingerprint=False),
    },
    "tensorrt": {
        "workspace_mb": OptionSpec(int, None, None, "builder workspace limit in MiB"),
        "builder_optimization_level": OptionSpec(int, None, None, "0-5, TensorRT default 3"),
        "timing_cache": OptionSpec(bool, True, None, "persist the builder timing cache"),
        "engine_cache": OptionSpec(bool, True, None, "reuse engines built for the same ONNX"),
        "cache_dir": OptionSpec(str, None, None, "where engines/caches go", fingerprint=False),
        "input_seed": OptionSpec(int, 0, None, "seed of the fixed input", fingerprint=False),
    },
    "torch": {
        "channels_last": OptionSpec(bool, False, None, "run in channels_last memory format"),
        "input_seed": OptionSpec(int, 0, None, "seed of the fixed input", fingerprint=False),
        # CUDA only (targets/backends/torch_cuda.py); left out of CPU fingerprints
        "cuda_graph": OptionSpec(bool, False, None, "CUDA: capture once as a CUDA graph, replay"),
        "runs_per_sample": OptionSpec(int, 10, None, "CUDA: runs between one pair of CUDA events"),
        "cudnn_benchmark": OptionSpec(bool, False, None, "CUDA: cuDNN picks kernels by timing"),
        "tf32": OptionSpec(bool, True, None, "CUDA fp32: allow TF32 in convolutions and matmuls"),
    },
    "debug": {
        "input_seed": OptionSpec(int, 0, None, "seed of the fixed input", fingerprint=False),
    },
}


# torch options that mean something on CUDA only (a CPU target may not set them)
TORCH_CUDA_OPTIONS: tuple[str, ...] = ("cuda_graph", "runs_per_sample", "cudnn_benchmark", "tf32")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TargetSpec:
    """Where and how a network runs; immutable so runners, workers and caches can share it."""

    name: str
    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 1
    threads: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    protocol: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        # Read-only views: a spec shared between runners must not be mutated by one of them.
        object.__setattr__(self, "options", _frozen(self.options))
        object.__setattr__(self, "protocol", _frozen(self.protocol))

    def option(self, key: str) -> Any:
        """The option's value, or the backend's declared default."""
        if key in self.options:
            return self.options[key]
        decl = BACKEND_OPTIONS.get(self.backend, {}).get(key)
        return decl.default if decl else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what `hwnas targets show --json` prints)."""
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "options": dict(self.options),
            "protocol": dict(self.protocol),
            "source": self.source,
        }

    @property
    def cli_ref(self) -> str:
        """What to type after --target to get this target again: its file, else its name."""
        if (
            self.source
            and self.source not in ("builtin", "registered")
            and self.source.endswith(".toml")
        ):
            return self.source
        return self.name

    def settings(self) -> dict[str, Any]:
        """Everything that decides how a network runs (not the name, description or source)."""
        data = self.to_dict()
        for key in ("name", "description", "source"):
            data.pop(key)
        return data

    def to_toml(self) -> str:
        """The spec as a target file that `load_target_file` reads back to an equal spec.

        The protocol's defaults are listed as comments (valid TOML whatever their value,
        None included) so a user sees every knob and uncomments the ones to change.
        """
        out = [f"# {self.name} ({self.source or 'registered'})"]
        for key in (
            "name",
            "description",
            "backend",
            "device",
            "precision",
            "batch_size",
            "threads",
        ):
            out.append(f"{key} = {toml_value(getattr(self, key))}")
        if self.options:
            out.append("\n[options]")
            out += [f"{k} = {toml_value(v)}" for k, v in self.options.items() if v is not None]
        out.append("\n[protocol]  # uncomment a default to change it (docs/targets.md)")
        for key, value in Protocol.for_target(self).to_dict().items():
            if key in self.protocol and value is not None:
                out.append(f"{key} = {toml_value(value)}")
            elif value is None:
                out.append(f"# {key} = ...  # default: not set")
            else:
                out.append(f"# {key} = {toml_value(value)}  # default")
        return "\n".join(out) + "\n"

    def __reduce__(self):  # MappingProxyType does not pickle; Ray ships specs to workers
        return (_rebuild_spec, (self.to_dict(),))


def toml_value(value: Any) -> str:
    """A scalar as TOML writes it (JSON string escapes are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"no TOML form for {value!r}")


def _rebuild_spec(data: dict[str, Any]) -> TargetSpec:
    return TargetSpec(**data)


def _suggest(key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", float: "a number"}.get(
        t, t.__name__
    )


def _check_type(where: str, key: str, value: Any, expected: type) -> None:
    ok = isinstance(value, expected)
    if expected is int and isinstance(value, bool):
        ok = False  # TOML true is not a thread count
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise UserError(
            f"{where}: key '{key}' must be {_type_name(expected)}, got {value!r} "
            f"({type(value).__name__}); fix the value in the file"
        )


def _check_choice(where: str, key: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise UserError(
            f"{where}: key '{key}' is {value!r}{_suggest(str(value), [str(c) for c in choices])}; "
            f"allowed: {allowed}"
        )


def parse_target(
    data: Mapping[str, Any], source: str, default_name: str | None = None
) -> TargetSpec:
    """Validate the content of a target TOML file; every error names `source` and the key."""
    where = source
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise UserError(
                f"{where}: unknown key '{key}'{_suggest(key, TOP_LEVEL_KEYS)}; "
                f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}"
            )
    name = data.get("name", default_name)
    if name is None:
        raise UserError(f"{where}: key 'name' is missing; add name = \"my-target\"")
    _check_type(where, "name", name, str)
    if not _NAME_RE.match(name):
        raise UserError(
            f"{where}: key 'name' is {name!r}; use letters, digits, '.', '_' or '-' "
            "(no spaces), starting with a letter or digit"
        )
    if "backend" not in data:
        raise UserError(
            f"{where}: key 'backend' is missing; add backend = one of {', '.join(BACKENDS)}"
        )
    backend = data["backend"]
    _check_type(where, "backend", backend, str)
    _check_choice(where, "backend", backend, BACKENDS)

    description = data.get("description", "")
    _check_type(where, "description", description, str)
    device = data.get("device", "cpu")
    _check_type(where, "device", device, str)
    if not _DEVICE_RE.match(device) or (device == "debug" and backend != "debug"):
        raise UserError(f'{where}: key \'device\' is {device!r}; use "cpu", "cuda" or "cuda:N"')
    precision = data.get("precision", "fp32")
    _check_type(where, "precision", precision, str)
    _check_choice(where, "precision", precision, PRECISIONS)
    batch_size = data.get("batch_size", 1)
    _check_type(where, "batch_size", batch_size, int)
    if batch_size < 1:
        raise UserError(f"{where}: key 'batch_size' is {batch_size}; it must be >= 1")
    threads = data.get("threads", 1)
    _check_type(where, "threads", threads, int)
    if threads < 0:
        raise UserError(f"{where}: key 'threads' is {threads}; use >= 1, or 0 for all cores")

    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise UserError(f"{where}: key 'options' must be a table ([options]), got {options!r}")
    declared = BACKEND_OPTIONS[backend]
    for key, value in options.items():
        if key not in declared:
            allowed = ", ".join(declared) or "(none)"
            raise UserError(
                f"{where}: unknown key 'options.{key}' for backend '{backend}'"
                f"{_suggest(key, list(declared))}; allowed: {allowed}"
            )
        decl = declared[key]
        _check_type(where, f"options.{key}", value, decl.type)
        if decl.choices is not None:
            _check_choice(where, f"options.{key}", value, decl.choices)
        if decl.type is int and value < 0:
            raise UserError(f"{where}: key 'options.{key}' is {value}; it must be >= 0")

    protocol = data.get("protocol", {})
    if not isinstance(protocol, Mapping):
        raise UserError(f"{where}: key 'protocol' must be a table ([protocol]), got {protocol!r}")

    Protocol.from_overrides(protocol, where=where)  # validates; raises UserError

    _check_consistency(where, backend, device, precision, options)
    return TargetSpec(
        name=name,
        backend=backend,
        device=device,
        precision=precision,
        batch_size=batch_size,
        threads=threads,
        options=dict(options),
        protocol=dict(protocol),
        description=description,
        source=source,
    )


def _check_consistency(
    where: str, backend: str, device: str, precision: str, options: Mapping[str, Any]
) -> None:
    """Combinations that every key accepts alone but no backend can run."""
    on_cuda = device.startswith("cuda")
    if backend == "onnxruntime":
        provider = options.get("provider", "cpu")
        if provider == "cpu" and on_cuda:
            raise UserError(
                f'{where}: device {device!r} needs options.provider = "cuda" or "tensorrt" '
                '(the CPU execution provider runs on device "cpu")'
            )
        if provider != "cpu" and not on_cuda:
            raise UserError(
                f'{where}: options.provider = {provider!r} runs on a GPU; set device = "cuda"'
            )
        if precision == "bf16":
            raise UserError(
                f'{where}: precision "bf16" runs on torch CUDA targets only (backend = '
                '"torch", device = "cuda"); use precision = "fp32" here'
            )
        if precision == "fp16" and provider != "tensorrt":
            raise UserError(
                f'{where}: precision "fp16" on ONNX Runtime needs options.provider = '
                '"tensorrt" (the CPU/CUDA providers run the model\'s own dtypes); '
                'use precision = "fp32"'
            )
    elif backend == "tensorrt":
        if not on_cuda:
            raise UserError(f"{where}: backend 'tensorrt' runs on a GPU; set device = \"cuda\"")
        if precision == "bf16":
            raise UserError(
                f"{where}: precision \"bf16\" is not supported by backend 'tensorrt' here; "
                'use "fp16" or "fp32"'
            )
    elif backend == "torch":
        if precision in ("fp16", "bf16") and not on_cuda:
            raise UserError(
                f'{where}: precision "{precision}" with backend \'torch\' needs device = "cuda"'
            )
        runs = options.get("runs_per_sample", 1)
        if runs < 1:
            raise UserError(
                f"{where}: key 'options.runs_per_sample' is {runs}; it must be >= 1 (e.g. 10)"
            )
        cuda_only = [k for k in TORCH_CUDA_OPTIONS if k in options]
        if cuda_only and not on_cuda:
            raise UserError(
                f'{where}: options.{cuda_only[0]} is for GPU targets; set device = "cuda" '
                "or remove the option"
            )
    elif backend == "debug" and (on_cuda or precision != "fp32"):
        raise UserError(
            f"{where}: backend 'debug' runs fp32 on the CPU; set device = \"debug\" "
            'and precision = "fp32"'
        )


def _toml_error_line(exc: Exception) -> int | None:
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    match = re.search(r"line (\d+)", str(exc))
    return int(match.group(1)) if match else None


_KEY_LINE_RE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_TABLE_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")


def _key_line(text: str, dotted: str) -> int | None:
    """The 1-based line that sets `dotted` ('threads', 'options.provider') in TOML text."""
    table, _, key = dotted.rpartition(".")
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE_RE.match(line)
        if header:
            current = header.group(1)
            continue
        if current == table and (m := _KEY_LINE_RE.match(line)) and m.group(1) == key:
            return number
    if table == "" and key in ("options", "protocol"):
        for number, line in enumerate(text.splitlines(), start=1):
            header = _TABLE_RE.match(line)
            if header and header.group(1) == key:
                return number
    return None


def parse_target_text(text: str, source: str, default_name: str | None = None) -> TargetSpec:
    """Parse TOML text; every error names the source, the line and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(exc)
        at = f" line {line}:" if line is not None else ""
        lines = text.splitlines()
        m = (
            _KEY_LINE_RE.match(lines[line - 1])
            if line is not None and 0 < line <= len(lines)
            else None
        )
        key = f" key '{m.group(1)}':" if m else ""
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc).splitlines()[0])
        raise UserError(
            f"{source}:{at}{key} invalid TOML: {reason}; fix the syntax "
            "(strings in double quotes, one key = value per line, tables as [options])"
        ) from None
    try:
        return parse_target(data, source, default_name=default_name)
    except UserError as exc:
        # parse_target sees data, not text: add the line of the key the message names.
        msg = str(exc)
        named = re.search(r"key '([A-Za-z0-9_.-]+)'", msg)
        line = _key_line(text, named.group(1)) if named else None
        if line is None or not msg.startswith(f"{source}: "):
            raise
        raise UserError(msg.replace(f"{source}: ", f"{source}: line {line}: ", 1)) from None


def load_target_file(path: str | Path) -> TargetSpec:
    """Load and validate one target TOML file; the name defaults to the file's stem."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"{p}: no such target file; give an existing .toml file or a known target name "
            "(hwnas targets list)"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot read the target file ({exc}); check the path") from None
    return parse_target_text(text, str(p), default_name=p.stem)
