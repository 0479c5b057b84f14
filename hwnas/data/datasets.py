"""Datasets for the search and for training: small, offline, checked against the space.

`load_dataset(spec, space, subset=N, seed=S)` returns a `LoadedData`: a training and a test
torch `Dataset` of normalised float images at the space's input shape, the class count and
names, and `search_split(seed)` (the 50/50 stratified split of the training set that the
bilevel search uses: one half for the weights, one for the architecture).

Specs:

* `digits`: scikit-learn's bundled 8x8 digits (1 channel, 10 classes, 1,797 images), the
  offline default; a fixed stratified 80/20 train/test split (the same test images for
  every seed). The `digits` space takes 8x8 inputs and upsamples inside the network.
* `cifar10:PATH`: PATH is a folder of the standard python batches (`data_batch_1..5`,
  `test_batch`, or a `cifar-10-batches-py` folder inside it), an image-folder tree
  (`train/<class>/*.jpg`, `test/<class>/*.jpg`) or such a tree packed as `.tar`/`.tar.gz`
  (read in place; only the images a subset needs are decoded).
* `imagefolder:PATH`: an image-folder tree (folder or tarball) as above, any class names;
  without a `test/` folder a fixed stratified 20 % of `train/` is held out.
* `npz:PATH`: arrays `x` ([N,H,W], [N,H,W,C] or [N,C,H,W]) and `y` (integer labels
  0..K-1), optional `x_test`, `y_test` (else a fixed 20 % hold-out).

The readers are `hwnas.data.sources` (the CIFAR pickles through a restricted unpickler).

The space's input channels and classifier must fit the data (checked, one line otherwise);
`space_for_data(spec, space)` (and `load_dataset(..., fit_space=True)`, the search's) gives
the space's data variant that does (`hwnas.space.space_variant`: `tiny-1ch-3class`); a
single class is refused.

Images are scaled to [0, 1], resized to the space's input size (bilinear, antialiased) when
they differ, then normalised per channel by the training set's mean and standard deviation.
Training augmentation lives in `hwnas.data.augment` (re-exported here: `Augment`,
`ImageTensorDataset`, `augment_image`, `augment_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from hwnas.data.augment import Augment, ImageTensorDataset, augment_batch, augment_image
from hwnas.data.sources import _cifar_batches, _digits, _image_folder, _npz, _Raw, _resize
from hwnas.space import SpaceConfig, space_variant
from targets.basics import UserError

__all__ = [
    "Augment",
    "ImageTensorDataset",
    "LoadedData",
    "augment_batch",
    "augment_image",
    "load_dataset",
    "space_for_data",
]

HOLDOUT_FRAC = 0.2  # test share held out when a source has no test split
HOLDOUT_SEED = 0  # fixed: the same test images whatever the search seed
#: The spec kinds that take a path (`KIND:PATH`); `digits` takes none. README.md lists each.
PATH_KINDS = ("cifar10", "imagefolder", "npz")
SPEC_HELP = "use digits, cifar10:PATH, imagefolder:PATH or npz:PATH"


@dataclass
class LoadedData:
    """What `load_dataset` returns."""

    spec: str
    train: ImageTensorDataset
    test: ImageTensorDataset
    num_classes: int
    channels: int
    input_size: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)
    space: SpaceConfig | None = None  # the space the data was loaded for (a data variant with fit_space)

    def search_split(self, seed: int = 0) -> tuple[Subset, Subset]:
        """The training set split 50/50, stratified and seeded: (weights half, architecture half)."""
        labels = self.train.labels.numpy()
        rng = np.random.default_rng([seed, 0x5EA2C4])
        first: list[int] = []
        second: list[int] = []
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            # alternate which half gets the odd image, so halves stay within one image
            cut = (len(idx) + (len(first) <= len(second))) // 2
            first += idx[:cut].tolist()
            second += idx[cut:].tolist()
        return Subset(self.train, sorted(first)), Subset(self.train, sorted(second))

    def describe(self) -> dict[str, Any]:
        """For a run's config.json."""
        return {
            "spec": self.spec,
            "train": len(self.train),
            "test": len(self.test),
            "num_classes": self.num_classes,
            "channels": self.channels,
            "input_size": self.input_size,
            "classes": list(self.classes),
            "mean": self.mean,
            "std": self.std,
            "augment": self.train.augment.to_dict() if self.train.augment else None,
            "notes": list(self.notes),
        }


