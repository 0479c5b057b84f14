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

The CIFAR python batches are pickles. They are read with a restricted unpickler that can
rebuild only numpy arrays, dtypes and builtin containers (the pickle protocol's opcodes for
those), so a hostile file cannot run code: any other global is refused with a UserError.

Images are scaled to [0, 1], resized to the space's input size (bilinear, antialiased) when
they differ, then normalised per channel by the training set's mean and standard deviation.
Training augmentation (per sample, from torch's global RNG, so `torch.manual_seed` makes it
reproducible): random crop after zero padding (input_size // 8 pixels, 4 at 32x32),
horizontal flip (off for `digits`: a mirrored digit is another glyph), optional cutout.
`augment_batch` does the same to a batch on its device in one call per kind (a GPU's path:
the search and training keep `augment_image` on the CPU, so CPU figures do not change).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from hwnas.space import SpaceConfig
from targets.basics import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
HOLDOUT_FRAC = 0.2  # test share held out when a source has no test split
HOLDOUT_SEED = 0  # fixed: the same test images whatever the search seed
SPEC_HELP = "use digits, cifar10:PATH, imagefolder:PATH or npz:PATH"


@dataclass(frozen=True)
class Augment:
    """Training augmentation. `crop_padding` None = input_size // 8 (4 at 32x32)."""

    crop: bool = True
    crop_padding: int | None = None
    flip: bool = True
    cutout: int = 0  # side of the square cut out (0 = off); DARTS uses 16 at 32x32

    def to_dict(self) -> dict[str, Any]:
        return {
            "crop": self.crop,
            "crop_padding": self.crop_padding,
            "flip": self.flip,
            "cutout": self.cutout,
        }


class ImageTensorDataset(Dataset):
    """Normalised images [N, C, H, W] (float32) and labels [N] (int64), augmented on read
    when `augment` is given, drawing from `generator` (None: torch's global one; the search
    and training set their own, so no library code reseeds the process). Kept in memory:
    these data sets are small."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: Augment | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment
        self.generator = generator

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index]
        if self.augment is not None:
            x = augment_image(x, self.augment, self.generator)
        return x, self.labels[index]

    def with_augment(self, augment: Augment | None) -> ImageTensorDataset:
        """The same tensors (shared, not copied) with another augmentation."""
        return ImageTensorDataset(self.images, self.labels, augment, self.generator)


def augment_image(
    x: torch.Tensor, aug: Augment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip, cutout: one image [C, H, W]."""
    g = generator
    _, h, w = x.shape
    if aug.crop:
        pad = aug.crop_padding if aug.crop_padding is not None else max(1, h // 8)
        if pad > 0:
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            i = int(torch.randint(0, 2 * pad + 1, (), generator=g))
            j = int(torch.randint(0, 2 * pad + 1, (), generator=g))
            x = padded[:, i : i + h, j : j + w]
    if aug.flip and bool(torch.rand((), generator=g) < 0.5):
        x = x.flip(-1)
    if aug.cutout > 0:
        cy = int(torch.randint(0, h, (), generator=g))
        cx = int(torch.randint(0, w, (), generator=g))
        half = aug.cutout // 2
        x = x.clone()
        x[
            :,
            max(0, cy - half) : min(h, cy + half + aug.cutout % 2),
            max(0, cx - half) : min(w, cx + half + aug.cutout % 2),
        ] = 0.0
    return x.contiguous()


def augment_batch(
    x: torch.Tensor, aug: Augment, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`augment_image` for a batch [B, C, H, W], drawn and applied on the batch's device.

    The same augmentation per image (crop offsets uniform in [0, 2 pad] after zero padding,
    a flip with probability 1/2, a cutout square centred uniformly, clipped at the border),
    drawn in one call per kind for the whole batch, so a GPU never waits on the host: the
    draws differ from `augment_image`'s (the CPU search and training keep that one).
    `generator` must live on x's device (None: torch's global one there).
    """
    b, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if aug.crop:
        pad = aug.crop_padding if aug.crop_padding is not None else max(1, h // 8)
        if pad > 0:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            rows = rows + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
            cols = cols + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=dev)
    if aug.flip:
        flip = torch.rand((b, 1), generator=generator, device=dev) < 0.5
        cols = torch.where(flip, cols.flip(-1), cols)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, x.shape[3]))
    x = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    if aug.cutout > 0:
        cy = torch.randint(0, h, (b, 1), generator=generator, device=dev)
        cx = torch.randint(0, w, (b, 1), generator=generator, device=dev)
        half, odd = aug.cutout // 2, aug.cutout % 2
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        in_y = (ys >= cy - half) & (ys < cy + half + odd)  # [B, H]
        in_x = (xs >= cx - half) & (xs < cx + half + odd)  # [B, W]
        x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
    return x


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


# -- raw sources ----------------------------------------------------------------------------------
@dataclass
class _Raw:
    """Images as numpy [N, C, H, W] float32 in [0, 1] (or lazily decodable), labels int64."""

    x_train: np.ndarray | None
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    channels: int
    where: str
    # image-folder sources decode lazily: one loader per split, given the kept indices
    decode_train: Any = None
    decode_test: Any = None
    flip: bool = True
    notes: list[str] = field(default_factory=list)


def _digits() -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    return _Raw(x, y, None, None, [str(c) for c in range(10)], 1, "sklearn digits", flip=False)


# CIFAR python batches: pickles of {b"data": uint8 [N, 3072], b"labels": [int], ...}
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers only; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused to load this CIFAR batch ({exc}); a genuine python batch holds only "
            "numpy arrays and lists: use the original files or the image-folder layout"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise UserError(
            f"{path}: not a readable CIFAR python batch (corrupted or truncated: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(
            f"{path}: not a CIFAR python batch (expected a dict, got {type(obj).__name__})"
        )
    obj = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels", obj.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise UserError(
            f"{path}: a CIFAR python batch needs 'data' (array) and 'labels'; found keys {sorted(obj)}"
        )
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(
            f"{path}: 'data' has shape {list(data.shape)}, expected [N, 3072] (32x32 RGB rows); wrong file?"
        )
    y = np.asarray(labels)
    if len(y) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(y)} labels (mislabelled batch)")
    x = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return x, _int_labels(y, str(path))


def _cifar_batches(root: Path) -> _Raw | None:
    for folder in (root, root / "cifar-10-batches-py"):
        names = [f"data_batch_{i}" for i in range(1, 6)]
        if all((folder / n).is_file() for n in names):
            if not (folder / "test_batch").is_file():
                raise UserError(
                    f"{folder}: has data_batch_1..5 but no test_batch; copy the complete CIFAR-10 python set"
                )
            parts = [_read_cifar_batch(folder / n) for n in names]
            x_test, y_test = _read_cifar_batch(folder / "test_batch")
            classes = [str(c) for c in range(10)]
            meta = folder / "batches.meta"
            if meta.is_file():
                try:
                    with meta.open("rb") as fh:
                        m = _RestrictedUnpickler(fh, encoding="bytes").load()
                    names_ = m.get(b"label_names") or m.get("label_names")
                    if names_ and len(names_) == 10:
                        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_]
                except Exception:  # names are cosmetic; the labels are what matter
                    pass
            return _Raw(
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                x_test,
                y_test,
                classes,
                3,
                str(folder),
            )
    return None


class _ImageSource:
    """Image files of an image-folder tree, in a folder or a tarball: listing and decoding."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.files: list[str] = []
        if path.is_dir():
            for dirpath, _dirs, files in os.walk(path):
                for f in files:
                    if f.lower().endswith(IMAGE_SUFFIXES):
                        self.files.append(
                            os.path.relpath(os.path.join(dirpath, f), path).replace(os.sep, "/")
                        )
        elif path.is_file() and tarfile.is_tarfile(path):
            self.tar = tarfile.open(path)  # noqa: SIM115 (kept open while decoding)
            self.members = {m.name.lstrip("./"): m for m in self.tar.getmembers() if m.isfile()}
            self.files = [n for n in self.members if n.lower().endswith(IMAGE_SUFFIXES)]
        else:
            raise UserError(
                f"{path}: no such folder or tarball; give an image-folder tree (train/<class>/*.jpg)"
            )
        self.files.sort()

    def split(self, name: str) -> tuple[list[str], list[str]]:
        """(files, class of each) under `<name>/<class>/`, wherever the tree starts."""
        files, labels = [], []
        for f in self.files:
            parts = f.split("/")
            for i in range(len(parts) - 2):
                if parts[i] == name and i + 3 == len(parts):
                    files.append(f)
                    labels.append(parts[i + 1])
                    break
        return files, labels

    def read(self, name: str) -> bytes:
        if self.tar is not None:
            fh = self.tar.extractfile(self.members[name])
            assert fh is not None
            return fh.read()
        return (self.path / name).read_bytes()

    def decode(self, names: Sequence[str], channels: int, size: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        mode = "L" if channels == 1 else "RGB"
        out = np.empty((len(names), channels, size, size), dtype=np.float32)
        order = range(len(names))
        if self.tar is not None:  # a compressed tarball reads fast only front to back
            order = sorted(order, key=lambda k: self.members[names[k]].offset_data)
        for k in order:
            name = names[k]
            try:
                with Image.open(io.BytesIO(self.read(name))) as im:
                    im = im.convert(mode)
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(
                    f"{self.path}: {name} is not a readable image ({exc}); remove or replace it"
                ) from None
            out[k] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        return out

    def channels_of(self, name: str) -> int:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self.read(name))) as im:
                return 1 if im.mode in ("L", "1", "I", "I;16", "F") else 3
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(
                f"{self.path}: {name} is not a readable image ({exc}); remove or replace it"
            ) from None


def _image_folder(path: Path, *, expect_classes: int | None = None) -> _Raw:
    src = _ImageSource(path)
    tr_files, tr_cls = src.split("train")
    te_files, te_cls = src.split("test")
    if not tr_files:
        raise UserError(
            f"{path}: no images under train/<class>/ (found {len(src.files)} image files in all); "
            "an image folder needs train/<class>/*.jpg and optionally test/<class>/*.jpg"
        )
    classes = sorted(set(tr_cls))
    unknown = sorted(set(te_cls) - set(classes))
    if unknown:
        raise UserError(
            f"{path}: test/ has class folder(s) {unknown} that train/ lacks (mislabelled data); "
            "the class folders of train/ and test/ must match"
        )
    if expect_classes is not None and len(classes) != expect_classes:
        raise UserError(
            f"{path}: {len(classes)} class folders under train/ ({', '.join(classes[:12])}), CIFAR-10 has {expect_classes}"
        )
    index = {c: i for i, c in enumerate(classes)}
    channels = src.channels_of(tr_files[0])
    raw = _Raw(
        None,
        np.array([index[c] for c in tr_cls], dtype=np.int64),
        None,
        np.array([index[c] for c in te_cls], dtype=np.int64) if te_files else None,
        classes,
        channels,
        str(path),
    )
    raw.decode_train = lambda idx, size: src.decode([tr_files[i] for i in idx], channels, size)
    raw.decode_test = (
        (lambda idx, size: src.decode([te_files[i] for i in idx], channels, size))
        if te_files
        else None
    )
    return raw


def _npz(path: Path, space: SpaceConfig) -> _Raw:
    if not path.is_file():
        raise UserError(f"{path}: no such file (npz:PATH wants a .npz with arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UserError(
            f"{path}: missing array(s) {missing}; found {sorted(arrays)} (need x, y; optional x_test, y_test)"
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path}: give both x_test and y_test or neither")

    def images(a: np.ndarray, name: str) -> np.ndarray:
        where = f"{path}: array {name!r}"
        if a.dtype.kind not in "uif" or a.dtype.kind == "b":
            raise UserError(
                f"{where} has dtype {a.dtype}, expected numbers (uint8 0..255 or floats)"
            )
        if a.ndim == 3:
            a = a[:, None]
        elif a.ndim == 4:
            c = space.in_channels
            if a.shape[1] == c and a.shape[3] != c:
                pass
            elif a.shape[3] == c:
                a = a.transpose(0, 3, 1, 2)
            elif a.shape[1] == c:
                pass
            else:
                raise UserError(
                    f"{where} has shape {list(a.shape)}: no axis of {c} channels for space '{space.name}' "
                    f"(expects {list(space.input_shape)}); give [N,H,W,{c}] or [N,{c},H,W], or pick a space with "
                    f"in_channels={a.shape[3] if a.shape[3] in (1, 3, 4) else a.shape[1]}"
                )
        else:
            raise UserError(
                f"{where} has shape {list(a.shape)}; expected [N,H,W], [N,H,W,C] or [N,C,H,W]"
            )
        x = a.astype(np.float32)
        if a.dtype.kind in "ui" and a.size and a.max() > 1:
            x = x / 255.0
        if not np.isfinite(x).all():
            raise UserError(f"{where} holds NaN or infinite values")
        return x

    x = images(arrays["x"], "x")
    y = _int_labels(arrays["y"], f"{path}: array 'y'")
    x_test = images(arrays["x_test"], "x_test") if "x_test" in arrays else None
    y_test = (
        _int_labels(arrays["y_test"], f"{path}: array 'y_test'") if "y_test" in arrays else None
    )
    for xs, ys, name in ((x, y, "x"), (x_test, y_test, "x_test")):
        if xs is not None and ys is not None and len(xs) != len(ys):
            raise UserError(
                f"{path}: {len(xs)} images in {name!r} but {len(ys)} labels (mislabelled data)"
            )
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise UserError(
            f"{path}: x_test images are {list(x_test.shape[1:])}, x images {list(x.shape[1:])}; they must match"
        )
    n_classes = int(y.max()) + 1 if len(y) else 0
    return _Raw(
        x, y, x_test, y_test, [str(c) for c in range(n_classes)], int(x.shape[1]), str(path)
    )


def _int_labels(y: Any, where: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise UserError(
            f"{where}: labels must be a 1-D list of class indices, got shape {list(a.shape)}"
        )
    if a.size and a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if a.size and a.dtype.kind not in "ui":
        raise UserError(
            f"{where}: labels must be integer class indices 0..K-1, got dtype {a.dtype}"
        )
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise UserError(f"{where}: negative label {int(a.min())}; labels are class indices 0..K-1")
    return a


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


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    t = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return t.numpy()


def parse_spec(spec: str) -> tuple[str, Path | None]:
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "digits" and not sep:
        return kind, None
    if kind in ("cifar10", "imagefolder", "npz"):
        if not rest:
            raise UserError(f"dataset {spec!r}: {kind} needs a path ({kind}:PATH)")
        return kind, Path(rest).expanduser()
    raise UserError(f"unknown dataset {spec!r}; {SPEC_HELP}")


def load_dataset(
    spec: str,
    space: SpaceConfig,
    *,
    subset: int | None = None,
    seed: int = 0,
    augment: Augment | None = None,
    cutout: int = 0,
) -> LoadedData:
    """Load `spec` for `space`: checked channels and classes, `subset` training images
    (stratified, seeded; the test set shrinks in proportion), resized to the space's input."""
    kind, path = parse_spec(spec)
    if subset is not None and subset < 1:
        raise UserError(f"--subset must be a positive number of training images, got {subset}")
    if kind == "digits":
        raw = _digits()
    elif kind == "npz":
        assert path is not None
        raw = _npz(path, space)
    else:
        assert path is not None
        if not path.exists():
            raise UserError(f"dataset {spec!r}: {path} does not exist")
        raw = (_cifar_batches(path) if path.is_dir() else None) or _image_folder(
            path, expect_classes=10 if kind == "cifar10" else None
        )

    where = f"dataset {spec!r} ({raw.where})"
    if len(raw.y_train) == 0:
        raise UserError(f"{where}: no training images (empty data set)")
    if raw.channels != space.in_channels:
        raise UserError(
            f"{where}: images have {raw.channels} channel(s) but space '{space.name}' takes "
            f"{space.in_channels}; use a space with in_channels={raw.channels} or convert the images"
        )
    n_classes = (
        int(
            max(
                raw.y_train.max(),
                raw.y_test.max() if raw.y_test is not None and len(raw.y_test) else 0,
            )
        )
        + 1
    )
    n_classes = max(n_classes, len(raw.classes))
    if n_classes != space.num_classes:
        raise UserError(
            f"{where}: {n_classes} classes but space '{space.name}' has a {space.num_classes}-way classifier; "
            f"use a space with num_classes={n_classes} or a data set with {space.num_classes} classes"
        )
    present = np.unique(raw.y_train)
    if len(present) != n_classes:
        absent = sorted(set(range(n_classes)) - set(present.tolist()))
        raise UserError(
            f"{where}: class(es) {absent} have no training image (mislabelled or incomplete data)"
        )
    if raw.y_test is not None and len(raw.y_test) == 0:
        raw.y_test, raw.x_test, raw.decode_test = None, None, None

    # split off a test set where the source has none
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
    )
