"""ablate.pil_pipeline: the per-image PIL baseline applies the augmentation it is given.

Each image's label is its index, so every loaded image can be set beside its source."""

from __future__ import annotations

import pytest
import torch

from ablate.config import AugCfg
from ablate.data import MEAN, STD
from ablate.pil_pipeline import pil_loader


def noise(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def loaded(x: torch.Tensor, aug: AugCfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image through the loader once, back in uint8: (images, the index of each one's source)."""
    torch.manual_seed(0)  # the transforms draw from torch's global generator
    batches = list(pil_loader(x, torch.arange(len(x)), aug, batch=16, seed=0, workers=0))
    out = torch.cat([b for b, _ in batches])
    source = torch.cat([i for _, i in batches])
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((out * std + mean) * 255).round().to(torch.uint8), source


def test_no_augmentation_gives_the_images_as_they_are():
    x = noise()
    out, source = loaded(x, AugCfg())
    assert sorted(source.tolist()) == list(range(len(x)))  # each image once ...
    assert not torch.equal(source, torch.arange(len(x)))  # ... shuffled
    assert torch.equal(out, x[source])


def test_crop_takes_a_zero_padded_window_at_every_offset():
    x = noise(n=128)
    x[:, 0] = torch.arange(1, 33, dtype=torch.uint8).view(32, 1)  # red: the row + 1, so 0 is padding
    x[:, 1] = torch.arange(1, 33, dtype=torch.uint8).view(1, 32)  # green: the column + 1
    out, source = loaded(x, AugCfg(crop_padding=1))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = out[:, 0, 16, 16].long() - 16, out[:, 1, 16, 16].long() - 16
    for i, s in enumerate(source):
        assert torch.equal(out[i], padded[s, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32])
    assert set(zip(dy.tolist(), dx.tolist())) == {(a, b) for a in range(3) for b in range(3)}


def test_flip_mirrors_some_images_and_keeps_the_others():
    x = noise()
    out, source = loaded(x, AugCfg(flip=True))
    flipped = torch.tensor([torch.equal(o, x[s].flip(2)) for o, s in zip(out, source)])
    kept = torch.tensor([torch.equal(o, x[s]) for o, s in zip(out, source)])
    assert (flipped ^ kept).all() and 16 < flipped.sum() < 48


def test_cutout_blacks_out_one_square():
    size = 8
    x = torch.full((64, 3, 32, 32), 255, dtype=torch.uint8)
    out, _ = loaded(x, AugCfg(cutout=size))
    full = 0
    for img in out:
        zero = (img == 0).all(0)
        assert torch.equal(img == 0, zero.expand_as(img))  # every channel
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= size and 1 <= len(cols) <= size and zero.sum() == len(rows) * len(cols)
        full += len(rows) == len(cols) == size
    assert full > 16


@pytest.mark.parametrize("aug", [AugCfg(jitter=0.4), AugCfg(rotate=30.0)], ids=["jitter", "rotate"])
def test_jitter_and_rotation_change_the_images(aug):
    # Rotation leaves the middle where it is; jitter leaves every pixel where it is and
    # moves its level. Only a draw close to no change at all leaves an image as it was.
    g = torch.Generator().manual_seed(1)
    x = (64 + torch.randint(0, 128, (32, 3, 1, 1), generator=g)).to(torch.uint8).expand(-1, -1, 32, 32).clone()
    x[:, :, 12:20, 12:20] = 255 - x[:, :, 12:20, 12:20]  # a square in the middle, unlike its frame
    out, source = loaded(x, aug)
    changed = (out.int() - x[source].int()).abs().flatten(1).amax(1) > 2
    assert changed.float().mean() > 0.75
    if aug.rotate:
        assert (out[:, :, 15:17, 15:17] == x[source][:, :, 15:17, 15:17]).all()  # the middle stays
        assert (out[:, :, 0, 0] == 0).float().mean() > 0.5  # a corner comes from outside: black
    else:
        level = out.float().mean((1, 2, 3)) / x[source].float().mean((1, 2, 3))
        assert level.std() > 0.05  # brightness moves by a factor per image
