"""Data by name or by folder: torchvision's small sets in their layouts (made small on disk
here), image folders of any number of classes, size and channel count."""

from __future__ import annotations

import gzip
import pickle
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablate import data
from ablate.data import DataError
from ablate.data_sets import train_stats
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.train import with_channels
from tests.test_plugins import ASSET

STUDY = """
description = "one point on {dataset}"
plugins = ["tinynet.py"]
[base]
epochs = 1
batch_size = 8
data = {{ dataset = "{dataset}"{size} }}
model = {{ name = "{model}" }}
"""


def study(where: Path, dataset: str, model: str = "tinynet", image_size: int | None = None) -> str:
    shutil.copy(ASSET, where / "tinynet.py")
    size = f", image_size = {image_size}" if image_size else ""
    path = where / f"{dataset}-{model}.toml"
    path.write_text(STUDY.format(dataset=dataset, size=size, model=model))
    return str(path)


def train_once(where: Path, source: Path, dataset: str, model: str = "tinynet", image_size: int | None = None):
    db = where / f"{dataset}-{model}.db"
    summary = run_study(
        study(where, dataset, model, image_size),
        db=str(db),
        data=str(source),
        device="cpu",
        fuse=1,
        reporter=QuietReporter(lambda _: None),
    )
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT status, data_name, data_fp, test_acc FROM runs").fetchall()
    assert summary.counts == {"complete": 1}, rows
    return rows[0]


def image_folders(root: Path, classes: int, size: int, per_class=(4, 2), mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                shape = (size, size) if mode == "L" else (size, size, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")
    return root


def test_five_classes_at_48_resized_to_32_once_at_load(tmp_path):
    root = image_folders(tmp_path / "five48", 5, 48)
    assert data.load(root, "folders").train_x.shape == (20, 3, 48, 48)  # one size: kept as it is
    ds = data.load(root, "folders", 32)
    assert (
        ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (10, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    )
    assert (ds.mean, ds.std) == train_stats(ds.train_x)
    expected = ds.train_x.double().div(255).mean((0, 2, 3))
    assert ds.mean == pytest.approx(tuple(expected.tolist()), abs=1e-6)
    assert list(ds.classes) == [f"c{i}" for i in range(5)]
    status, name, fp, acc = train_once(tmp_path, root, "folders", image_size=32)
    assert status == "complete" and name == "image folders 'five48': 5 classes, 32x32, 20 / 10 images"
    assert fp == data.fingerprint(ds) and 0 <= acc <= 1


def test_image_folders_of_mixed_sizes_need_image_size(tmp_path):
    root = image_folders(tmp_path / "mixed", 2, 32)
    Image.new("RGB", (40, 40)).save(root / "train" / "c0" / "big.png")
    with pytest.raises(DataError, match=r"images of 2 sizes \(32x32, 40x40\): set data.image_size"):
        data.load(root, "folders")


def test_greyscale_stays_one_channel_unless_the_model_asks_for_three(tmp_path):
    root = image_folders(tmp_path / "grey", 3, 28, mode="L")
    ds = data.load(root, "folders")
    assert ds.train_x.shape == (12, 1, 28, 28) and len(ds.mean) == 1
    assert with_channels(ds, "tinynet") is ds  # takes in_channels: built with one
    three = with_channels(ds, "plain_cnn")  # a built-in model takes RGB
    assert three.train_x.shape == (12, 3, 28, 28) and three.mean == ds.mean * 3
    assert torch.equal(three.train_x[:, 2], ds.train_x[:, 0])
    _, name, _, _ = train_once(tmp_path, root, "folders")
    assert name == "image folders 'grey': 3 classes, 28x28 greyscale, 12 / 6 images"


def write_cifar100(root: Path, n=(12, 6)) -> Path:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for part, count in zip(("train", "test"), n):
        d = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "fine_labels": list(range(count))}
        (base / part).write_bytes(pickle.dumps(d, protocol=2))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"k{i}" for i in range(100)]}, protocol=2))
    return root


def write_svhn(root: Path, n=(12, 6)) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for part, count in zip(("train", "test"), n):
        savemat(
            root / f"{part}_32x32.mat",
            {
                "X": rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8),
                "y": (np.arange(count) % 10 + 1).reshape(-1, 1),
            },
        )
    return root


def write_idx(root: Path, folder: str, n=(12, 6)) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    for part, count in zip(("train", "test"), n):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
        (raw / (names[part][0] + ".gz")).write_bytes(gzip.compress(header + images.tobytes()))
        (raw / names[part][1]).write_bytes(bytes([0, 0, 8, 1]) + count.to_bytes(4, "big") + labels.tobytes())
    return root


@pytest.mark.parametrize(
    "dataset, make, shape, classes, label",
    [
        ("cifar100", write_cifar100, (3, 32, 32), 100, "CIFAR-100 'src': 100 classes, 32x32, 12 / 6 images"),
        ("svhn", write_svhn, (3, 32, 32), 10, "SVHN 'src': 10 classes, 32x32, 12 / 6 images"),
        (
            "mnist",
            lambda r: write_idx(r, "MNIST"),
            (1, 28, 28),
            10,
            "MNIST 'src': 10 classes, 28x28 greyscale, 12 / 6 images",
        ),
        (
            "fashion_mnist",
            lambda r: write_idx(r, "FashionMNIST"),
            (1, 28, 28),
            10,
            "Fashion-MNIST 'src': 10 classes, 28x28 greyscale, 12 / 6 images",
        ),
    ],
)
def test_torchvision_sets_in_their_layouts(tmp_path, dataset, make, shape, classes, label):
    root = make(tmp_path / "src")
    ds = data.load(root, dataset)
    assert tuple(ds.train_x.shape[1:]) == shape and len(ds.classes) == classes
    assert (ds.mean, ds.std) == train_stats(ds.train_x) and ds.mean != data.MEAN[: len(ds.mean)]
    if dataset == "svhn":
        assert ds.train_y.tolist()[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # the digit 0 is stored as 10
    status, name, fp, _ = train_once(tmp_path, root, dataset)
    assert name == label and fp == data.fingerprint(ds)


def test_a_missing_layout_is_one_line_naming_what_is_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no MNIST: expected MNIST/raw/"):
        data.load(tmp_path / "empty", "mnist")
    with pytest.raises(DataError, match='data.dataset = "folders" reads image folders: give their place with --data'):
        data.load(None, "folders")
