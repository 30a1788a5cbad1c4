"""CIFAR-10 as four uint8/int64 tensors, from wherever it lives.

``load`` reads the official python batches, an image-folder tree (decoded once, then
cached as one file), a torchvision download, or a synthetic stand-in. Images stay
uint8 [N, 3, 32, 32]: augmentation and normalisation happen per batch on the device.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ablate.config import ConfigError

# Per-channel mean and standard deviation of the CIFAR-10 training set, in [0, 1] scale.
MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCH_FILES = (*TRAIN_BATCHES, "test_batch", "batches.meta")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CACHE_NAME = ".ablate-cache-v1.pt"
SUBSET_SEED = 20240101  # fixed, so a subset never depends on a run's seed
LAYOUTS = f"expected {BATCHES_DIR}/ (python batches) or train/<class>/ and test/<class>/ image folders"


class DataError(ConfigError):
    """Data that cannot be used; the one-line message names the path and what would be accepted.

    A ConfigError, because to the CLI it is bad input: one line, exit code 2, nothing written."""


@dataclass
class Dataset:
    train_x: torch.Tensor  # uint8 [N, C, H, W]: C is 3, or 1 for greyscale
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # uint8 [M, C, H, W]
    test_y: torch.Tensor  # int64 [M]
    classes: list[str]
    fingerprint: str | None = None  # see ``fingerprint()``; computed once, carried by ``to()``
    # Per-channel mean and std of the training split in [0, 1] scale (data_sets.train_stats);
    # None: CIFAR-10's (MEAN, STD), which the report's cifar10 and synthetic runs always used.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (self.mean or MEAN, self.std or STD)

    def to(self, device: torch.device | str) -> Dataset:
        # Only a copy onto an accelerator may be asynchronous: a tensor copied back to the
        # CPU without waiting could be read before it has arrived.
        non_blocking = torch.device(device).type != "cpu"

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Dataset(
            move(self.train_x),
            move(self.train_y),
            move(self.test_x),
            move(self.test_y),
            list(self.classes),
            self.fingerprint,
            self.mean,
            self.std,
        )


# ----------------------------------------------------------------------------- entry


def load(source: str | os.PathLike | None, name: str = "cifar10", image_size: int | None = None) -> Dataset:
    """The data set ``name`` (``data.dataset``) at ``source``: None (download to a cache),
    "synthetic", or a directory; resized to ``image_size`` at load (``data.image_size``)."""
    if name != "cifar10" or image_size is not None:
        from ablate import data_sets  # every set but CIFAR-10 as the report read it

        return data_sets.load(source, name, image_size)
    if source is None:
        return _download(_download_root())
    if str(source) == "synthetic":
        return synthetic()
    path = _expand(source)
    kind, root = _layout(path)
    return _read_batches(root) if kind == "batches" else _read_folders_cached(root)


def data_key(dataset: str, image_size: int | None = None) -> str:
    """What names one loaded data set among a study's: ``cifar10``, ``folders@32``."""
    return dataset + (f"@{image_size}" if image_size else "")


def load_key(key: str, source: str | os.PathLike | None) -> Dataset:
    """``load`` of a ``data_key``: the synthetic set needs no source, the others ``source``."""
    name, _, size = key.partition("@")
    return load("synthetic" if name == "synthetic" else source, name, int(size) if size else None)


def check_source(source: str | os.PathLike | None) -> None:
    """Raise DataError unless ``source`` looks loadable; reads no image data."""
    if source is None or str(source) == "synthetic":
        return  # a download can only be tried, not checked
    kind, root = _layout(_expand(source))
    if kind == "batches":
        for name in BATCH_FILES:
            _check_pickle_ends(root / name)
    else:
        _scan_folders(root)


def _expand(source: str | os.PathLike) -> Path:
    """``~`` and ``~user`` expanded; a user that does not exist is bad input, not a crash."""
    try:
        return Path(source).expanduser()
    except RuntimeError:
        user = str(source)[1:].split("/", 1)[0] or "(you)"
        raise DataError(f"data path '{source}': no user '{user}' to expand '~{user}' for; give the full path") from None


