"""ablate.augment: batch augmentation checked against what each step must do to pixels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from ablate.augment import alternating_flips, augment, crops, index_only, normalize, prepare
from ablate.config import AugCfg
from ablate.data import MEAN, STD

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALL_ON = AugCfg(crop_padding=4, flip=True, cutout=8, jitter=0.4, rotate=15.0)
SINGLE = {
    "crop": AugCfg(crop_padding=4),
    "reflect crop": AugCfg(crop_padding=4, pad_mode="reflect"),
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
    assert augment(x, AugCfg(), g) is x
    assert torch.equal(g.get_state(), state)


def test_a_step_that_is_off_draws_nothing():
    # Jitter alone draws its three factors per image and nothing more, so turning a step on
    # or off elsewhere does not shift the draws of the others.
    x, g = batch(n=8), gen("cpu", 2)
    augment(x, AugCfg(jitter=0.3), g)
    replay = gen("cpu", 2)
    torch.rand(3, 8, generator=replay)
    assert torch.equal(g.get_state(), replay.get_state())


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


def coordinates(n: int, h: int = 32, seed: int = 0) -> torch.Tensor:
    """Images whose red is the row + 1, green the column + 1 (0 is left for the padding)
    and blue noise: a pixel says where it came from, and a window where it was taken."""
    x = torch.empty(n, 3, h, h, dtype=torch.uint8)
    x[:, 0] = torch.arange(1, h + 1, dtype=torch.uint8).view(h, 1)
    x[:, 1] = torch.arange(1, h + 1, dtype=torch.uint8).view(1, h)
    x[:, 2] = torch.randint(0, 256, (n, h, h), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return x


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("p", [1, 4])
def test_crop_is_a_window_at_every_offset_from_0_to_2p(p, pad_mode):
    n = 800  # (2p + 1)^2 = 81 offsets for p = 4: each is missed with odds of about 1 in 20,000
    x = coordinates(n)
    out = augment(x, AugCfg(crop_padding=p, pad_mode=pad_mode), gen("cpu"))
    padded = F.pad(x.float(), (p, p, p, p), mode="constant" if pad_mode == "zeros" else "reflect")
    # The centre pixel is never padding: it names the window's offset in the padded image.
    dy = out[:, 0, 16, 16].long() - 17 + p
    dx = out[:, 1, 16, 16].long() - 17 + p
    for i in range(n):
        assert torch.equal(out[i].float(), padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32])
    offsets = set(zip(dy.tolist(), dx.tolist()))
    assert offsets == {(a, b) for a in range(2 * p + 1) for b in range(2 * p + 1)}  # all of them, none beyond
    g = gen("cpu")  # and the ones drawn from the generator: rows, then columns (same seed, same crops)
    assert torch.equal(dy, torch.randint(0, 2 * p + 1, (n,), generator=g))
    assert torch.equal(dx, torch.randint(0, 2 * p + 1, (n,), generator=g))


def test_reflect_padding_must_be_smaller_than_the_image():
    x = batch(n=4)[..., :10, :10].contiguous()
    assert augment(x, AugCfg(crop_padding=9, pad_mode="reflect"), gen("cpu")).shape == x.shape
    with pytest.raises(ValueError) as e:
        augment(x, AugCfg(crop_padding=10, pad_mode="reflect"), gen("cpu"))
    assert str(e.value) == "reflect padding must be smaller than the image, got 10 for 10x10"


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


@pytest.mark.parametrize("size", [7, 1])
def test_cutout_square_is_centred_on_the_drawn_point(size):
    # The draws, replayed: a centre row, then a centre column, per image, from the generator.
    n, half = 64, size // 2
    out = augment(torch.full((n, 3, 32, 32), 255, dtype=torch.uint8), AugCfg(cutout=size), gen("cpu", 4))
    g = gen("cpu", 4)
    cy, cx = torch.randint(0, 32, (n,), generator=g), torch.randint(0, 32, (n,), generator=g)
    for i in range(n):
        want = torch.full((3, 32, 32), 255, dtype=torch.uint8)
        want[:, max(cy[i] - half, 0) : cy[i] - half + size, max(cx[i] - half, 0) : cx[i] - half + size] = 0
        assert torch.equal(out[i], want)


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


def coloured(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs over noise: grey level, contrast and saturation all differ per image."""
    g = torch.Generator().manual_seed(seed)
    blobs = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)
    return (200 * blobs + 55 * torch.rand(n, 3, 32, 32, generator=g)).to(torch.uint8)


def replayed_factors(n: int, j: float, seed: int) -> torch.Tensor:
    """The [3, n] factors (brightness, contrast, saturation) that jitter draws from ``gen(seed)``."""
    return torch.rand(3, n, generator=gen("cpu", seed)) * 2 * j + 1 - j


def test_jitter_is_torchvisions_brightness_contrast_saturation_on_colour_images():
    x, j = coloured(), 0.4
    out = augment(x, AugCfg(jitter=j), gen("cpu", 3))
    factors = replayed_factors(len(x), j, 3)
    for i, (b, c, s) in enumerate(factors.T.tolist()):
        want = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i].float() / 255, b), c), s)
        # torchvision's grey is 0.2989 R where ours is 0.299: one level of rounding apart at most.
        assert (want * 255 - out[i].float()).abs().max() <= 1.01


def saturation(x: torch.Tensor) -> torch.Tensor:
    """Per image: how far its colours are from grey (the spread over the channels)."""
    return x.float().std(1).mean((1, 2))


