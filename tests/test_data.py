"""ablate.data on tiny fixtures written here: no network, no ../shared."""

from __future__ import annotations

import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablate import data
from ablate.data import DataError
from tests.conftest import one_thread as single_thread

N_PER_BATCH = 4  # images in each fixture batch file
BATCH_CLASSES = ["airplane", "automobile", "bird"]
FOLDER_CLASSES = ["cat", "ant", "bee"]  # written unsorted: load must sort them


# ------------------------------------------------------------------------ fixtures


def write_batches(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The official python layout under root/cifar-10-batches-py; returns what it holds."""
    rng = np.random.default_rng(seed)
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    xs, ys = {}, {}
    for name in [*data.TRAIN_BATCHES, "test_batch"]:
        x = rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8)
        y = rng.integers(0, len(BATCH_CLASSES), N_PER_BATCH).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(N_PER_BATCH)],
        }
        with open(out / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        xs[name], ys[name] = x, np.array(y)
    meta = {b"label_names": [c.encode() for c in BATCH_CLASSES], b"num_cases_per_batch": N_PER_BATCH}
    with open(out / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    train = list(data.TRAIN_BATCHES)
    return {
        "train_x": np.concatenate([xs[n] for n in train]).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate([ys[n] for n in train]),
        "test_x": xs["test_batch"].reshape(-1, 3, 32, 32),
        "test_y": ys["test_batch"],
    }


def write_folders(root: Path, per_class: int = 2, seed: int = 0) -> None:
    """train/<class>/ and test/<class>/ with PNG and JPEG images of random pixels."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in FOLDER_CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                img.save(d / f"{i:02d}.png")
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "zz.jpg")


def expected_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """What load should return, read independently: classes sorted, files sorted."""
    xs, ys = [], []
    for label, c in enumerate(sorted(FOLDER_CLASSES)):
        for f in sorted((root / split / c).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1))
            ys.append(label)
    return np.stack(xs), np.array(ys)


def assert_same(a: data.Dataset, b: data.Dataset) -> None:
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.classes == b.classes


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # Never touch the user's real caches.
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "download"))


# ----------------------------------------------------------------- python batches