def _layout(path: Path) -> tuple[str, Path]:
    """("batches", dir holding the batch files) or ("folders", dir holding train/ and test/)."""
    if not path.exists():
        raise DataError(f"data path '{path}' does not exist: {LAYOUTS}")
    if not path.is_dir():
        raise DataError(f"data path '{path}' is not a directory: {LAYOUTS}")
    for root in (path / BATCHES_DIR, path):
        if root.is_dir() and any((root / name).exists() for name in BATCH_FILES):
            missing = [n for n in BATCH_FILES if not (root / n).is_file()]
            if missing:
                raise DataError(
                    f"data path '{root}' lacks {', '.join(missing)}: {BATCHES_DIR}/ needs {', '.join(BATCH_FILES)}"
                )
            return "batches", root
    if (path / "train").is_dir() and (path / "test").is_dir():
        return "folders", path
    raise DataError(f"data path '{path}' holds no CIFAR-10 layout: {LAYOUTS}")


# ------------------------------------------------------------------ python batches


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only: a data path is user input and
    pickle would otherwise run whatever code the file names."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as e:
        raise DataError(
            f"cannot read CIFAR-10 batch file '{path}' ({_first_line(e)}): "
            "truncated or corrupted? unpack the archive again"
        ) from None
    if not isinstance(d, dict):
        raise DataError(f"CIFAR-10 batch file '{path}' holds no dict of data and labels")
    # Python 2 pickles give bytes keys, Python 3 ones str keys: accept both.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


# A list of rows in a pickle can name one row many times over at a few bytes a time: a file
# of megabytes would decode into gigabytes. Real batch files hold their images as arrays, or
# as lists at two bytes or more per pixel; more than this many decoded bytes per file byte
# is refused before anything is decoded.
MAX_EXPANSION = 4


def _read_batch(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data = d.get("data")
    if isinstance(data, (list, tuple)):
        size = path.stat().st_size
        if len(data) * 3 * 32 * 32 > MAX_EXPANSION * size + 3 * 32 * 32:
            raise DataError(
                f"CIFAR-10 batch file '{path}' lists {len(data):,} images in {size:,} bytes "
                "(rows repeated by reference): not a real batch file"
            )
    try:
        x = np.asarray(data, dtype=np.uint8)
        y = np.asarray(d["labels"], dtype=np.int64)
    except (KeyError, ValueError, TypeError, OverflowError):
        raise DataError(
            f"CIFAR-10 batch file '{path}' lacks uint8 'data' or integer 'labels' (labels must be integers 0..C-1)"
        ) from None
    except MemoryError:
        raise DataError(f"CIFAR-10 batch file '{path}' is too large to decode in memory") from None
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DataError(
            f"CIFAR-10 batch file '{path}' has data {x.shape} and {len(y)} labels: expected data [n, 3072] and n labels"
        )
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"CIFAR-10 batch file '{path}' has labels outside 0..{n_classes - 1}")
    return x.reshape(-1, 3, 32, 32), y


def _read_batches(root: Path) -> Dataset:
    meta = _unpickle(root / "batches.meta")
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"CIFAR-10 meta file '{root / 'batches.meta'}' lacks label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train = [_read_batch(root / name, len(classes)) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(root / "test_batch", len(classes))
    return Dataset(
        torch.from_numpy(np.concatenate([x for x, _ in train])),
        torch.from_numpy(np.concatenate([y for _, y in train])),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
        classes,
    )


def _check_pickle_ends(path: Path) -> None:
    """A pickle ends with the STOP opcode; a truncated file almost never does."""
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - 1, 0))
            last = f.read(1)
    except OSError as e:
        raise DataError(f"cannot read CIFAR-10 batch file '{path}': {_first_line(e)}") from None
    if last != pickle.STOP:
        raise DataError(f"CIFAR-10 batch file '{path}' is truncated or not a pickle: unpack the archive again")


# --------------------------------------------------------------------- image folders


