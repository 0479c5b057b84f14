"""hwnas.data.datasets: the search's data sets, their checks against the space, subsets, augmentation."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.data.datasets import (
    Augment,
    augment_batch,
    augment_image,
    load_dataset,
    stratified_subset,
)
from hwnas.space import SpaceConfig, get_space
from targets.basics import UserError

TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpg.tar.gz"
DIGITS = get_space("digits")
TINY = get_space("tiny")


def _space(**kw) -> SpaceConfig:
    base = {**TINY.to_dict(), "name": "test-space", **kw}
    return SpaceConfig.from_dict(base)


# -- digits -----------------------------------------------------------------------------------
def test_digits_shapes_classes_and_fixed_test_set() -> None:
    a = load_dataset("digits", DIGITS, seed=0)
    b = load_dataset("digits", DIGITS, seed=5)
    assert a.num_classes == 10 and a.channels == 1 and a.input_size == DIGITS.input_size
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 359
    x, y = a.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the test set does not depend on the seed; it is normalised by the training statistics
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert abs(float(a.train.images.mean())) < 1e-4 and abs(float(a.train.images.std()) - 1) < 1e-3
    assert (
        a.train.augment is not None and not a.train.augment.flip
    )  # a mirrored digit is another glyph
    assert a.test.augment is None


def test_subset_is_stratified_seeded_and_the_search_split_halves_it() -> None:
    a = load_dataset("digits", DIGITS, subset=300, seed=1)
    again = load_dataset("digits", DIGITS, subset=300, seed=1)
    other = load_dataset("digits", DIGITS, subset=300, seed=2)
    assert len(a.train) == 300 and len(a.test) == 75
    counts = np.bincount(a.train.labels.numpy(), minlength=10)
    assert counts.sum() == 300 and counts.min() >= 29 and counts.max() <= 31  # class shares kept
    assert torch.equal(a.train.images, again.train.images)
    assert not torch.equal(a.train.images, other.train.images)

    w, arch = a.search_split(seed=0)
    iw, ia = set(w.indices), set(arch.indices)
    assert not iw & ia and len(iw | ia) == 300 and len(iw) == len(ia) == 150
    half = np.bincount(a.train.labels.numpy()[list(iw)], minlength=10)
    assert (np.abs(2 * half - counts) <= 1).all()  # each class split in two halves
    assert a.search_split(seed=0)[0].indices == w.indices
    assert a.search_split(seed=1)[0].indices != w.indices


def test_stratified_subset_keeps_every_class() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    idx = stratified_subset(labels, 10, seed=0)
    assert len(idx) == 10 and sorted(set(labels[idx].tolist())) == [0, 1, 2]
    assert len(stratified_subset(labels, 1000, seed=0)) == 100


def test_augmentation_crops_flips_cuts_out_reproducibly() -> None:
    x = torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) + 1
    aug = Augment(crop=True, flip=True, cutout=8)
    torch.manual_seed(0)
    a = [augment_image(x, aug) for _ in range(8)]
    torch.manual_seed(0)
    b = [augment_image(x, aug) for _ in range(8)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert all(t.shape == x.shape for t in a)
    assert any(not torch.equal(t, a[0]) for t in a[1:])
    # cutout alone: an 8x8 zero square (clipped at the border), in every channel
    cut = Augment(crop=False, flip=False, cutout=8)
    zeros = [int((augment_image(x, cut) == 0).all(0).sum()) for _ in range(20)]
    assert all(16 <= z <= 64 for z in zeros) and 64 in zeros
    flip_only = Augment(crop=False, flip=True)
    torch.manual_seed(1)
    outs = {augment_image(x, flip_only)[0, 0, 0].item() for _ in range(20)}
    assert outs == {x[0, 0, 0].item(), x[0, 0, -1].item()}


def _crop_flip_candidates(x: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every image `augment_image` can make from x by crop (offsets i, j) and flip."""
    h, w = x.shape[1:]
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    out = []
    for i in range(2 * pad + 1):
        for j in range(2 * pad + 1):
            crop = padded[:, i : i + h, j : j + w]
            out += [(i, j, False, crop), (i, j, True, crop.flip(-1))]
    return out


