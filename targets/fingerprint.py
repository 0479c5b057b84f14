"""Platform fingerprints: what a latency depends on, as canonical JSON with a stable key.

A predictor must never mix latencies from different platforms unless told to, so every
measurement carries the fingerprint of the target that produced it. Only things that
change a latency go in (runtime/driver versions, CPU/GPU model, threads, precision,
batch, backend options); nothing per-process (pid, time, host name), so two processes
on the same machine, or two identical devices of a fleet, share the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from targets.spec import BACKEND_OPTIONS, TargetSpec


def canonical_json(data: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace: the same mapping always gives the same bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint_key(fp: Mapping[str, Any]) -> str:
    """sha256 (hex) of the fingerprint's canonical JSON."""
    return hashlib.sha256(canonical_json(fp).encode("utf-8")).hexdigest()


def package_version(dist: str) -> str | None:
    """An installed distribution's version without importing it (None if absent)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name (x86 'model name'; ARM boards fall back to their model)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""

    def field(key: str) -> str | None:
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        return " ".join(match.group(1).split()) if match and match.group(1).strip() else None

    name = field("model name")
    if name:
        # VMs often report a generic name ("AMD EPYC"); family/model/stepping tell
        # CPU generations (hence kernels and speeds) apart.
        ids = [(k, field(k)) for k in ("cpu family", "model", "stepping")]
        if all(v is not None for _, v in ids):
            name += " (" + ", ".join(f"{k} {v}" for k, v in ids) + ")"
        return name
    for key in ("Hardware", "Processor", "cpu model"):
        value = field(key)
        if value:
            return value
    try:  # e.g. "NVIDIA Jetson AGX Orin" on Jetson boards
        board = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
        if board:
            return board
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def available_cores() -> int:
    """Cores this process may run on (affinity/cgroup aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolved_threads(threads: int) -> int:
    """0 means all cores: resolve it so the fingerprint records the real count."""
    return threads if threads > 0 else available_cores()


@lru_cache(maxsize=1)
def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver version from /proc (None without one)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    if match:
        return match.group(1)
    match = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    return match.group(1) if match else None


def cuda_index(device: str) -> int:
    """'cuda' -> 0, 'cuda:2' -> 2."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def gpu_description(device: str) -> dict[str, Any]:
    """GPU name and compute capability via torch when it has CUDA, else from /proc."""
    index = cuda_index(device)
    info: dict[str, Any] = {}
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(index)
            info["gpu"] = props.name
            info["compute_capability"] = f"{props.major}.{props.minor}"
            info["gpu_memory_mb"] = int(props.total_memory // (1 << 20))
            info["cuda_runtime"] = torch.version.cuda
    except Exception:  # noqa: BLE001 - fingerprinting must not fail on a broken CUDA setup
        info = {}
    if "gpu" not in info:
        gpus = sorted(Path("/proc/driver/nvidia/gpus").glob("*/information"))
        if index < len(gpus):
            match = re.search(r"^Model:\s*(.+)$", gpus[index].read_text(), flags=re.MULTILINE)
            if match:
                info["gpu"] = match.group(1).strip()
    info["nvidia_driver"] = nvidia_driver_version()
    return info


def fingerprint_options(spec: TargetSpec) -> dict[str, Any]:
    """The spec's options with declared defaults filled in, minus those that cannot
    change a latency (cache paths, input seed), so an explicit default == an omitted one."""
    declared = BACKEND_OPTIONS.get(spec.backend, {})
    out: dict[str, Any] = {}
    for key, decl in declared.items():
        if not decl.fingerprint:
            continue
        value = spec.options.get(key, decl.default)
        if value is not None:
            out[key] = value
    return out


def base_fingerprint(spec: TargetSpec) -> dict[str, Any]:
    """The fields every backend shares; backends add their runtime versions and device."""
    return {
        "backend": spec.backend,
        "device": spec.device,
        "precision": spec.precision,
        "batch_size": spec.batch_size,
        "threads": resolved_threads(spec.threads),
        "options": fingerprint_options(spec),
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "os": platform.system(),
    }