def _scan_folders(root: Path) -> tuple[list[str], dict[str, list[list[str]]]]:
    """Class names and, per split and class, the sorted image files; no image is opened."""
    files: dict[str, list[list[str]]] = {}
    classes: list[str] = []
    for split in ("train", "test"):
        found = sorted(e.name for e in _entries(root / split) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise DataError(
                f"data path '{root / split}' has no class folders: "
                f"expected {split}/<class>/ folders of 32x32 PNG or JPEG images"
            )
        if split == "train":
            classes = found
        elif found != classes:
            raise DataError(
                f"data path '{root / 'test'}' has classes {found} but train/ has {classes}: "
                "both need the same class folders"
            )
        files[split] = [_image_files(root / split / c) for c in classes]
        if not any(files[split]):
            raise DataError(f"data path '{root / split}' holds no .png/.jpg/.jpeg images")
    return classes, files


def _image_files(folder: Path) -> list[str]:
    # Plain strings: pathlib objects cost more than the scan itself at 60k files.
    return sorted(
        e.path
        for e in _entries(folder)
        if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
    )


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise DataError(f"cannot list data folder '{folder}': {_first_line(e)}") from None


def _tree_stamp(root: Path) -> str:
    """Identity of the tree as the file system tells it: every image file's path, size,
    mtime and ctime (in nanoseconds), per class folder in order.

    Adding, removing, renaming or rewriting a file changes it. A rewrite that keeps the size
    and sets the mtime back (``touch -r``, ``rsync -t``) still moves the ctime, which no
    user tool sets. What it trusts: that a file whose size, mtime and ctime are unchanged
    holds the same bytes (a file system whose clock does not move, or one that rewrites a
    file without updating either time, would fool it: delete the cache file then). One stat
    per file: 0.3 to 0.5 s for CIFAR-10's 60k images on a busy 2-core machine (the folder
    counts alone took 0.04 s), beside the cache's own read of about 0.8 s."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        for e in sorted(_entries(root / split), key=lambda e: e.name):
            if e.is_dir():
                files = sorted(
                    (f.name, f.stat())
                    for f in _entries(Path(e.path))
                    if f.is_file() and os.path.splitext(f.name)[1].lower() in IMAGE_SUFFIXES
                )
                h.update(f"{split}/{e.name}\n".encode())
                h.update("\n".join(f"{n}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}" for n, st in files).encode())
    return h.hexdigest()


def _decode(path: str) -> np.ndarray:
    """One image as uint8 [32, 32, 3]."""
    try:
        with Image.open(path) as img:
            size = img.size
            if size == (32, 32):
                return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image '{path}' ({_first_line(e)}): expected a 32x32 PNG or JPEG") from None
    raise DataError(f"image '{path}' is {size[0]}x{size[1]}: CIFAR-10 images must be 32x32")


def _decode_many(paths: list[str]) -> np.ndarray:
    out = np.empty((len(paths), 32, 32, 3), np.uint8)
    for i, path in enumerate(paths):
        out[i] = _decode(path)
    return out


_POOL_MIN = 4096  # below this many images, starting processes costs more than it saves


def _decode_all(paths: list[str]) -> np.ndarray:
    """All images as uint8 [N, 32, 32, 3]. Pillow spends most of a 32x32 image's time
    parsing headers in Python, under the GIL, so only processes decode in parallel."""
    workers = min(os.cpu_count() or 1, 32)
    if workers < 2 or len(paths) < _POOL_MIN:
        return _decode_many(paths)
    chunks = [list(c) for c in np.array_split(np.array(paths, dtype=object), workers * 4)]
    try:
        with ProcessPoolExecutor(workers) as pool:
            return np.concatenate(list(pool.map(_decode_many, chunks)))
    except BrokenProcessPool:  # e.g. a sandbox without process support
        return _decode_many(paths)


def _decode_split(groups: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = _decode_all([p for group in groups for p in group])
    y = np.repeat(np.arange(len(groups), dtype=np.int64), [len(g) for g in groups])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y)


def _read_folders(root: Path) -> Dataset:
    classes, files = _scan_folders(root)
    train_x, train_y = _decode_split(files["train"])
    test_x, test_y = _decode_split(files["test"])
    return Dataset(train_x, train_y, test_x, test_y, classes)


def _cache_paths(root: Path) -> list[Path]:
    """Beside the tree first; a user cache dir when the tree is read-only."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback = Path(os.environ.get("ABLATE_CACHE") or Path.home() / ".cache" / "ablate")
    return [root / CACHE_NAME, fallback / f"folders-{key}-v1.pt"]


def _read_folders_cached(root: Path) -> Dataset:
    stamp = _tree_stamp(root)
    for path in _cache_paths(root):
        ds = _read_cache(path, stamp)
        if ds is not None:
            return ds
    ds = _read_folders(root)
    for path in _cache_paths(root):
        if _write_cache(path, ds, stamp):
            break
    return ds


def _read_cache(path: Path, stamp: str) -> Dataset | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=True)
        if d["fingerprint"] != stamp:
            return None
        return Dataset(d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]))
    except Exception:  # any unreadable cache is only a cache miss: decode again
        return None


