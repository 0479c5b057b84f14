"""Where images come from: digits, CIFAR-10 python batches, image folders and tarballs, npz.

Each reader returns a `_Raw`: images as numpy [N, C, H, W] float32 in [0, 1] (or a decoder
that reads only the images a subset keeps), integer labels, class names. The CIFAR python
batches are pickles, read with a restricted unpickler that can rebuild only numpy arrays,
dtypes and builtin containers: a hostile file cannot run code (any other global is refused
with a UserError).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwnas.space import SpaceConfig
from targets.basics import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


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


def _npz(path: Path, space: SpaceConfig, *, adapt: bool = False) -> _Raw:
    """Arrays x, y (x_test, y_test) of a .npz; a 4-D x's channel axis is the one of the
    space's channel count, or with `adapt` (the space will take the data's channels) the
    last axis, else the second, of at most 4 entries."""
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
            elif adapt and a.shape[3] <= 4:
                a = a.transpose(0, 3, 1, 2)
            elif adapt and a.shape[1] <= 4:
                pass
            else:
                raise UserError(
                    f"{where} has shape {list(a.shape)}: no axis of {c} channels for space '{space.name}' "
                    f"(expects {list(space.input_shape)}); give [N,H,W,{c}] or [N,{c},H,W], or a network made for "
                    "this data (`hwnas search`/`hwnas run` with --dataset take the data's channels into the space)"
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


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    t = torch.nn.functional.interpolate(
        torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return t.numpy()