def contrast(x: torch.Tensor) -> torch.Tensor:
    """Per image: the spread of its grey levels (luma)."""
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * luma).sum(1).std((1, 2))


def test_jitter_scales_saturation_and_contrast_of_colour_images_by_the_drawn_factors():
    # Mid-range colours, so no factor pushes a pixel past 0 or 255 and nothing is clamped.
    x, j = 60 + coloured(n=32) // 4, 0.4
    out = augment(x, AugCfg(jitter=j), gen("cpu", 5))
    assert out.min() > 0 and out.max() < 255
    b, c, s = replayed_factors(len(x), j, 5)
    # Brightness scales every spread by b, contrast the grey levels' by c, saturation the
    # distance from grey by s (leaving the grey levels as they are).
    torch.testing.assert_close(contrast(out) / contrast(x), b * c, rtol=0.02, atol=0)
    torch.testing.assert_close(saturation(out) / saturation(x), b * c * s, rtol=0.02, atol=0)


@pytest.mark.parametrize("d", [30.0, 1.0])
def test_rotate_is_torchvisions_rotation_by_the_drawn_angle(d):
    # Noise is asymmetric in every direction: only the right angle, turned the right way
    # (counter-clockwise for a positive angle, as torchvision), matches. Even a degree moves
    # the corners' pixels by a fraction of one, which noise shows.
    x = batch(n=16)
    out = augment(x, AugCfg(rotate=d), gen("cpu", 3))
    angles = torch.rand(len(x), generator=gen("cpu", 3)) * 2 * d - d  # the draw, replayed: degrees
    assert angles.abs().max() > d / 2
    for i, angle in enumerate(angles.tolist()):
        want = TF.rotate(x[i].float(), angle, interpolation=InterpolationMode.BILINEAR)
        assert (want.round() - out[i].float()).abs().max() <= 1


def test_jitter_then_rotate_is_torchvisions_clamped_jitter_then_rotation():
    # Each jitter step clamps to [0, 255] as ColorJitter does, so the rotation that follows
    # blends clamped pixels: a strong jitter on vivid colours pushes many out of range.
    x, j, d = coloured(), 0.9, 30.0
    out = augment(x, AugCfg(jitter=j, rotate=d), gen("cpu", 6))
    g = gen("cpu", 6)
    factors = torch.rand(3, len(x), generator=g) * 2 * j + 1 - j  # jitter draws first ...
    angles = torch.rand(len(x), generator=g) * 2 * d - d  # ... then the angles
    for i, (b, c, s) in enumerate(factors.T.tolist()):
        jittered = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i].float() / 255, b), c), s)
        want = TF.rotate(jittered * 255, angles[i].item(), interpolation=InterpolationMode.BILINEAR)
        assert (want.round().clamp(0, 255) - out[i].float()).abs().max() <= 1.01


def test_jitter_keeps_black_black():
    black = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    assert torch.equal(augment(black, AugCfg(jitter=0.5), gen("cpu")), black)


def test_alternating_flips_start_from_the_seeds_coins():
    # Epoch 1 flips where a fair coin from the seed says so; a change here would flip other
    # images for the same seed and config, and no longer reproduce recorded runs.
    coins = torch.rand(64, generator=torch.Generator().manual_seed(5)) < 0.5
    assert torch.equal(alternating_flips(64, seed=5, epoch=1), coins)
    assert torch.equal(alternating_flips(64, seed=5, epoch=4), ~coins)


def test_alternating_flips_land_on_the_device_asked_for():
    flags = alternating_flips(16, seed=0, epoch=1, device="meta")  # any device but the CPU
    assert flags.device.type == "meta" and flags.dtype == torch.bool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bf16: what a CUDA run stores
@pytest.mark.parametrize("aug", [AugCfg(crop_padding=4, flip=True), AugCfg(crop_padding=3, pad_mode="reflect")])
def test_a_set_prepared_once_gives_the_augmented_batch_bitwise_and_channels_last_on_request(aug, dtype, device):
    x = batch(n=32).to(device)
    idx = torch.randperm(32, generator=torch.Generator().manual_seed(1))[:16].to(device)
    want = normalize(augment(x[idx], aug, gen(device, 3)), dtype)
    for channels_last in (False, True):
        prepared = prepare(x, aug, dtype, channels_last=channels_last)
        got = crops(prepared, idx, aug, gen(device, 3), channels_last=channels_last)
        assert got.dtype == dtype and torch.equal(got, want)
        assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if aug.pad_mode == "zeros":  # the padding is a black pixel normalised, not 0
        corner = prepare(x, aug)[0, :, 0, 0]
        assert torch.equal(corner, normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))[0, :, 0, 0])
        assert torch.all(corner < 0)
    assert index_only(aug) and not index_only(AugCfg(crop_padding=4, cutout=8))


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


def test_wrong_input_refused_by_name():
    with pytest.raises(TypeError) as e:
        augment(batch(n=2).float(), ALL_ON, gen("cpu"))
    assert str(e.value) == "augment takes uint8 [B, C, H, W], got torch.float32 [2, 3, 32, 32]"
    with pytest.raises(TypeError) as e:
        normalize(batch().float())
    assert str(e.value) == "normalize takes uint8 images, got torch.float32"
    with pytest.raises(ValueError) as e:
        augment(batch(n=2), AugCfg(flip=True, flip_mode="alternate"), gen("cpu"), torch.ones(3, dtype=torch.bool))
    assert str(e.value) == "flip_mode 'alternate' needs one flip flag per image (alternating_flips)"