def _write_cache(path: Path, ds: Dataset, stamp: str) -> bool:
    d = {
        "fingerprint": stamp,
        "train_x": ds.train_x,
        "train_y": ds.train_y,
        "test_x": ds.test_x,
        "test_y": ds.test_y,
        "classes": list(ds.classes),
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(d, tmp)
        os.replace(tmp, path)  # atomic, so a concurrent reader never sees half a file
        return True
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


# -------------------------------------------------------------------------- download


def _download_root() -> Path:
    return Path(os.environ.get("ABLATE_DATA") or Path.home() / ".cache" / "ablate" / "cifar10")


def downloaded() -> tuple[bool, Path]:
    """Whether ``load(None)`` would find the batches in its cache (and not download them),
    and that cache's folder; looks, creates nothing."""
    root = _download_root()
    return all((root / BATCHES_DIR / n).is_file() for n in BATCH_FILES), root


def _download(root: Path) -> Dataset:
    if not all((root / BATCHES_DIR / n).is_file() for n in BATCH_FILES):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except Exception as e:  # urllib, socket, tarfile and md5 errors alike
            raise DataError(
                f"cannot download CIFAR-10 into '{root}' ({_first_line(e)}): "
                "pass --data DIR with cifar-10-batches-py/ or train/ and test/ image folders"
            ) from None
    return _read_batches(root / BATCHES_DIR)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ------------------------------------------------------------------------- synthetic


def synthetic(n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Dataset:
    """A small learnable stand-in for CIFAR-10, generated in memory, same seed same tensors.

    Each class is an oriented colour grating under a blob; the blob moves, the phase, hue
    and brightness vary per image, and noise is added, so a small CNN learns it well but
    not perfectly."""
    g = torch.Generator().manual_seed(seed)
    train_x, train_y = _synthetic_split(n_train, g)
    test_x, test_y = _synthetic_split(n_test, g)
    return Dataset(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(10)])


def _synthetic_split(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]  # balanced classes
    # Neighbouring classes have overlapping hues; their gratings tell them apart.
    hue = y * (2 * torch.pi / 10) + HUE_NOISE * torch.randn(n, generator=g)
    colour = 0.5 + 0.5 * torch.cos(hue.view(-1, 1) - torch.tensor([0.0, 2.1, 4.2]))
    angle = (y % 2) * (torch.pi / 2) + 0.2 * torch.randn(n, generator=g)
    freq = 0.9 + 0.1 * torch.randn(n, generator=g)
    phase = 2 * torch.pi * torch.rand(n, generator=g)
    centre = 16 + 6 * (2 * torch.rand(n, 2, generator=g) - 1)
    bg = 0.35 + 0.2 * torch.rand(n, 1, generator=g) + 0.06 * torch.randn(n, 3, generator=g)

    r = torch.arange(32, dtype=torch.float32)
    yy, xx = r.view(1, 32, 1), r.view(1, 1, 32)
    cy, cx = centre[:, 0].view(-1, 1, 1), centre[:, 1].view(-1, 1, 1)
    along = (xx - cx) * angle.cos().view(-1, 1, 1) + (yy - cy) * angle.sin().view(-1, 1, 1)
    wave = 0.7 + 0.3 * torch.sin(freq.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
    blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 10.0**2))
    mix = (wave * blob).unsqueeze(1)
    img = bg.view(-1, 3, 1, 1) * (1 - mix) + colour.view(-1, 3, 1, 1) * mix
    img = img + NOISE * torch.randn(img.shape, generator=g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8), y


