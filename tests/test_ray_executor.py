"""The Ray executor against a local Ray instance started here (one 'device': target:debug)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from profiling.ray_executor import import_ray
from profiling.runner import ProfileSettings, run_profile
from profiling.store import ProfileStore
from profiling.synthetic import SyntheticCandidates
from targets.basics import UserError
from targets.registry import load_target
from targets.timing import Protocol

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'hwnas[ray]')")


def _fast() -> Protocol:
    want = {"warmup": 1, "min_rounds": 2, "rounds": 2, "runs_per_round": 3, "round_warmup": 0}
    known = {f.name for f in fields(Protocol)}
    return Protocol.from_overrides({k: v for k, v in want.items() if k in known})


def test_missing_ray_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match=r"pip install 'hwnas\[ray\]'"):
        import_ray()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'hwnas[ray]')")
    ray.init(
        num_cpus=2,
        resources={"target:debug": 1},
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@needs_ray
@pytest.mark.slow
def test_ray_profile_streams_rows_into_the_store(local_ray, tmp_path: Path) -> None:
    spec = load_target("debug")
    src = SyntheticCandidates(fail_every=5)
    db = tmp_path / "p.db"
    with ProfileStore(db) as st:
        s = run_profile(
            src, spec, st, 7,
            settings=ProfileSettings(executor="ray", group_size=3, progress=False, protocol=_fast()),
        )
        assert (s.executor, s.written, s.done_after) == ("ray", 7, 7)
        assert s.failed == 1 and s.device_s["timing"] > 0
        rows = list(st.rows())
        assert len(rows) == 7 and len({r["arch_hash"] for r in rows}) == 7
        ok = [r for r in rows if r["status"] == "ok"]
        assert all(r["latency_ms"] > 0 and r["reference_ms"] > 0 for r in ok)
        assert all(r["host"] and r["pid"] for r in rows)
        (failed,) = [r for r in rows if r["status"] == "failed"]
        assert failed["error"].startswith("export failed")
        # rerun (local executor, same fingerprint) continues to N without duplicates
        local = ProfileSettings(progress=False, protocol=_fast())
        more = run_profile(src, spec, st, 9, settings=local)
        assert more.done_before == 7 and more.written == 2
        assert st.integrity_check() == "ok"


@needs_ray
@pytest.mark.slow
def test_ray_without_a_device_for_the_target(local_ray, tmp_path: Path) -> None:
    spec = replace(load_target("debug"), name="debug-nodevice")
    with ProfileStore(tmp_path / "p.db") as st, pytest.raises(UserError) as err:
        settings = ProfileSettings(executor="ray", progress=False)
        run_profile(SyntheticCandidates(), spec, st, 2, settings=settings)
    assert "target:debug-nodevice" in str(err.value) and "ray start" in str(err.value)


@needs_ray
@pytest.mark.slow
def test_cli_profile_with_ray(local_ray, cli, tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    code, out, err = cli(
        "profile", "--space", "tiny", "--target", "debug", "--samples", "2", "--db", db,
        "--executor", "ray", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["executor"] == "ray" and summary["done_after"] == 2
    with ProfileStore(db) as st:
        assert st.count_rows(kind="profile", status="ok") == 2


def _drifted(tmp_path: Path):
    """The debug target with its own cache, whose reference baseline no real run can match:
    every group's reference looks slow, so the drift check marks every figure unstable."""
    from targets.fingerprint import fingerprint_key
    from targets.reference import REFERENCE_VERSION
    from targets.registry import create_backend

    debug = load_target("debug")
    cache = tmp_path / "cache"
    spec = replace(debug, options={**debug.options, "cache_dir": str(cache)})
    key = fingerprint_key(create_backend(spec).fingerprint())
    cache.mkdir()
    baseline = {f"{key}:{_fast().statistic}:ref-v{REFERENCE_VERSION}": [1e-9] * 8}
    (cache / "reference-recent.json").write_text(json.dumps(baseline))
    return spec


def _items(tmp_path: Path, n: int) -> list:
    """What the driver ships to a device: candidates with their ONNX bytes."""
    src, items = SyntheticCandidates(), []
    for i in range(n):
        cand = src.sample(0, i)
        path = tmp_path / f"{i}.onnx"
        src.export(cand.arch_json, path, 1)
        items.append((cand, path.read_bytes(), None, "t0"))
    return items


def test_a_failing_reference_is_compiled_afresh(tmp_path: Path, monkeypatch) -> None:
    import profiling.ray_executor as rx
    from targets.backends.base import Runner

    class Broken(Runner):
        closed = False

        def run(self) -> None:
            raise RuntimeError("reference fell over")

        def close(self) -> None:
            Broken.closed = True

    monkeypatch.setattr(rx, "_DEVICES", {})
    spec = _drifted(tmp_path)
    device, _ = rx._device(spec, _fast())
    device.reference.close()
    device.reference = Broken()
    out = rx._measure_on_device(spec, _fast(), None, _items(tmp_path, 1))
    (res,) = out["results"]
    assert res["status"] == "failed" and "__reference__" in res["error"]
    assert rx._DEVICES == {} and Broken.closed  # the next group compiles it again


def test_device_compiles_the_reference_once_per_worker(tmp_path: Path, monkeypatch) -> None:
    """What a Ray task runs, called here twice in one process: one reference compile."""
    import profiling.ray_executor as rx

    compiled = []
    real = rx.reference_runner

    def counting(*args):
        compiled.append(1)
        return real(*args)

    monkeypatch.setattr(rx, "reference_runner", counting)
    monkeypatch.setattr(rx, "_DEVICES", {})
    spec, items = _drifted(tmp_path), _items(tmp_path, 2)
    try:
        first = rx._measure_on_device(spec, _fast(), None, items[:1], 1)
        second = rx._measure_on_device(spec, _fast(), None, items[1:], 1)
    finally:
        for device in rx._DEVICES.values():
            device.close()
    assert len(compiled) == 1
    assert (first["reference_compiled"], second["reference_compiled"]) == (True, False)
    for out in (first, second):  # drift check applied on the device, then re-timed once
        (res,) = out["results"]
        assert res["status"] == "ok" and res["measurement"]["stable"] is False
        assert out["remeasured"] == 1


@needs_ray
@pytest.mark.slow
def test_ray_profile_checks_drift_and_remeasures(local_ray, tmp_path: Path) -> None:
    """The Ray path applies the reference-drift check to its rows and honours
    --remeasure-unstable, like the local path; the reference compiles once per worker."""
    spec = _drifted(tmp_path)
    with ProfileStore(tmp_path / "p.db") as st:
        s = run_profile(
            SyntheticCandidates(), spec, st, 6,
            settings=ProfileSettings(
                executor="ray", group_size=2, progress=False, protocol=_fast(), remeasure_unstable=1
            ),
        )  # fmt: skip
        rows = list(st.rows())
    assert (s.ok, s.failed) == (6, 0)
    assert all(r["stable"] == 0 and r["reference_ms"] > 0 for r in rows)
    assert s.remeasured == 6  # every figure unstable, each timed once more
    assert s.reference_compiles == len({r["pid"] for r in rows})  # once per worker process
