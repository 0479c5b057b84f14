"""The predictor's interface for the search: device, encoding layout vs deploy space, and
unstable rows left out of fitting. Latencies are synthetic (nothing is timed)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.search.predictor_check import check_predictor_for_search, predictor_deploy_space
from hwnas.space import SpaceConfig, get_space, sample_architectures
from hwnas.space.encoding import encode, encoding_layout
from predictor import (
    MLPConfig,
    ProfileQuery,
    build_header,
    fit_predictor,
    load_profiles,
    save_predictor,
)
from predictor.io import check_layout, deploy_space_config, layout_hash, load_predictor
from predictor.synthetic import write_store
from targets.basics import UserError


def _latency(X: np.ndarray) -> np.ndarray:
    """Per-entry costs that differ by position, so a broken layout check would matter."""
    w = np.linspace(0.01, 0.05, X.shape[1])
    return 0.5 + X @ w


def _store(path: Path, n: int = 120) -> tuple[SpaceConfig, list[str]]:
    space = get_space("tiny")
    layout = encoding_layout(space)
    archs = sample_architectures(space, 3, n)
    X = np.stack([encode(a) for a in archs])
    write_store(
        path,
        [(a.hash, a.to_json(None), x.tolist(), float(t)) for a, x, t in zip(archs, X, _latency(X), strict=True)],
        space_name=space.name,
        space_key=space.key,
        space_config=space.to_dict(),
        layout=layout,
        repeat_fraction=0.0,
    )
    return space, layout


def _flag_unstable(db: Path, every: int) -> int:
    """Mark every `every`-th profile row unstable (stable = 0), the rest stable; returns how many."""
    con = sqlite3.connect(db)
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(measurements)")}
        if "stable" not in cols:  # the synthetic store's schema may predate the column
            con.execute("ALTER TABLE measurements ADD COLUMN stable INTEGER")
        con.execute("UPDATE measurements SET stable = CASE WHEN id % ? = 0 THEN 0 ELSE 1 END", (every,))
        con.commit()
        return int(con.execute("SELECT COUNT(*) FROM measurements WHERE stable = 0").fetchone()[0])
    finally:
        con.close()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("search_api")
    db = folder / "tiny.db"
    space, layout = _store(db)
    ds = load_profiles(db, "ort-cpu")
    result = fit_predictor(ds, cfg=MLPConfig(members=1, max_epochs=30), baselines=(), seed=0)
    path = folder / "tiny.pt"
    save_predictor(path, result.model, build_header(result.model, ds, result.report))
    return space, layout, path, db


def test_load_on_cpu_and_predict_to_numpy(fitted) -> None:
    space, _, path, _ = fitted
    model = load_predictor(path, device="cpu")
    assert model.device == torch.device("cpu")
    X = np.stack([encode(a) for a in sample_architectures(space, 9, 4)])
    out = model.predict_ms(X)
    assert isinstance(out, np.ndarray) and out.shape == (4,) and np.all(out > 0)
    assert np.allclose(out, load_predictor(path).predict_ms(X))


def test_bad_or_missing_device_is_a_user_error(fitted) -> None:
    _, _, path, _ = fitted
    with pytest.raises(UserError, match="not a torch device"):
        load_predictor(path, device="toaster")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA"):
            load_predictor(path, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_predictor_on_gpu_matches_cpu(fitted) -> None:  # pragma: no cover - needs a GPU
    space, _, path, _ = fitted
    X = np.stack([encode(a) for a in sample_architectures(space, 9, 4)])
    gpu = load_predictor(path, device="cuda")
    assert gpu.device.type == "cuda"
    assert np.allclose(gpu.predict_ms(X), load_predictor(path).predict_ms(X), rtol=1e-4)
    enc = torch.as_tensor(X)  # a CPU tensor is moved to the predictor's device
    assert gpu(enc).device.type == "cuda"


def test_layout_hash_depends_on_names_and_order() -> None:
    names = encoding_layout(get_space("tiny"))
    assert layout_hash(names) == layout_hash(list(names))
    assert layout_hash(names) != layout_hash(names[::-1])
    assert layout_hash(names) != layout_hash(names[:-1])


def test_check_layout(fitted) -> None:
    space, layout, path, _ = fitted
    model = load_predictor(path)
    assert model.header["encoding_layout_hash"] == layout_hash(layout)
    check_layout(model, layout)
    check_layout(model, encoding_layout(dataclasses.replace(space, channels=4)))
    other = encoding_layout(dataclasses.replace(space, depth_choices=(1, 2)))
    with pytest.raises(UserError, match="encodes architectures differently"):
        check_layout(model, other)


def test_search_space_may_differ_in_width_only(fitted) -> None:
    space, _, path, _ = fitted
    model = load_predictor(path)
    assert deploy_space_config(model) == space.to_dict()
    narrow = dataclasses.replace(space, name="tiny-proxy", channels=4)
    deploy = check_predictor_for_search(model, narrow)
    assert deploy == space and deploy.key == model.header["space_key"]
    assert check_predictor_for_search(model, space) == space

    # same layout (same nodes, depth choices, window) but another network: refused
    with pytest.raises(UserError, match=r"input_size=16.*only the width"):
        check_predictor_for_search(model, dataclasses.replace(space, input_size=16))
    digits = get_space("digits")
    assert encoding_layout(digits) == encoding_layout(space)
    with pytest.raises(UserError, match="in_channels=1"):
        check_predictor_for_search(model, digits)
    # another layout: refused by the layout check, naming the search space
    with pytest.raises(UserError, match="search space 'tiny' encodes architectures differently"):
        check_predictor_for_search(model, dataclasses.replace(space, nodes=3))


def test_a_class_count_variant_keeps_the_predictor_another_channel_count_does_not(fitted) -> None:
    """README 'Your own data': the classifier's class count barely changes latency, so a
    predictor of `tiny` holds for `tiny-3class` (the network that ships is tiny's with 3
    classes, and the search says so); 1-channel input changes the stem: refused, naming
    the commands that profile and fit the variant."""
    from hwnas.search.latency import LatencyTerm
    from hwnas.search.predictor_check import head_note
    from hwnas.space import space_variant

    space, _, path, _ = fitted
    model = load_predictor(path)
    three = space_variant(space, num_classes=3)
    deploy = check_predictor_for_search(model, three)
    assert deploy == three  # tiny's network and width, 3 classes
    assert head_note(model, space) is None
    assert "fitted on space 'tiny' (10 classes); this network ('tiny-3class') has 3: its predictions hold" in (
        head_note(model, three) or ""
    )
    term = LatencyTerm(model, deploy)
    arch = sample_architectures(three, 0, 1)[0]
    assert term.derived_ms(arch) == pytest.approx(float(model.predict_ms(encode(arch)[None])[0]), rel=1e-5)
    # ... within 1 % of the network's multiply-adds: a 1000-way classifier is another network
    with pytest.raises(UserError, match=r"num_classes=1000 \(deploy 10: a classifier change of .* over 1%\)"):
        check_predictor_for_search(model, space_variant(space, num_classes=1000))
    grey = space_variant(space, in_channels=1, num_classes=3)
    with pytest.raises(UserError, match=r"in_channels=1 \(deploy 3\).*hwnas profile --space tiny-1ch-3class"):
        check_predictor_for_search(model, grey)


def test_deploy_space_refused_when_this_hwnas_keys_it_differently(fitted) -> None:
    _, _, path, _ = fitted
    model = load_predictor(path)
    model.header = {**model.header, "space_key": "0" * 64}
    with pytest.raises(UserError, match="network changed"):
        predictor_deploy_space(model)


def test_unstable_rows_are_left_out_unless_asked(tmp_path: Path, cli) -> None:
    db = tmp_path / "tiny.db"
    _store(db, n=100)
    flagged = _flag_unstable(db, every=4)
    assert flagged > 10
    ds = load_profiles(db, "ort-cpu")
    assert len(ds) == 100 - flagged and ds.stats["unstable_rows"] == flagged
    full = load_profiles(db, "ort-cpu", ProfileQuery(include_unstable=True))
    assert len(full) == 100 and full.stats["include_unstable"] is True

    out = tmp_path / "p.pt"
    common = ("--db", db, "--target", "ort-cpu", "--no-baselines", "--members", "1", "--max-epochs", "5",
              "--relaxed-points", "0")
    code, _, err = cli("predictor", "fit", *common, "--out", out)
    assert code == 0, err
    h = load_predictor(out).header
    assert h["include_unstable"] is False and h["n_train"] + h["n_val"] + h["n_test"] == 100 - flagged
    code, _, err = cli("predictor", "fit", *common, "--out", out, "--include-unstable")
    assert code == 0, err
    h = load_predictor(out).header
    assert h["include_unstable"] is True and h["n_train"] + h["n_val"] + h["n_test"] == 100


def test_only_unstable_rows_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "tiny.db"
    _store(db, n=60)
    _flag_unstable(db, every=1)
    with pytest.raises(UserError, match="flagged unstable.*--include-unstable"):
        load_profiles(db, "ort-cpu")
    assert len(load_profiles(db, "ort-cpu", ProfileQuery(include_unstable=True))) == 60