HUE_NOISE = 0.2
NOISE = 0.1


# -------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class DataIdentity:
    """What a run trained and tested on: part of its identity, beside its config and seed."""

    fingerprint: str  # of the decoded arrays, not of a path: the same files anywhere are the same data
    name: str  # what reports call it: synthetic, CIFAR-10 (official), image folders 'five32': 5 classes, ...
    mean: tuple[float, ...] | None = None  # of the training split, where not CIFAR-10's (Dataset.mean)
    std: tuple[float, ...] | None = None


# Data sets known by the fingerprint of their decoded arrays. The project's JPEG copy of
# CIFAR-10 (quality 75: about 3 points below the official files at the 94% level) unpacks
# into two layouts that hold its images in different orders, so it has two fingerprints;
# with a train subset they even train on different images.
KNOWN = {
    "76dbb8e3d834d9ca": "CIFAR-10 (JPEG copy)",  # cifar10_jpeg.py folder: train/<class>/NNNN.jpg
    "feae1c54a3056d33": "CIFAR-10 (JPEG copy)",  # cifar10_jpeg.py batches: cifar-10-batches-py/
}
OFFICIAL = "CIFAR-10 (official)"  # the name of the downloaded set, or of its files found under --data
# The official python batches, by the md5 torchvision checks them against.
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def fingerprint(ds: Dataset) -> str:
    """16 hex digits of a SHA-256 over the four arrays (dtype, shape, bytes) and the class
    names; about 0.2 s for all of CIFAR-10, once per Dataset object."""
    if ds.fingerprint is None:
        h = hashlib.sha256()
        for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        h.update("\n".join(ds.classes).encode())
        ds.fingerprint = h.hexdigest()[:16]
    return ds.fingerprint


def identify(source: str | os.PathLike | None, ds: Dataset, name: str = "cifar10") -> DataIdentity:
    """The fingerprint of ``ds`` (loaded from ``source``, as ``load`` takes it) and its name:
    what it is, never a CIFAR-10 copy unless the fingerprint or the official files say so."""
    from ablate import data_sets

    fp = fingerprint(ds)
    stats = (ds.mean, ds.std) if ds.mean is not None else (None, None)
    if source is not None and str(source) == "synthetic" or name == "synthetic":
        described = "synthetic" if ds.train_x.shape[-1] == 32 else f"synthetic, {data_sets.shape_text(ds)}"
        return DataIdentity(fp, described, *stats)
    if fp in KNOWN:
        return DataIdentity(fp, KNOWN[fp], *stats)
    if name == "cifar10":
        root = _download_root() / BATCHES_DIR if source is None else _layout(_expand(source))[1]
        if _official(root):
            return DataIdentity(fp, OFFICIAL, *stats)
    return DataIdentity(fp, data_sets.describe(source, ds, name), *stats)


def _official(root: Path) -> bool:
    """Whether ``root`` holds the official python batches, byte for byte."""
    for name, md5 in OFFICIAL_MD5.items():
        try:
            with open(root / name, "rb") as f:
                if hashlib.file_digest(f, "md5").hexdigest() != md5:
                    return False
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------- subset


def subset(ds: Dataset, n: int | None) -> Dataset:
    """The first ``n`` training images of a fixed shuffle; the same ``n`` always picks the
    same images (and a smaller ``n`` a prefix of them), whatever the run's seed."""
    total = len(ds.train_y)
    if n is None or n >= total:
        return ds
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    idx = perm[:n].to(ds.train_x.device)
    return Dataset(ds.train_x[idx], ds.train_y[idx], ds.test_x, ds.test_y, list(ds.classes), None, ds.mean, ds.std)