@pytest.mark.parametrize("inner", [False, True], ids=["parent-dir", "batches-dir"])
def test_load_batches(tmp_path, inner):
    want = write_batches(tmp_path)
    ds = data.load(tmp_path / "cifar-10-batches-py" if inner else tmp_path)
    n = N_PER_BATCH
    assert ds.train_x.shape == (5 * n, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (n, 3, 32, 32) and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert ds.classes == BATCH_CLASSES
    for name, value in want.items():
        assert np.array_equal(getattr(ds, name).numpy(), value), name


def test_load_batches_with_str_keys(tmp_path):
    # A batch file re-pickled by Python 3 has str keys; it must read the same.
    want = write_batches(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for f in folder.iterdir():
        d = pickle.loads(f.read_bytes(), encoding="bytes")
        f.write_bytes(pickle.dumps({k.decode(): v for k, v in d.items()}))
    ds = data.load(tmp_path)
    assert np.array_equal(ds.train_x.numpy(), want["train_x"])
    assert ds.classes == BATCH_CLASSES


def test_truncated_batch_file(tmp_path):
    write_batches(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:5000])
    for call in (data.check_source, data.load):
        with pytest.raises(DataError, match="data_batch_3"):
            call(tmp_path)


def test_missing_batch_file(tmp_path):
    write_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        data.check_source(tmp_path)


def test_batch_file_that_runs_code_is_refused(tmp_path):
    write_batches(tmp_path)
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    evil.write_bytes(pickle.dumps(os.system))  # loading it would import os.system
    with pytest.raises(DataError, match="data_batch_1"):
        data.load(tmp_path)


# ------------------------------------------------------------------- image folders


def test_load_folders(tmp_path):
    write_folders(tmp_path)
    ds = data.load(tmp_path)
    assert ds.classes == sorted(FOLDER_CLASSES)
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        want_x, want_y = expected_folder(tmp_path, split)
        assert x.dtype == torch.uint8 and x.shape == (9, 3, 32, 32)
        assert y.dtype == torch.int64 and y.tolist() == want_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
        assert np.array_equal(x.numpy(), want_x)  # exact: PNG lossless, JPEG same decoder


def test_png_pixels_exact(tmp_path):
    for split in ("train", "test"):
        d = tmp_path / split / "only"
        d.mkdir(parents=True)
        pixels = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
        Image.fromarray(pixels).save(d / "a.png")
    ds = data.load(tmp_path)
    assert np.array_equal(ds.train_x[0].numpy(), pixels.transpose(2, 0, 1))


def test_folder_cache_written_and_reused(tmp_path, monkeypatch):
    write_folders(tmp_path)
    first = data.load(tmp_path)
    assert (tmp_path / data.CACHE_NAME).is_file()

    def no_decoding(paths):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode_many", no_decoding)
    assert_same(first, data.load(tmp_path))


def test_changed_tree_invalidates_cache(tmp_path):
    write_folders(tmp_path)
    assert len(data.load(tmp_path).train_y) == 9
    extra = np.full((32, 32, 3), 7, np.uint8)
    Image.fromarray(extra).save(tmp_path / "train" / "bee" / "new.png")
    ds = data.load(tmp_path)
    assert len(ds.train_y) == 10
    assert (ds.train_x == 7).all(dim=(1, 2, 3)).sum() == 1


def test_an_image_rewritten_in_place_invalidates_cache(tmp_path):
    """Rewriting a file changes neither its folder's file count nor the folder's mtime."""
    write_folders(tmp_path)
    first = data.load(tmp_path)
    path = tmp_path / "train" / "ant" / "00.png"
    pixels = np.asarray(Image.open(path).convert("RGB"))
    Image.fromarray(255 - pixels).save(path)
    again = data.load(tmp_path)
    assert np.array_equal(again.train_x[0].numpy(), (255 - pixels).transpose(2, 0, 1))
    assert not torch.equal(first.train_x, again.train_x)


def test_cache_falls_back_when_tree_is_not_writable(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    write_folders(tree)
    (tree / data.CACHE_NAME).mkdir()  # a directory in the way: the cache cannot go there
    first = data.load(tree)
    assert len(list((tmp_path / "user-cache").glob("*.pt"))) == 1
    monkeypatch.setattr(data, "_decode_many", lambda paths: pytest.fail("decoded again"))
    assert_same(first, data.load(tree))


def test_process_pool_decodes_the_same(tmp_path, monkeypatch):
    write_folders(tmp_path, per_class=3)
    serial = data._read_folders(tmp_path)
    monkeypatch.setattr(data, "_POOL_MIN", 1)
    assert_same(serial, data._read_folders(tmp_path))


def test_image_not_32x32(tmp_path):
    write_folders(tmp_path)
    bad = tmp_path / "test" / "ant" / "big.png"
    Image.new("RGB", (64, 32)).save(bad)
    with pytest.raises(DataError, match="big.png.*64x32"):
        data.load(tmp_path)


def test_classes_must_match(tmp_path):
    write_folders(tmp_path)
    (tmp_path / "test" / "cat").rename(tmp_path / "test" / "dog")
    with pytest.raises(DataError, match="same class folders"):
        data.check_source(tmp_path)


# -------------------------------------------------------------------- check_source


def test_check_source_accepts_good_sources(tmp_path):
    write_batches(tmp_path / "b")
    write_folders(tmp_path / "f")
    for source in (None, "synthetic", tmp_path / "b", str(tmp_path / "f")):
        data.check_source(source)


def test_check_source_missing_path(tmp_path):
    with pytest.raises(DataError, match="nope.*does not exist"):
        data.check_source(tmp_path / "nope")


def test_check_source_empty_dir(tmp_path):
    with pytest.raises(DataError) as e:
        data.check_source(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg and "train/<class>" in msg
    assert "\n" not in msg


def test_check_source_empty_class_folders(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images"):
        data.check_source(tmp_path)


# ------------------------------------------------------------------------ download


def test_failed_download_is_one_line_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as e:
        data.load(None)
    msg = str(e.value)
    assert "--data DIR" in msg and str(tmp_path / "download") in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_download_dir_already_filled(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    want = write_batches(tmp_path / "download")
    monkeypatch.setattr(
        torchvision.datasets.utils, "download_and_extract_archive", lambda *a, **k: pytest.fail("downloaded again")
    )
    assert np.array_equal(data.load(None).test_x.numpy(), want["test_x"])


# ----------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_balanced():
    a, b, c = data.synthetic(seed=3), data.synthetic(seed=3), data.synthetic(seed=4)
    assert_same(a, b)
    assert not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (2000, 3, 32, 32) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (500, 3, 32, 32) and a.test_y.dtype == torch.int64
    assert len(a.classes) == 10
    assert a.train_y.bincount().tolist() == [200] * 10
    assert a.test_y.bincount().tolist() == [50] * 10
    assert data.synthetic(n_train=30, n_test=10).train_x.shape[0] == 30


@pytest.fixture
def one_thread():
    # A net this small gains nothing from threads, and on a busy machine they fight.
    with single_thread():
        yield


def test_synthetic_learnable_but_not_trivial(one_thread):
    ds = data.synthetic()
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    norm = lambda x: (x.float() / 255 - 0.5) / 0.25  # noqa: E731
    for _ in range(2):
        for idx in torch.randperm(2000).split(64):
            loss = torch.nn.functional.cross_entropy(net(norm(ds.train_x[idx])), ds.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(norm(ds.test_x)).argmax(1) == ds.test_y).float().mean().item()
    assert 0.5 < acc < 0.98


# -------------------------------------------------------------------------- subset


def test_subset_fixed_and_independent_of_global_rng():
    ds = data.synthetic(n_train=200, n_test=20)
    torch.manual_seed(1)
    a = data.subset(ds, 50)
    torch.manual_seed(2)
    torch.rand(100)
    b = data.subset(ds, 50)
    assert_same(a, b)
    assert len(a.train_y) == 50
    assert a.test_x is ds.test_x and a.test_y is ds.test_y
    assert torch.equal(data.subset(ds, 20).train_x, a.train_x[:20])  # smaller n: a prefix
    assert not torch.equal(a.train_x, ds.train_x[:50])  # shuffled, not the first 50


def test_subset_none_or_large_is_unchanged():
    ds = data.synthetic(n_train=100, n_test=10)
    assert data.subset(ds, None) is ds
    assert data.subset(ds, 100) is ds
    assert data.subset(ds, 1000) is ds


# ---------------------------------------------------------------------- Dataset.to


def test_dataset_to():
    ds = data.synthetic(n_train=20, n_test=10)
    moved = ds.to("meta")  # a device every machine has, without copying data
    for name in ("train_x", "train_y", "test_x", "test_y"):
        t, orig = getattr(moved, name), getattr(ds, name)
        assert t.device.type == "meta" and t.dtype == orig.dtype and t.shape == orig.shape
    assert moved.classes == ds.classes
    assert_same(ds.to("cpu"), ds)