# -- selection ------------------------------------------------------------------------------------
def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of `n` items keeping class proportions (largest remainder), seeded, sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    if n >= len(labels):
        return np.arange(len(labels))
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    take = np.maximum(take, np.minimum(1, counts)) if n >= len(classes) else take
    # giving each class one image may overshoot n: take it back from the largest quotas
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng([seed, 0x5B5E7])
    out: list[np.ndarray] = []
    for c, k in zip(classes, take, strict=True):
        idx = np.flatnonzero(labels == c)
        out.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(out)) if out else np.arange(0)


def _holdout(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split (train idx, test idx), HOLDOUT_FRAC to test."""
    test = stratified_subset(labels, int(round(HOLDOUT_FRAC * len(labels))), HOLDOUT_SEED)
    mask = np.ones(len(labels), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def parse_spec(spec: str) -> tuple[str, Path | None]:
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not sep:
        return kind, None
    if kind in PATH_KINDS:
        if not rest:
            raise UserError(f"dataset {spec!r}: {kind} needs a path ({kind}:PATH)")
        return kind, Path(rest).expanduser()
    raise UserError(f"unknown dataset {spec!r}; {SPEC_HELP}")


def _read(kind: str, path: Path | None, spec: str, space: SpaceConfig, adapt: bool = False) -> _Raw:
    if kind == "digits":
        return _digits()
    assert path is not None
    if kind == "npz":
        return _npz(path, space, adapt=adapt)
    if not path.exists():
        raise UserError(f"dataset {spec!r}: {path} does not exist")
    return (_cifar_batches(path) if path.is_dir() else None) or _image_folder(
        path, expect_classes=10 if kind == "cifar10" else None
    )


def _class_count(raw: _Raw, where: str) -> int:
    """The data's class count (labels 0..K-1 or class names); UserError for an empty data
    set or a single class."""
    if len(raw.y_train) == 0:
        raise UserError(f"{where}: no training images (empty data set)")
    top_test = raw.y_test.max() if raw.y_test is not None and len(raw.y_test) else 0
    n_classes = max(int(max(raw.y_train.max(), top_test)) + 1, len(raw.classes))
    if n_classes < 2:
        raise UserError(
            f"{where}: 1 class (every label is 0); classification needs at least 2 classes: give "
            "images of K >= 2 classes, labelled 0..K-1 (npz) or in K class folders"
        )
    return n_classes


def _fitted_space(raw: _Raw, where: str, space: SpaceConfig) -> SpaceConfig:
    """`space`'s data variant for these images: their channels and classes (README 'Your own data')."""
    n_classes = _class_count(raw, where)
    try:
        return space_variant(space, in_channels=raw.channels, num_classes=n_classes)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def space_for_data(spec: str, space: SpaceConfig) -> SpaceConfig:
    """The variant of `space` (registered, or a variant of one) whose input channels and
    classifier fit dataset `spec`: `space` itself when they already do. Reads the labels,
    not the images where the source decodes lazily."""
    kind, path = parse_spec(spec)
    raw = _read(kind, path, spec, space, adapt=True)
    return _fitted_space(raw, f"dataset {spec!r} ({raw.where})", space)


_ADAPT_HINT = "`hwnas search`/`hwnas run` with --dataset take the data's channels and classes into the space"


def _check_against_space(raw: _Raw, where: str, space: SpaceConfig) -> int:
    """The class count; UserError when channels or classes do not fit the space."""
    n_classes = _class_count(raw, where)
    if raw.channels != space.in_channels:
        raise UserError(
            f"{where}: images have {raw.channels} channel(s) but space '{space.name}' takes "
            f"{space.in_channels}; give a network made for this data ({_ADAPT_HINT}) or convert the images"
        )
    if n_classes != space.num_classes:
        raise UserError(
            f"{where}: {n_classes} classes but space '{space.name}' has a {space.num_classes}-way classifier; "
            f"give a network made for this data ({_ADAPT_HINT}) or a data set with {space.num_classes} classes"
        )
    present = np.unique(raw.y_train)
    if len(present) != n_classes:
        absent = sorted(set(range(n_classes)) - set(present.tolist()))
        raise UserError(
            f"{where}: class(es) {absent} have no training image (mislabelled or incomplete data)"
        )
    if raw.y_test is not None and len(raw.y_test) == 0:
        raw.y_test, raw.x_test, raw.decode_test = None, None, None
    return n_classes


def _select(raw: _Raw, subset: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Training and test indices (a test set split off where the source has none; a
    stratified, seeded subset) and the notes that say so."""
    y_tr, y_te = raw.y_train, raw.y_test
    tr_idx = np.arange(len(y_tr))
    te_idx: np.ndarray
    test_from_train = y_te is None
    notes = list(raw.notes)
    if test_from_train:
        tr_idx, te_idx = _holdout(y_tr)
        y_te = y_tr[te_idx]
        notes.append(
            f"no test split in the source: a fixed stratified {HOLDOUT_FRAC:.0%} of it is the test set"
        )
    else:
        assert y_te is not None
        te_idx = np.arange(len(y_te))
    if subset is not None and subset < len(tr_idx):
        n_test = max(1, int(round(subset * len(te_idx) / len(tr_idx))))
        tr_idx = tr_idx[stratified_subset(y_tr[tr_idx], subset, seed)]
        te_idx = te_idx[
            stratified_subset(y_te[te_idx] if not test_from_train else y_tr[te_idx], n_test, seed)
        ]
        notes.append(
            f"subset: {len(tr_idx)} training and {len(te_idx)} test images (stratified, seed {seed})"
        )
    return tr_idx, te_idx, notes


def load_dataset(
    spec: str,
    space: SpaceConfig,
    *,
    subset: int | None = None,
    seed: int = 0,
    augment: Augment | None = None,
    cutout: int = 0,
    fit_space: bool = False,
) -> LoadedData:
    """Load `spec` for `space`: checked channels and classes, `subset` training images
    (stratified, seeded; the test set shrinks in proportion), resized to the space's input.
    `fit_space`: the data's variant of `space` instead (`space_for_data`), in `.space`."""
    kind, path = parse_spec(spec)
    if subset is not None and subset < 1:
        raise UserError(f"--subset must be a positive number of training images, got {subset}")
    raw = _read(kind, path, spec, space, adapt=fit_space)
    where = f"dataset {spec!r} ({raw.where})"
    if fit_space:
        space = _fitted_space(raw, where, space)
    n_classes = _check_against_space(raw, where, space)
    y_tr = raw.y_train
    tr_idx, te_idx, notes = _select(raw, subset, seed)
    test_from_train = raw.y_test is None

    size = space.input_size

    def fetch(x: np.ndarray | None, decode: Any, idx: np.ndarray) -> np.ndarray:
        if x is not None:
            return _resize(np.ascontiguousarray(x[idx]), size)
        return decode(idx.tolist(), size)

    x_train = fetch(raw.x_train, raw.decode_train, tr_idx)
    if test_from_train:
        x_test = fetch(raw.x_train, raw.decode_train, te_idx)
        y_test = y_tr[te_idx]
    else:
        x_test = fetch(raw.x_test, raw.decode_test, te_idx)
        assert raw.y_test is not None
        y_test = raw.y_test[te_idx]
    y_train = y_tr[tr_idx]

    mean = x_train.mean(axis=(0, 2, 3))
    std = x_train.std(axis=(0, 2, 3))
    std = np.where(std > 1e-6, std, 1.0)

    def norm(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(
            ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
        )

    aug = augment or Augment(flip=raw.flip)
    if cutout:
        aug = replace(aug, cutout=cutout)
    return LoadedData(
        spec=spec,
        train=ImageTensorDataset(norm(x_train), torch.from_numpy(y_train), aug),
        test=ImageTensorDataset(norm(x_test), torch.from_numpy(y_test), None),
        num_classes=n_classes,
        channels=raw.channels,
        input_size=size,
        classes=list(raw.classes)
        if len(raw.classes) == n_classes
        else [str(c) for c in range(n_classes)],
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        notes=notes,
        space=space,
    )
