"""Data sets other than CIFAR-10 as the report read it: torchvision's small classification
sets in their torchvision layouts (downloaded, or a local copy), image folders of any number
of classes and any size, and any set resized once at load (``data.image_size``).

Every set here is uint8 [N, C, H, W] like CIFAR-10 (C = 1 for greyscale, which stays one
channel unless the model asks for three), and carries the per-channel mean and std of its
own training split.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ablate import data as cifar
from ablate.data import DataError, Dataset, _first_line

# data.dataset -> how reports name it, and where torchvision puts it under its root.
NAMED = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def load(source, name: str, image_size: int | None) -> Dataset:
    if name == "synthetic" or (source is not None and str(source) == "synthetic"):
        ds = cifar.synthetic()
        return resize(ds, image_size) if image_size else ds
    if name == "folders":
        if source is None:
            raise DataError(
                'data.dataset = "folders" reads image folders: give their place with '
                "--data DIR (DIR/train/<class>/ and DIR/test/<class>/)"
            )
        ds = read_folders(cifar._expand(source), image_size)
    elif name == "cifar10":  # resized: CIFAR-10 as read, then its own mean and std at the new size
        ds = resize(cifar.load(source), image_size)
    else:
        root = cifar._expand(source) if source is not None else _download(name)
        ds = {"cifar100": _read_cifar100, "svhn": _read_svhn}.get(name, _read_idx)(root, name)
        ds = resize(ds, image_size) if image_size else ds
    ds.mean, ds.std = train_stats(ds.train_x)
    return ds


# ------------------------------------------------------------------------ statistics


def train_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] scale, exact (float64), rounded to
    six digits so that they print and compare as the numbers they are."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), 4096):
        chunk = x[i : i + 4096].to(torch.float64) / 255
        total += chunk.sum((0, 2, 3))
        squares += chunk.square().sum((0, 2, 3))
    n = max(len(x) * x.shape[2] * x.shape[3], 1)
    mean = total / n
    std = (squares / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


# ---------------------------------------------------------------------------- names


def shape_text(ds: Dataset) -> str:
    h, w = ds.train_x.shape[-2:]
    return f"{w}x{h}" + (" greyscale" if ds.channels == 1 else "")


def describe(source, ds: Dataset, name: str) -> str:
    """``image folders 'five32': 5 classes, 32x32, 1,000 / 200 images``."""
    where = cifar._expand(source).resolve().name if source is not None else "downloaded"
    if name == "folders":
        kind = "image folders"
    elif name == "cifar10":
        kind = (
            "python batches"
            if source is None or cifar._layout(cifar._expand(source))[0] == "batches"
            else "image folders"
        )
    else:
        kind = NAMED[name]
    return (
        f"{kind} '{where}': {len(ds.classes)} classes, {shape_text(ds)}, "
        f"{len(ds.train_y):,} / {len(ds.test_y):,} images"
    )


# ------------------------------------------------------------------------- resizing


def resize(ds: Dataset, size: int | None) -> Dataset:
    """Both splits at ``size`` x ``size``, antialiased, back to uint8: done once, at load."""
    if not size or tuple(ds.train_x.shape[-2:]) == (size, size):
        return ds
    return Dataset(_resize(ds.train_x, size), ds.train_y, _resize(ds.test_x, size), ds.test_y, list(ds.classes))


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.empty((len(x), x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(x), 4096):
        chunk = torch.nn.functional.interpolate(
            x[i : i + 4096].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[i : i + 4096] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


# -------------------------------------------------------------------- image folders


def read_folders(root: Path, image_size: int | None) -> Dataset:
    """``root/train/<class>/`` and ``root/test/<class>/``, any number of classes, cached beside
    the tree (per size) as CIFAR-10's folders are."""
    kind, root = cifar._layout(root)
    if kind != "folders":
        raise DataError(
            f"data path '{root}' holds python batches, not image folders: data.dataset = \"cifar10\" reads them"
        )
    stamp = cifar._tree_stamp(root)
    tag = f"-s{image_size}" if image_size else "-native"
    paths = [p.with_name(p.stem + tag + p.suffix) for p in cifar._cache_paths(root)]
    for path in paths:
        ds = cifar._read_cache(path, stamp)
        if ds is not None:
            return ds
    classes, files = cifar._scan_folders(root)
    splits = [_decode_split(files[split], image_size) for split in ("train", "test")]
    shapes = {x.shape[1:] for x, _ in splits}
    if len(shapes) > 1:
        raise DataError(
            f"data path '{root}': train/ and test/ images differ in size or channels "
            f"({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}); "
            "set data.image_size to resize both at load"
        )
    ds = Dataset(splits[0][0], splits[0][1], splits[1][0], splits[1][1], classes)
    for path in paths:
        if cifar._write_cache(path, ds, stamp):
            break
    return ds


def _decode(path: str, size: int | None) -> np.ndarray:
    """One image as uint8 [H, W, C]: C = 1 for a greyscale image, else 3."""
    try:
        with Image.open(path) as img:
            grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            img = img.convert("L" if grey else "RGB")
            if size and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            a = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image '{path}' ({_first_line(e)}): expected a PNG or JPEG") from None
    return a[:, :, None] if a.ndim == 2 else a


