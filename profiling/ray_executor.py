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
from profiling.runner import (
    FailureBreaker,
    GroupOutcome,
    Prepared,
    ProfileSummary,
    Result,
    error_text,
    export_group,
    make_row,
    measure_group,
    open_backend,
    reference_runner,
    start_run,
)
from profiling.store import ProfileStore, utc_now
from targets.errors import UserError
from targets.spec import TargetSpec
from targets.timing import Protocol, fingerprint_key, measurement_fingerprint

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


def _measure_on_device(
    spec: TargetSpec,
    protocol: Protocol,
    source: CandidateSource | None,
    items: list[tuple[Candidate, bytes | None, str | None, str]],
) -> dict[str, Any]:
    """Compile and time one group on this host; plain data back (no pickle written to disk)."""
    backend = open_backend(spec)
    reference = reference_runner(backend, spec, protocol)
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-ray-") as tmp:
            prepared: list[Prepared] = []
            for cand, data, error, started in items:
                path = None
                if data is not None:
                    path = str(Path(tmp) / f"{cand.arch_hash[:24]}.onnx")
                    Path(path).write_bytes(data)
                prepared.append(Prepared(cand, path, error, started))
            outcome = measure_group(backend, protocol, source, prepared, reference)
    finally:
        if reference is not None:
            reference.close()
    return {
        "results": [asdict(r) for r in outcome.results],
        "compile_s": outcome.compile_s,
        "timing_s": outcome.timing_s,
        "fingerprint": backend.fingerprint(),
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
    samples: int,
    *,
    seed: int = 0,
    address: str | None = None,
    group_size: int = 8,
    progress: bool = True,
    retry_failed: bool = False,
    protocol: Protocol | None = None,
    max_in_flight: int | None = None,
    num_cpus: float = 1.0,
    breaker: FailureBreaker | None = None,
) -> ProfileSummary:
    """`run_profile` with measurement groups sent to Ray device hosts (see module doc)."""
    ray = import_ray()
    protocol = protocol or Protocol.for_target(spec)
    t_start = time.perf_counter()
    resource = resource_name(spec)
    opened = _connect(ray, address, spec)
    try:
        devices = ray.cluster_resources().get(resource, 0)
        if devices < 1:
            raise UserError(
                f"no Ray node advertises the resource '{resource}'; on each device host run "
                f"`ray start --address HEAD:6379 --resources '{{\"{resource}\": 1}}'`"
            )
        opts = {"resources": {resource: 1}, "num_cpus": num_cpus}
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
        key = fingerprint_key(fp)
        capacity = max_in_flight or int(devices) + 1  # one queued group keeps a device busy
        return _drive(
            ray, remote, source, spec, store, samples, seed, group_size, progress,
            retry_failed, protocol, fp, key, capacity, t_start,
            breaker or FailureBreaker(spec.name, 16),
        )  # fmt: skip
    finally:
        if opened:
            with contextlib.suppress(Exception):
                ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else ""


def _drive(
    ray: Any,
    remote: Any,
    source: CandidateSource,
    spec: TargetSpec,
    store: ProfileStore,
    samples: int,
    seed: int,
    group_size: int,
    progress: bool,
    retry_failed: bool,
    protocol: Protocol,
    fp: dict[str, Any],
    key: str,
    capacity: int,
    t_start: float,
    breaker: FailureBreaker,
) -> ProfileSummary:
    include_failed = not retry_failed
    summary, bar, stream, claimer = start_run(
        store, source, spec, key, samples, seed, include_failed,
        executor="ray", overlap=True, progress=progress,
    )  # fmt: skip
    run_id = summary.run_id
    phases = summary.phases
    in_flight: dict[Any, list[Prepared]] = {}
    odd_hosts: set[str] = set()
    try:
        with tempfile.TemporaryDirectory(prefix=f"hwnas-profile-{os.getpid()}-") as tmp:
            while True:
                while len(in_flight) < capacity:
                    t0 = time.perf_counter()
                    s0, w0 = stream.sample_s, claimer.wait_s
                    pending = sum(len(g) for g in in_flight.values())
                    group = claimer.next_group(group_size, pending, wait=not in_flight)
                    phases["sample"] += stream.sample_s - s0
                    phases["wait"] += claimer.wait_s - w0
                    phases["store"] += time.perf_counter() - t0 - (stream.sample_s - s0)
                    phases["store"] -= claimer.wait_s - w0
                    if not group:
                        break
                    t0 = time.perf_counter()
                    prepared = export_group(source, group, tmp, spec.batch_size)
                    items = []
                    for p in prepared:
                        data = Path(p.onnx_path).read_bytes() if p.onnx_path else None
                        if p.onnx_path:
                            Path(p.onnx_path).unlink(missing_ok=True)
                        items.append((p.candidate, data, p.error, p.started_at))
                    phases["export"] += time.perf_counter() - t0
                    # only eager torch rebuilds the module on the device; ONNX backends need
                    # nothing of the space there
                    shipped = source if spec.backend == "torch" else None
                    in_flight[remote.remote(spec, protocol, shipped, items)] = prepared
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
                    rows_fp = measurement_fingerprint(outcome.fingerprint or fp, protocol)
                    if fingerprint_key(rows_fp) != key and outcome.host not in odd_hosts:
                        odd_hosts.add(outcome.host)
                        warnings.warn(
                            f"device host {outcome.host} has another fingerprint than the "
                            f"first device of target {spec.name}; its rows keep their own "
                            "fingerprint (give different devices different target names)",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    t0 = time.perf_counter()
                    for p, res in zip(prepared, outcome.results, strict=True):
                        row = make_row(
                            kind="profile",
                            candidate=p.candidate,
                            source=source,
                            spec=spec,
                            fingerprint=rows_fp,
                            result=res,
                            run_id=run_id,
                            host=outcome.host,
                            pid=outcome.pid,
                        )
                        _, stored_kind = store.insert_measurement(row, release_run_id=run_id)
                        if stored_kind != "profile":
                            summary.kept_as_repeat += 1
                        elif res.status == "ok":
                            summary.ok += 1
                        else:
                            summary.failed += 1
                        breaker.record(res)
                    phases["store"] += time.perf_counter() - t0
                    bar.set(claimer.done(), summary.ok, summary.failed)
                    breaker.check()
            summary.exhausted = stream.exhausted
    finally:
        for ref in in_flight:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        bar.close()
        with contextlib.suppress(UserError):
            store.release_claims(run_id)
    summary.done_after = store.count_done(key, include_failed=include_failed)
    summary.wall_s = time.perf_counter() - t_start
    return summary


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
        fingerprint=out["fingerprint"],
        host=out["host"],
        pid=out["pid"],
    )
