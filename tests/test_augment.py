"""ablate.augment: batch augmentation checked against what each step must do to pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ablate.augment import augment, normalize
from ablate.config import AugCfg
from ablate.data import MEAN, STD

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_ON = AugCfg(crop_padding=4, flip=True, cutout=8, jitter=0.4, rotate=15.0)
SINGLE = {
    "crop": AugCfg(crop_padding=4),
    "flip": AugCfg(flip=True),
    "cutout": AugCfg(cutout=8),
    "jitter": AugCfg(jitter=0.4),
    "rotate": AugCfg(rotate=15.0),
    "all": ALL_ON,
}


def batch(device: str = "cpu", n: int = 64, seed: int = 0) -> torch.Tensor:
    """Random noise images: no two shifts or flips of one look alike."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)


def gen(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img moved down by dy and right by dx, zeros where it moved away from."""
    p = max(abs(dy), abs(dx))
    h, w = img.shape[-2:]
    return F.pad(img, (p, p, p, p))[..., p - dy:p - dy + h, p - dx:p - dx + w]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SINGLE)
def test_shape_dtype_device_kept_and_input_untouched(device, name):
    x = batch(device)
    before = x.clone()
    out = augment(x, SINGLE[name], gen(device))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before)
    assert not torch.equal(out, x)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_batch(device):
    x = batch(device)
    a = augment(x, ALL_ON, gen(device, 1))
    b = augment(x, ALL_ON, gen(device, 1))
    c = augment(x, ALL_ON, gen(device, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_all_off_is_identity_and_draws_nothing():
    x = batch()
    g = gen("cpu")
    state = g.get_state()
    assert torch.equal(augment(x, AugCfg(), g), x)
    assert torch.equal(g.get_state(), state)


def test_global_rng_untouched():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    augment(batch(), ALL_ON, gen("cpu"))
    assert torch.equal(torch.rand(3), want)


def test_flip_flips_about_half_exactly():
    x = batch(n=200)
    out = augment(x, AugCfg(flip=True), gen("cpu"))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # every image is exactly one of the two
    assert 60 < flipped.sum() < 140


@pytest.mark.parametrize("p", [1, 4])
def test_crop_is_a_zero_filled_shift(p):
    x = batch(n=100)
    out = augment(x, AugCfg(crop_padding=p), gen("cpu"))
    offsets = set()
    for img, res in zip(x, out):
        found = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                 if torch.equal(shifted(img, dy, dx), res)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > (2 * p + 1) ** 2 // 2  # offsets spread over the range


def test_cutout_zeros_one_square_clipped_at_the_border():
    size = 8
    x = torch.full((200, 3, 32, 32), 255, dtype=torch.uint8)
    out = augment(x, AugCfg(cutout=size), gen("cpu"))
    assert torch.equal(out == 0, (out == 0)[:, :1].expand_as(out))  # same in every channel
    zero = out[:, 0] == 0
    full = 0
    for z in zero:
        rows, cols = z.any(1).nonzero().flatten(), z.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert 1 <= h <= size and 1 <= w <= size
        assert z.sum() == h * w  # a filled rectangle ...
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w  # ... in one piece
        inside = 0 < rows[0] and rows[-1] < 31 and 0 < cols[0] and cols[-1] < 31
        assert not inside or h == w == size  # only the border clips it
        full += h == w == size
    assert full > 50
    assert set(out.unique().tolist()) == {0, 255}


def test_jitter_keeps_gray_images_gray():
    # Brightness, contrast and saturation all keep R = G = B.
    g = torch.Generator().manual_seed(0)
    gray = torch.randint(0, 256, (32, 1, 32, 32), generator=g, dtype=torch.uint8).expand(-1, 3, -1, -1)
    out = augment(gray, AugCfg(jitter=0.5), gen("cpu"))
    assert (out[:, 0] - out[:, 1].int()).abs().max() <= 1  # rounding only
    assert (out[:, 0] - out[:, 2].int()).abs().max() <= 1
    assert not torch.equal(out, gray)


def test_jitter_changes_brightness_per_image_within_bounds():
    x = torch.full((100, 3, 32, 32), 100, dtype=torch.uint8)
    out = augment(x, AugCfg(jitter=0.2), gen("cpu"))
    # Flat gray: contrast and saturation do nothing, brightness scales by 0.8 .. 1.2.
    level = out.float().mean((1, 2, 3))
    assert level.min() >= 80 - 0.5 and level.max() <= 120 + 0.5
    assert level.std() > 5


def test_rotate_tiny_angle_is_identity_and_keeps_centre():
    x = batch()
    near = augment(x, AugCfg(rotate=1e-4), gen("cpu"))
    assert (near.int() - x.int()).abs().max() <= 1
    flat = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    out = augment(flat, AugCfg(rotate=180.0), gen("cpu"))
    assert (out[:, :, 12:20, 12:20] == 200).all()  # the middle stays, corners may go black


@pytest.mark.parametrize("device", DEVICES)
def test_normalize(device):
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8, device=device)
    x[1] = 255
    out = normalize(x)
    assert out.dtype == torch.float32 and out.device == x.device and out.shape == x.shape
    mean, std = torch.tensor(MEAN, device=device), torch.tensor(STD, device=device)
    torch.testing.assert_close(out[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(out[1, :, 0, 0], (1 - mean) / std)
    assert normalize(x, torch.bfloat16).dtype == torch.bfloat16


def test_wrong_dtype_refused():
    with pytest.raises(TypeError):
        augment(batch().float(), ALL_ON, gen("cpu"))
    with pytest.raises(TypeError):
        normalize(batch().float())