def _decode_split(groups: list[list[str]], size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    images = [_decode(p, size) for group in groups for p in group]
    sizes = {a.shape[:2] for a in images}
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h}" for h, w in sorted(sizes)[:4])
        raise DataError(
            f"images of {len(sizes)} sizes ({found}{', ...' if len(sizes) > 4 else ''}): "
            "set data.image_size (e.g. --set data.image_size=32) to resize them once, at load"
        )
    if len({a.shape[2] for a in images}) > 1:  # some greyscale among colour: all colour
        images = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in images]
    x = np.stack(images).transpose(0, 3, 1, 2)
    y = np.repeat(np.arange(len(groups), dtype=np.int64), [len(g) for g in groups])
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


# ------------------------------------------------------------- torchvision layouts


def _download(name: str) -> Path:
    """torchvision's download of ``name`` into the cache beside CIFAR-10's, once."""
    root = cifar._download_root().parent / name
    try:
        import torchvision.datasets as tv

        if name == "cifar100":
            tv.CIFAR100(str(root), download=True)
        elif name == "svhn":
            for split in ("train", "test"):
                tv.SVHN(str(root), split=split, download=True)
        else:
            cls = tv.MNIST if name == "mnist" else tv.FashionMNIST
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as e:  # urllib, socket, tarfile and md5 errors alike
        raise DataError(
            f"cannot download {NAMED[name]} into '{root}' ({_first_line(e)}): "
            "pass --data DIR with a copy in torchvision's layout"
        ) from None
    return root


def _read_cifar100(root: Path, name: str) -> Dataset:
    base = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    for part in ("train", "test", "meta"):
        if not (base / part).is_file():
            raise DataError(f"data path '{root}' holds no CIFAR-100: expected cifar-100-python/train, test and meta")
    names = cifar._unpickle(base / "meta").get("fine_label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"CIFAR-100 meta file '{base / 'meta'}' lacks fine_label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    splits = []
    for part in ("train", "test"):
        d = cifar._unpickle(base / part)
        try:
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d["fine_labels"], dtype=np.int64)
        except (KeyError, ValueError, TypeError):
            raise DataError(f"CIFAR-100 file '{base / part}' lacks uint8 'data' [n, 3072] or 'fine_labels'") from None
        _check_labels(y, len(x), len(classes), base / part)
        splits += [torch.from_numpy(x), torch.from_numpy(y)]
    return Dataset(*splits, classes)


def _read_svhn(root: Path, name: str) -> Dataset:
    from scipy.io import loadmat

    splits = []
    for part in ("train", "test"):
        path = root / f"{part}_32x32.mat"
        if not path.is_file():
            raise DataError(f"data path '{root}' holds no SVHN: expected train_32x32.mat and test_32x32.mat")
        try:
            d = loadmat(path)
            x = np.ascontiguousarray(np.asarray(d["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
            y = np.asarray(d["y"], dtype=np.int64).reshape(-1) % 10  # SVHN labels the digit 0 as 10
        except Exception as e:
            raise DataError(f"cannot read SVHN file '{path}' ({_first_line(e)})") from None
        _check_labels(y, len(x), 10, path)
        splits += [torch.from_numpy(x), torch.from_numpy(y)]
    return Dataset(*splits, [str(i) for i in range(10)])


def _read_idx(root: Path, name: str) -> Dataset:
    folder = IDX_FOLDERS[name]
    base = next(
        (
            b
            for b in (root / folder / "raw", root / "raw", root)
            if (b / IDX_FILES["train"][0]).is_file() or (b / (IDX_FILES["train"][0] + ".gz")).is_file()
        ),
        None,
    )
    if base is None:
        raise DataError(
            f"data path '{root}' holds no {NAMED[name]}: expected {folder}/raw/ with "
            f"{', '.join(f for pair in IDX_FILES.values() for f in pair)}"
        )
    splits = []
    for part in ("train", "test"):
        images, labels = (_idx(base, f) for f in IDX_FILES[part])
        if images.ndim != 3 or labels.shape != (len(images),):
            raise DataError(f"{NAMED[name]} files in '{base}' hold images {images.shape} and labels {labels.shape}")
        y = labels.astype(np.int64)
        _check_labels(y, len(images), 10, base / IDX_FILES[part][1])
        splits += [torch.from_numpy(images[:, None].copy()), torch.from_numpy(y)]
    classes = [str(i) for i in range(10)] if name == "mnist" else list(FASHION_CLASSES)
    return Dataset(*splits, classes)


def _idx(base: Path, stem: str) -> np.ndarray:
    """An IDX file (MNIST's format): a magic number naming type and rank, the sizes, the bytes."""
    path = base / stem if (base / stem).is_file() else base / (stem + ".gz")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read '{path}' ({_first_line(e)})") from None
    if len(raw) < 4 or raw[:2] != bytes(2) or raw[2] != 0x08:
        raise DataError(f"'{path}' is not an IDX file of unsigned bytes")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    body = raw[4 + 4 * rank :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"'{path}' is truncated: {len(body):,} bytes for a {'x'.join(map(str, dims))} array")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _check_labels(y: np.ndarray, n: int, classes: int, path: os.PathLike) -> None:
    if y.shape != (n,):
        raise DataError(f"'{path}' has {len(y)} labels for {n} images")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"'{path}' has labels outside 0..{classes - 1}")
