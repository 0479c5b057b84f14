"""The network version in the space key: stores and predictors of the old macro network are
refused with a message that says why and what to run; space configs from files are bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.space import (
    NETWORK_VERSION,
    SPACE_BOUNDS,
    Architecture,
    SpaceConfig,
    get_space,
    sample_architectures,
    save_architecture,
    sha256_hex,
)
from hwnas.space.encoding import encode, encoding_layout
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    check_space,
    fit_predictor,
    load_predictor,
    load_profiles,
    save_predictor,
)
from profiling.store import ProfileStore
from targets.basics import UserError

ROOT = Path(__file__).resolve().parents[1]


def _v1_config(name: str = "tiny") -> dict:
    """The space config as network version 1 stored it: no network_version, stem x3."""
    cfg = get_space(name).to_dict()
    del cfg["network_version"]
    cfg["stem_multiplier"] = 3
    return cfg


def test_network_version_is_in_the_space_key():
    space = get_space("tiny")
    assert space.network_version == NETWORK_VERSION == 2
    assert space.to_dict()["network_version"] == 2
    assert space.key == sha256_hex(space.to_dict())
    assert space.key != sha256_hex(_v1_config())


def test_old_architecture_file_is_refused_with_the_version(tmp_path: Path):
    data = sample_architectures(get_space("tiny"), 0, 1)[0].to_dict()
    data["space"] = _v1_config()
    with pytest.raises(UserError, match=r"a\.json: space: made for network version 1.*builds network version 2"):
        Architecture.from_dict(data, where="a.json")


def _row(i: int, arch: Architecture, fp: dict, fkey: str) -> dict:
    return {
        "kind": "profile",
        "arch_hash": arch.hash,
        "arch_json": arch.to_json(None),
        "encoding": encode(arch).tolist(),
        "space_name": arch.space.name,
        "space_key": "",  # filled by the caller
        "target_name": "ort-cpu",
        "fingerprint": fp,
        "fingerprint_key": fkey,
        "status": "ok",
        "error": None,
        "latency_ms": 1.0 + float(encode(arch).sum()) / 100 + i * 1e-4,
        "statistic": "min",
        "median_ms": 1.1,
        "p10_ms": 1.0,
        "min_ms": 1.0,
        "spread": 0.05,
        "repetitions": 40,
        "rounds": 4,
        "reference_ms": 2.0,
        "stable": True,
        "host": "h",
        "pid": 1,
        "run_id": "r",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
    }


@pytest.fixture(scope="module")
def v1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store bound to tiny's network-version-1 config, with 80 (fake-latency) profiles."""
    space = get_space("tiny")
    cfg = _v1_config()
    key = sha256_hex(cfg)
    db = tmp_path_factory.mktemp("v1") / "old.db"
    st = ProfileStore(db)
    st.bind_space("tiny", key, cfg, encoding_layout(space))
    fp = {"backend": "debug", "threads": 1}
    for i, arch in enumerate(sample_architectures(space, 0, 80)):
        st.insert_measurement({**_row(i, arch, fp, "f" * 64), "space_key": key})
    st.close()
    return db


def test_store_of_the_old_network_is_refused_with_profile_again(v1_store: Path):
    space = get_space("tiny")
    st = ProfileStore(v1_store)
    try:
        with pytest.raises(UserError) as err:
            st.bind_space(space.name, space.key, space.to_dict(), encoding_layout(space))
    finally:
        st.close()
    msg = str(err.value)
    assert f"profile store {v1_store} was profiled (space 'tiny') with network version 1" in msg
    assert "builds network version 2" in msg and "profile again into a new store (a new --db" in msg


def test_store_of_another_config_names_the_changed_field(tmp_path: Path):
    space = get_space("tiny")
    other = {**space.to_dict(), "channels": 12}
    st = ProfileStore(tmp_path / "p.db")
    try:
        st.bind_space("tiny", sha256_hex(other), other, encoding_layout(space))
        with pytest.raises(UserError, match=r"same name, different config \(channels: 12 -> 10\)"):
            st.bind_space(space.name, space.key, space.to_dict(), encoding_layout(space))
    finally:
        st.close()