def test_batched_augmentation_has_the_per_image_semantics() -> None:
    """augment_batch (the GPU's path) draws other numbers than augment_image but from the
    same distributions: crop offsets uniform in [0, 2 pad], a flip half the time, a cutout
    square of the given side centred anywhere and clipped at the border."""
    x = torch.arange(3 * 16 * 16, dtype=torch.float32).reshape(3, 16, 16) + 1
    batch = x.expand(300, -1, -1, -1).contiguous()
    pad = 2
    out = augment_batch(batch, Augment(crop=True, crop_padding=pad, flip=True), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    cands = _crop_flip_candidates(x, pad)
    seen = []
    for img in out:
        match = [(i, j, f) for i, j, f, c in cands if torch.equal(img, c)]
        assert match, "an image no crop + flip of the source gives"
        seen.append(match[0])
    assert {i for i, _, _ in seen} == set(range(2 * pad + 1)) == {j for _, j, _ in seen}
    assert 0.4 < sum(f for _, _, f in seen) / len(seen) < 0.6
    # the default padding is input_size // 8, as per image
    default = augment_batch(batch[:40], Augment(crop=True, flip=False), torch.Generator().manual_seed(1))
    two = [c for i, j, f, c in _crop_flip_candidates(x, 16 // 8) if not f]
    assert all(any(torch.equal(img, c) for c in two) for img in default)
    # cutout alone, even and odd sides: an all-channel zero rectangle that augment_image's
    # formula gives for some centre (cy, cx), clipped at the border
    for side in (6, 5):
        cut = augment_batch(batch, Augment(crop=False, flip=False, cutout=side), torch.Generator().manual_seed(2))
        half, odd = side // 2, side % 2
        spans = {(max(0, c - half), min(16, c + half + odd)) for c in range(16)}
        areas = set()
        for img in cut:
            zero = (img == 0).all(0)
            assert torch.equal(img[:, ~zero], x[:, ~zero]) and (img == 0).any(0).eq(zero).all()
            rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
            r, c = (int(rows.min()), int(rows.max()) + 1), (int(cols.min()), int(cols.max()) + 1)
            assert r in spans and c in spans and int(zero.sum()) == (r[1] - r[0]) * (c[1] - c[0])
            areas.add(int(zero.sum()))
        assert side * side in areas and min(areas) < side * side  # inside, and clipped at a border
    # seeded: the same generator state, the same batch; another seed, another batch
    aug = Augment(crop=True, flip=True, cutout=4)
    a = augment_batch(batch[:16], aug, torch.Generator().manual_seed(7))
    b = augment_batch(batch[:16], aug, torch.Generator().manual_seed(7))
    c = augment_batch(batch[:16], aug, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- npz ----------------------------------------------------------------------------------------
def _npz(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_hwc_uint8_resized_with_its_own_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 10
    spec = _npz(tmp_path, x=x, y=y, x_test=x[:10], y_test=y[:10])
    d = load_dataset(spec, TINY)
    assert d.train.images.shape == (40, 3, 32, 32) and d.test.images.shape == (10, 3, 32, 32)
    assert d.num_classes == 10 and d.test.labels.tolist() == list(range(10))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((20, 32, 32, 4)), "y": np.arange(20) % 10}, "no axis of 3 channels"),
        ({"x": np.zeros((20, 32)), "y": np.arange(20) % 10}, "expected [N,H,W]"),
        ({"x": np.zeros((20, 32, 32)), "y": np.arange(20) % 10}, "1 channel(s) but space"),
        ({"x": np.zeros((20, 32, 32, 3)), "y": np.arange(20) % 5}, "5 classes but space"),
        ({"x": np.zeros((20, 32, 32, 3)), "y": np.arange(19) % 10}, "mislabelled"),
        ({"x": np.zeros((20, 32, 32, 3)), "y": np.arange(20) % 10 - 1}, "negative label"),
        (
            {"x": np.zeros((20, 32, 32, 3)), "y": (np.arange(20) % 10) + 0.5},
            "integer class indices",
        ),
        ({"x": np.zeros((0, 32, 32, 3)), "y": np.zeros(0, dtype=int)}, "empty"),
        ({"x": np.full((20, 32, 32, 3), np.nan), "y": np.arange(20) % 10}, "NaN"),
        ({"x": np.zeros((20, 32, 32, 3))}, "missing array"),
        (
            {
                "x": np.zeros((20, 32, 32, 3)),
                "y": np.arange(20) % 10,
                "x_test": np.zeros((2, 32, 32, 3)),
            },
            "both x_test",
        ),
        (
            {
                "x": np.zeros((20, 32, 32, 3)),
                "y": np.where(np.arange(20) % 10 == 3, 4, np.arange(20) % 10),
            },
            "no training image",
        ),
    ],
)
def test_npz_bad_input_is_one_clear_error(tmp_path: Path, arrays: dict, message: str) -> None:
    spec = _npz(tmp_path, **arrays)
    with pytest.raises(UserError) as err:
        load_dataset(spec, TINY)
    assert message in str(err.value)
    assert "d.npz" in str(err.value)


def test_bad_specs(tmp_path: Path) -> None:
    for spec, message in [
        ("mnist", "unknown dataset"),
        ("cifar10:", "needs a path"),
        (f"cifar10:{tmp_path / 'nope'}", "does not exist"),
        (f"npz:{tmp_path / 'nope.npz'}", "no such file"),
    ]:
        with pytest.raises(UserError, match=message):
            load_dataset(spec, TINY)
    with pytest.raises(UserError, match="--subset"):
        load_dataset("digits", DIGITS, subset=0)
    with pytest.raises(UserError, match="1 channel"):
        load_dataset("digits", TINY)  # digits are grey, tiny takes RGB


# -- CIFAR python batches (restricted unpickling) ----------------------------------------------
def _write_batches(folder: Path, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": (np.arange(n) % 10).tolist(),
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)


def test_cifar_python_batches(tmp_path: Path) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py")
    d = load_dataset(f"cifar10:{tmp_path}", TINY, subset=50, seed=0)
    assert len(d.train) == 50 and len(d.test) == 10 and d.classes[3] == "c3"
    assert d.train.images.shape[1:] == (3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_batch_that_would_run_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_batches(tmp_path / "c")
    with (tmp_path / "c" / "data_batch_3").open("wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(UserError, match="refused to load") as err:
        load_dataset(f"cifar10:{tmp_path / 'c'}", TINY)
    assert "data_batch_3" in str(err.value) and "posix.system" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_cifar_batch_of_the_wrong_shape(tmp_path: Path) -> None:
    _write_batches(tmp_path / "c")
    with (tmp_path / "c" / "test_batch").open("wb") as fh:
        pickle.dump(
            {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, fh, protocol=2
        )
    with pytest.raises(UserError, match=r"test_batch: 'data' has shape \[4, 100\]"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", TINY)


# -- image folders (a few real CIFAR-10 JPEGs from the shared tarball) --------------------------
@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} is absent (the shared data folder is not beside the repository)")
    root = tmp_path_factory.mktemp("cifar-jpg")
    counts: dict[str, int] = {}
    with tarfile.open(TARBALL, "r|gz") as tar:  # classes come in order: stream, stop early
        for m in tar:
            parts = m.name.split("/")
            if not m.isfile() or parts[0] != "train" or counts.get(parts[1], 0) >= 6:
                continue
            k = counts[parts[1]] = counts.get(parts[1], 0) + 1
            split = "test" if k > 4 else "train"
            dest = root / split / parts[1] / parts[2]
            dest.parent.mkdir(parents=True, exist_ok=True)
            fh = tar.extractfile(m)
            assert fh is not None
            dest.write_bytes(fh.read())
            if len(counts) == 10 and min(counts.values()) >= 6:
                break
    return root


def test_cifar_image_folder_and_its_tarball(cifar_folder: Path, tmp_path: Path) -> None:
    d = load_dataset(f"cifar10:{cifar_folder}", TINY)
    assert len(d.train) == 40 and len(d.test) == 20 and d.channels == 3
    assert d.classes[:3] == ["airplane", "automobile", "bird"]
    assert d.train.images.shape == (40, 3, 32, 32)
    assert np.bincount(d.test.labels.numpy()).tolist() == [2] * 10
    packed = tmp_path / "small.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(cifar_folder, arcname="cifar10")
    t = load_dataset(f"imagefolder:{packed}", TINY)
    assert torch.equal(t.train.images, d.train.images) and torch.equal(t.test.labels, d.test.labels)
    # resized to another space's input, grey images refused by an RGB space and vice versa
    small = load_dataset(f"imagefolder:{cifar_folder}", _space(input_size=16))
    assert small.train.images.shape == (40, 3, 16, 16)
    with pytest.raises(UserError, match="3 channel"):
        load_dataset(f"cifar10:{cifar_folder}", DIGITS)


def test_image_folder_bad_trees(cifar_folder: Path, tmp_path: Path) -> None:
    import shutil

    tree = tmp_path / "t"
    shutil.copytree(cifar_folder, tree)
    shutil.copytree(tree / "test" / "cat", tree / "test" / "kitten")
    with pytest.raises(UserError, match=r"test/ has class folder\(s\) \['kitten'\]"):
        load_dataset(f"imagefolder:{tree}", TINY)
    shutil.rmtree(tree / "test" / "kitten")
    shutil.rmtree(tree / "train" / "truck")
    shutil.rmtree(tree / "test" / "truck")
    with pytest.raises(UserError, match="9 class folders"):
        load_dataset(f"cifar10:{tree}", TINY)
    with pytest.raises(UserError, match="9 classes but space"):
        load_dataset(f"imagefolder:{tree}", TINY)
    (tree / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg is not a readable image"):
        load_dataset(f"imagefolder:{tree}", _space(num_classes=9))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="no images under train"):
        load_dataset(f"imagefolder:{empty}", TINY)


# -- the space takes the data's channels and classes (README 'Your own data') ------------------
def test_space_for_data_takes_the_data_channels_and_classes(tmp_path: Path) -> None:
    from hwnas.data.datasets import space_for_data

    y = np.arange(30) % 3
    grey = _npz(tmp_path, "grey.npz", x=np.zeros((30, 8, 8), dtype=np.uint8), y=y)
    rgb_hwc = _npz(tmp_path, "rgb.npz", x=np.zeros((30, 8, 8, 3), dtype=np.uint8), y=y)
    rgba_chw = _npz(tmp_path, "rgba.npz", x=np.zeros((30, 4, 8, 8), dtype=np.uint8), y=y)
    assert space_for_data(grey, TINY).name == "tiny-1ch-3class"
    assert space_for_data(rgb_hwc, TINY).name == "tiny-3class"
    assert space_for_data(rgb_hwc, DIGITS).name == "digits-3ch-3class"
    assert space_for_data(rgba_chw, TINY).name == "tiny-4ch-3class"
    assert space_for_data("digits", DIGITS) == DIGITS  # data that fits: the space itself
    d = load_dataset(grey, TINY, fit_space=True)
    assert d.space is not None and d.space.name == "tiny-1ch-3class"
    assert d.train.images.shape[1:] == (1, 32, 32) and d.num_classes == 3  # resized to the space's input
    # without fit_space the space is checked, and the error says how the data gets its network
    with pytest.raises(UserError, match="3 classes but space 'tiny-1ch'.*`hwnas search`"):
        load_dataset(grey, get_space("tiny-1ch"))


@pytest.mark.parametrize("fit_space", [False, True])
def test_one_class_is_refused(tmp_path: Path, fit_space: bool) -> None:
    spec = _npz(tmp_path, "one.npz", x=np.zeros((20, 8, 8)), y=np.zeros(20, dtype=int))
    with pytest.raises(UserError, match=r"one.npz.*1 class.*at least 2 classes"):
        load_dataset(spec, DIGITS, fit_space=fit_space)
