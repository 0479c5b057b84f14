"""Profile on a fleet of devices with Ray: one task per measurement group, one group per
device at a time, results streamed back into the one store.

How a fleet is set up: every device host joins the cluster advertising the targets it can
time as Ray custom resources, one unit per device, e.g.

    ray start --address HEAD:6379 --resources '{"target:ort-cpu": 1}'

and the driver runs `hwnas profile ... --executor ray --address HEAD:6379`. A measurement
task asks for `{"target:<name>": 1}`, so Ray never runs two measurements on one device at
once. The driver samples, claims and exports (so device hosts spend their time timing, and
export overlaps timing for free); it ships the ONNX bytes to the device, and writes each
result to the store, one transaction per row, as `ray.wait` hands it back. Only the
driver touches the store.

Without `--address` the driver joins a cluster already running on this machine, or starts
a local one that advertises this target once (a fleet of one, for trying it out).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from profiling.candidates import Candidate, CandidateSource
from profiling.groups import (
    REMEASURE_UNSTABLE,
    Drift,
    export_group,
    measure_group,
    open_backend,
    reference_runner,
)
from profiling.results import GroupOutcome, Prepared, ProfileSummary, Result, error_text
from profiling.session import FailureBreaker, ProfileRun, ProfileSettings
from profiling.store import ProfileStore, utc_now
from targets.backends.base import Backend, Runner
from targets.basics import UserError
from targets.fingerprint import fingerprint_key
from targets.spec import TargetSpec
from targets.timing import REFERENCE_NAME, Protocol, measurement_fingerprint

RAY_EXTRA = "pip install 'hwnas[ray]'"
PROBE_TIMEOUT_S = 300.0


def resource_name(spec: TargetSpec) -> str:
    """The Ray custom resource a device host advertises for this target."""
    return f"target:{spec.name}"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(
            f"the Ray executor needs ray, which is not installed ({exc}); {RAY_EXTRA}"
        ) from None
    return ray


# -- what runs on a device host ----------------------------------------------------------


def _probe(spec: TargetSpec) -> dict[str, Any]:
    """The fingerprint of the device host that runs this task."""
    backend = open_backend(spec)
    return {"fingerprint": backend.fingerprint(), "host": socket.gethostname()}


class _Device:
    """A device host's open backend and compiled reference network, kept by the worker
    process between tasks: the reference is compiled once per worker, not once per group."""

    def __init__(self, spec: TargetSpec, protocol: Protocol) -> None:
        self.backend: Backend = open_backend(spec)
        self.fingerprint = self.backend.fingerprint()
        self.drift = Drift.for_target(self.backend, spec)
        self.reference: Runner | None = reference_runner(self.backend, spec, protocol)

    def close(self) -> None:
        if self.reference is not None:
            with contextlib.suppress(Exception):
                self.reference.close()
            self.reference = None


_DEVICES: dict[str, _Device] = {}  # per worker process: (spec, reference on/off) -> device


def _device_key(spec: TargetSpec, protocol: Protocol) -> str:
    return repr((spec, protocol.reference))


def _device(spec: TargetSpec, protocol: Protocol) -> tuple[_Device, bool]:
    """This worker's device for `spec`, opened on first use; True when opened now."""
    key = _device_key(spec, protocol)
    device = _DEVICES.get(key)
    if device is not None:
        return device, False
    device = _DEVICES[key] = _Device(spec, protocol)
    return device, True