@pytest.fixture(scope="module")
def v1_predictor(v1_store: Path) -> Path:
    ds = load_profiles(v1_store, "ort-cpu", ProfileQuery(min_samples=1))
    result = fit_predictor(ds, cfg=MLPConfig(members=1, max_epochs=5), baselines=(), seed=0)
    path = v1_store.parent / "old.pt"
    save_predictor(path, result.model, build_header(result.model, ds, result.report))
    return path


def test_predictor_of_the_old_network_is_refused_with_profile_again(v1_predictor: Path):
    space = get_space("tiny")
    model = load_predictor(v1_predictor)
    with pytest.raises(UserError) as err:
        check_space(model, space.key, what="a.json", space_config=space.to_dict())
    msg = str(err.value)
    assert "a.json: the predictor was fitted on profiles (space 'tiny') made with network version 1" in msg
    assert "profile again" in msg and "fit a new predictor" in msg


def _hwnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hwnas.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_cli_refuses_old_predictor(v1_predictor: Path, tmp_path: Path):
    arch = tmp_path / "a.json"
    save_architecture(sample_architectures(get_space("tiny"), 1, 1)[0], arch)
    res = _hwnas("predictor", "predict", str(v1_predictor), str(arch))
    assert res.returncode == 2
    assert f"{arch} (space 'tiny'): the predictor was fitted on profiles (space 'tiny') made with network version 1" in res.stderr
    assert "profile again" in res.stderr and "Traceback" not in res.stderr


def test_old_predictor_config_is_refused_when_rebuilt(v1_predictor: Path):
    """The search rebuilds the predictor's deploy SpaceConfig from its header: refused, saying why."""
    header = load_predictor(v1_predictor).header
    with pytest.raises(UserError, match=r"made for network version 1.*profile again and fit a new predictor"):
        SpaceConfig.from_dict(header["space_config"], where="the predictor's space config")


# -- bounds on space configs from files ---------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("nodes", 10**6, "1..12"),
        ("channels", 10**6, "2..1024"),
        ("window", 10**6, "2..16"),
        ("input_size", 10**5, "1..1024"),
        ("depth_choices", [1, 2, 10**6], "1..32"),
        ("depth_choices", [0], "1..32"),
        ("upsample", 0, "1..32"),
    ],
)
def test_space_config_from_a_file_is_bounded(field, value, limit):
    data = sample_architectures(get_space("tiny"), 0, 1)[0].to_dict()
    data["space"] = {**get_space("tiny").to_dict(), "name": "mine", field: value}
    with pytest.raises(UserError, match=rf"f\.json: space: .*{field}.*{limit}"):
        Architecture.from_dict(data, where="f.json")


def test_space_config_depth_choices_list_is_bounded():
    cfg = {**get_space("tiny").to_dict(), "name": "mine", "depth_choices": list(range(1, 10**5))}
    with pytest.raises(UserError, match=r"'depth_choices' must be a list of at most 32"):
        SpaceConfig.from_dict(cfg, where="f.json: space")
    with pytest.raises(UserError, match=r"'depth_choices'"):
        SpaceConfig.from_dict({**cfg, "depth_choices": 3}, where="f.json: space")
    with pytest.raises(UserError, match=r"depth_choices must be integers"):
        SpaceConfig.from_dict({**cfg, "depth_choices": [1.5]}, where="f.json: space")
    with pytest.raises(UserError, match=r"'name' must be a string of at most 64"):
        SpaceConfig.from_dict({**cfg, "depth_choices": [1], "name": "x" * 10**6}, where="f.json: space")


def test_space_bounds_admit_every_registered_space():
    for name in ("tiny", "digits", "cifar"):
        cfg = get_space(name)
        for field, (low, high) in SPACE_BOUNDS.items():
            values = getattr(cfg, field)
            for v in values if isinstance(values, tuple) else (values,):
                assert low <= v <= high
    assert 6 in get_space("cifar").depth_choices