def _measure_on_device(
    spec: TargetSpec,
    protocol: Protocol,
    source: CandidateSource | None,
    items: list[tuple[Candidate, bytes | None, str | None, str]],
    remeasure_unstable: int = REMEASURE_UNSTABLE,
) -> dict[str, Any]:
    """Compile and time one group on this host; plain data back (no pickle written to disk)."""
    device, opened = _device(spec, protocol)
    with tempfile.TemporaryDirectory(prefix="hwnas-ray-") as tmp:
        prepared: list[Prepared] = []
        for cand, data, error, started in items:
            path = None
            if data is not None:
                path = str(Path(tmp) / f"{cand.arch_hash[:24]}.onnx")
                Path(path).write_bytes(data)
            prepared.append(Prepared(cand, path, error, started))
        outcome = measure_group(
            device.backend, protocol, source, prepared, device.reference, remeasure_unstable,
            device.drift,
        )  # fmt: skip
    if any(r.error and REFERENCE_NAME in r.error for r in outcome.results):
        # the reference itself failed: compile it afresh for the next group
        _DEVICES.pop(_device_key(spec, protocol), None)
        device.close()
    return {
        "results": [asdict(r) for r in outcome.results],
        "compile_s": outcome.compile_s,
        "timing_s": outcome.timing_s,
        "remeasured": outcome.remeasured,
        "reference_compiled": opened and device.reference is not None,
        "fingerprint": device.fingerprint,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


# -- the driver ----------------------------------------------------------------------------


def _connect(ray: Any, address: str | None, spec: TargetSpec) -> bool:
    """Join the cluster; returns True when this call started or joined it (so we leave it)."""
    if ray.is_initialized():
        if address is not None:
            warnings.warn(
                "Ray is already initialised in this process; ignoring --address",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            try:
                ray.init(address="auto", **kwargs)
            except ConnectionError:
                ray.init(resources={resource_name(spec): 1}, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ray raises many types for a bad address
        where = address or "this machine"
        raise UserError(
            f"cannot connect to the Ray cluster at {where}: {type(exc).__name__}: {exc}; "
            "check --address (e.g. HEAD_IP:6379) and that `ray start --head` runs there"
        ) from None
    return True


def run_profile_ray(
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int | None,
    *,
    settings: ProfileSettings,
    breaker: FailureBreaker | None = None,
) -> ProfileSummary:
    """`run_profile` with measurement groups sent to Ray device hosts (see module doc)."""
    ray = import_ray()
    protocol = settings.protocol or Protocol.for_target(spec)
    t_start = time.perf_counter()
    resource = resource_name(spec)
    opened = _connect(ray, settings.address, spec)
    try:
        devices = ray.cluster_resources().get(resource, 0)
        if devices < 1:
            raise UserError(
                f"no Ray node advertises the resource '{resource}'; on each device host run "
                f"`ray start --address HEAD:6379 --resources '{{\"{resource}\": 1}}'`"
            )
        opts = {"resources": {resource: 1}, "num_cpus": settings.num_cpus}
        probe = ray.remote(_probe).options(max_retries=1, **opts)
        remote = ray.remote(_measure_on_device).options(max_retries=1, **opts)
        try:
            probed = ray.get(probe.remote(spec), timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                f"a Ray device host for '{resource}' could not open target {spec.name}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from None
        fp = measurement_fingerprint(probed["fingerprint"], protocol)  # keyed by protocol too
        breaker = breaker or FailureBreaker(spec.cli_ref, settings.max_failures_in_a_row)
        run = ProfileRun(
            store, source, spec, fingerprint_key(fp), samples, settings, breaker=breaker
        )
        # one queued group keeps a device busy
        capacity = settings.max_in_flight or int(devices) + 1
        task = _Task(remote, spec, protocol, settings.remeasure_unstable)
        _drive(ray, task, run, settings.group_size, fp, capacity)
        return run.finish(t_start)
    finally:
        if opened:
            with contextlib.suppress(Exception):
                ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else ""


class _Task:
    """Submits a measurement group to a device host."""

    def __init__(self, remote: Any, spec: TargetSpec, protocol: Protocol, remeasure: int) -> None:
        self.remote, self.spec, self.protocol, self.remeasure = remote, spec, protocol, remeasure

    def submit(self, source: CandidateSource, prepared: list[Prepared]) -> Any:
        items = []
        for p in prepared:
            data = Path(p.onnx_path).read_bytes() if p.onnx_path else None
            if p.onnx_path:
                Path(p.onnx_path).unlink(missing_ok=True)
            items.append((p.candidate, data, p.error, p.started_at))
        # only eager torch rebuilds the module on the device; ONNX backends need nothing
        # of the space there
        shipped = source if self.spec.backend == "torch" else None
        return self.remote.remote(self.spec, self.protocol, shipped, items, self.remeasure)


def _drive(
    ray: Any, task: _Task, run: ProfileRun, group_size: int, fp: dict[str, Any], capacity: int
) -> None:
    """Keep up to `capacity` groups on the devices; store each as it comes back."""
    spec, phases, summary = run.spec, run.phases, run.summary
    in_flight: dict[Any, list[Prepared]] = {}
    odd_hosts: set[str] = set()
    try:
        with tempfile.TemporaryDirectory(prefix=f"hwnas-profile-{os.getpid()}-") as tmp:
            while True:
                while len(in_flight) < capacity:
                    pending = sum(len(g) for g in in_flight.values())
                    group = run.claim(group_size, pending, wait=not in_flight)
                    if not group:
                        break
                    t0 = time.perf_counter()
                    prepared = export_group(run.source, group, tmp, spec.batch_size)
                    ref = task.submit(run.source, prepared)
                    phases["export"] += time.perf_counter() - t0
                    in_flight[ref] = prepared
                if not in_flight:
                    break
                t0 = time.perf_counter()
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                phases["wait"] += time.perf_counter() - t0  # the driver waits on devices
                for ref in ready:
                    prepared = in_flight.pop(ref)
                    outcome = _collect(ray, ref, prepared, fp)
                    device = summary.device_s
                    device["compile"] = device.get("compile", 0.0) + outcome.compile_s
                    device["timing"] = device.get("timing", 0.0) + outcome.timing_s
                    summary.reference_compiles += int(outcome.reference_compiled)
                    rows_fp = measurement_fingerprint(outcome.fingerprint or fp, task.protocol)
                    if fingerprint_key(rows_fp) != run.key and outcome.host not in odd_hosts:
                        odd_hosts.add(outcome.host)
                        warnings.warn(
                            f"device host {outcome.host} has another fingerprint than the "
                            f"first device of target {spec.name}; its rows keep their own "
                            "fingerprint (give different devices different target names)",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    run.store_group(prepared, outcome, rows_fp)
    finally:
        for ref in in_flight:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        run.close()


def _collect(ray: Any, ref: Any, prepared: list[Prepared], fp: dict[str, Any]) -> GroupOutcome:
    """A finished task's results; a task that died becomes failed rows, not a crash."""
    try:
        out = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - worker crash, node loss, ...
        now = utc_now()
        err = error_text("ray task", RuntimeError(f"{type(exc).__name__}: {_first_line(exc)}"))
        return GroupOutcome(
            results=[
                Result(p.candidate.arch_hash, "failed", p.error or err, None, p.started_at, now)
                for p in prepared
            ],
            fingerprint=fp,
            host="",
            pid=0,
        )
    return GroupOutcome(
        results=[Result(**r) for r in out["results"]],
        compile_s=out["compile_s"],
        timing_s=out["timing_s"],
        remeasured=out["remeasured"],
        reference_compiled=out["reference_compiled"],
        fingerprint=out["fingerprint"],
        host=out["host"],
        pid=out["pid"],
    )
