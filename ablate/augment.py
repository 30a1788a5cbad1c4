"""Augmentation of whole uint8 batches as tensor ops on the batch's own device.

No PIL, no DataLoader, no per-image Python: every random choice is one tensor drawn
from the caller's generator, so a batch costs a handful of kernels and the same seed
gives the same batch. Order: crop, flip, jitter, rotate, cutout.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ablate.config import AugCfg
from ablate.data import MEAN, STD

# One generator, or one per equal share of the batch (the members of a fused group).
Generators = torch.Generator | Sequence[torch.Generator]

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale uses.
_GRAY = (0.299, 0.587, 0.114)


def augment(x: torch.Tensor, aug: AugCfg, generator: Generators, flips: torch.Tensor | None = None) -> torch.Tensor:
    """A randomly augmented copy of uint8 [B, 3, H, W] ``x`` (``x`` itself if all is off).

    ``generator``: a list of G generators augments G equal shares of the batch, each share
    exactly as that generator alone would augment it (a fused group's batches in one go).

    ``flips``: which images to flip, for ``flip_mode = "alternate"`` (see ``alternating_flips``):
    the choice depends on the image and the epoch, which only the caller knows.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise TypeError(f"augment takes uint8 [B, C, H, W], got {x.dtype} {list(x.shape)}")
    if aug.crop_padding > 0:
        x = _crop(x, aug.crop_padding, generator, aug.pad_mode)
    if aug.flip:
        if aug.flip_mode == "alternate":
            if flips is None or flips.shape != x.shape[:1]:
                raise ValueError("flip_mode 'alternate' needs one flip flag per image (alternating_flips)")
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        else:
            x = _flip(x, generator)
    if aug.jitter > 0 or aug.rotate > 0:
        # Both steps in float, rounded once, so small changes are not lost to rounding twice.
        xf = x.float()
        if aug.jitter > 0:
            xf = _jitter(xf, aug.jitter, generator)
        if aug.rotate > 0:
            xf = _rotate(xf, aug.rotate, generator)
        x = xf.round_().clamp_(0, 255).to(torch.uint8)
    if aug.cutout > 0:
        x = _cutout(x, aug.cutout, generator)
    return x


def alternating_flips(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Which of ``n`` training images to flip in ``epoch`` (1-based) under alternating flip:
    a fair coin per image in epoch 1, the opposite in epoch 2, and so on.

    The coins come from their own generator seeded by ``seed``, so any epoch's flags are known
    without replaying the epochs before it, and a resumed run flips as an uninterrupted one.
    """
    return flip_coins(n, seed, device)[1 - epoch % 2]


def flip_coins(n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[2, n] bool on ``device``: row 0 the flags of every odd epoch, row 1 of every even one.

    Drawn once per run: a trainer picks an epoch's row, a view, with no host draw or copy."""
    # Drawn on the host whatever the device: a CUDA generator would draw other coins.
    first = (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5).to(device)
    return torch.stack([first, ~first])


def index_only(aug: AugCfg) -> bool:
    """Whether ``aug`` only moves pixels (crop, flip): then every augmented pixel is a copy of
    a pixel of the padded image, and the set can be normalised and padded once (``prepare``)."""
    return not (aug.jitter > 0 or aug.rotate > 0 or aug.cutout > 0)


def prepare(
    x: torch.Tensor, aug: AugCfg, dtype: torch.dtype = torch.float32, stats=None, channels_last: bool = False
) -> torch.Tensor:
    """uint8 [N, C, H, W] ``x``, padded by ``aug.crop_padding`` and normalised into ``dtype``
    once, for ``crops`` to read every batch from; stored [N, H', W', C] if ``channels_last``.

    Padded in uint8 before normalising, as ``augment`` pads: a zero-padded pixel is then a
    black one normalised (-mean / std), and every value is bitwise what ``normalize`` gives
    ``augment``'s batch."""
    if not index_only(aug):
        raise ValueError("prepare takes an augmentation that only crops and flips")
    p, (n, c, h, w) = aug.crop_padding, x.shape
    if p and aug.pad_mode == "reflect":
        if p >= min(h, w):
            raise ValueError(f"reflect padding must be smaller than the image, got {p} for {h}x{w}")
        rows = _mirror(torch.arange(-p, h + p, device=x.device), h)
        cols = _mirror(torch.arange(-p, w + p, device=x.device), w)
    shape = (n, h + 2 * p, w + 2 * p, c) if channels_last else (n, c, h + 2 * p, w + 2 * p)
    out = torch.empty(shape, dtype=dtype, device=x.device)
    # In chunks: the whole set in float32 at once would be a second, larger copy of it.
    for i in range(0, n, 4096):
        part = x[i : i + 4096]
        if p and aug.pad_mode == "reflect":
            part = part[:, :, rows][:, :, :, cols]
        elif p:
            part = F.pad(part, (p, p, p, p))
        part = normalize(part, dtype, stats)
        out[i : i + 4096] = part.permute(0, 2, 3, 1) if channels_last else part
    return out


def crops(
    prepared: torch.Tensor,
    idx: torch.Tensor,
    aug: AugCfg,
    generator: Generators,
    flips: torch.Tensor | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """The augmented, normalised batch of images ``idx``, gathered from ``prepare``'s set in
    one indexing op: the crop's offsets and the flip fold into the index. Draws what
    ``augment`` draws, in its order, so the batch is bitwise ``normalize(augment(...))``.

    ``channels_last``: ``prepared`` is [N, H', W', C] and the batch comes back as a
    channels-last view [B, C, H, W]; otherwise both are [.., C, H, W], contiguous."""
    p, b = aug.crop_padding, len(idx)
    c, hp, wp = (prepared.shape[3], *prepared.shape[1:3]) if channels_last else prepared.shape[1:]
    h, w = hp - 2 * p, wp - 2 * p
    device = prepared.device
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    if p:
        dy, dx = _randint(2 * p + 1, b, prepared, generator), _randint(2 * p + 1, b, prepared, generator)
    if aug.flip:
        if aug.flip_mode == "alternate":
            if flips is None or flips.shape != idx.shape:
                raise ValueError("flip_mode 'alternate' needs one flip flag per image (alternating_flips)")
            coin = flips
        else:
            coin = _draw(lambda k, one: torch.rand(k, generator=one, device=device), generator, b) < 0.5
        cols = torch.where(coin.view(-1, 1), cols.flip(0), cols)  # a flipped window reads right to left
    rows, cols = (dy + rows, dx + cols) if p else (rows.expand(b, h), cols.expand(b, w))
    if channels_last:
        return prepared[idx.view(-1, 1, 1), rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    channel = torch.arange(c, device=device).view(1, -1, 1, 1)
    return prepared[idx.view(-1, 1, 1, 1), channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(x: torch.Tensor, dtype: torch.dtype = torch.float32, stats=None) -> torch.Tensor:
    """uint8 [B, C, H, W] -> (x / 255 - mean) / std in ``dtype``; ``stats`` is (mean, std) per
    channel, by default CIFAR-10's (MEAN, STD)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize takes uint8 images, got {x.dtype}")
    scale, shift = _norm_constants(x.device, *(stats or (MEAN, STD)))
    # Computed in float32 whatever ``dtype``: bf16 has too few bits for x / 255 itself.
    return x.float().mul_(scale).add_(shift).to(dtype)


@functools.lru_cache(maxsize=None)
def _norm_constants(
    device: torch.device, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD
) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device and data set: a fresh host-to-device copy every batch would stall the GPU.
    mean = torch.tensor(mean, device=device).view(-1, 1, 1)
    std = torch.tensor(std, device=device).view(-1, 1, 1)
    return 1 / (255 * std), -mean / std


def _draw(make: Callable[[int, torch.Generator], torch.Tensor], g: Generators, b: int, dim: int = 0) -> torch.Tensor:
    """``make(n, generator)``: n draws along ``dim``. With a list of generators each draws
    for its own share of the batch, so every generator sees the sequence it sees alone."""
    if isinstance(g, torch.Generator):
        return make(b, g)
    n = b // len(g)
    return torch.cat([make(n, one) for one in g], dim) if len(g) > 1 else make(n, g[0])


def _randint(high: int, b: int, x: torch.Tensor, g: Generators) -> torch.Tensor:
    """[b, 1] integers in [0, high)."""
    return _draw(lambda n, one: torch.randint(0, high, (n, 1), generator=one, device=x.device), g, b)


def _uniform(
    shape: tuple[int, ...], lo: float, hi: float, x: torch.Tensor, g: Generators, dim: int = 0
) -> torch.Tensor:
    """Uniform in [lo, hi); ``shape[dim]`` is the batch."""

    def make(n: int, one: torch.Generator) -> torch.Tensor:
        return torch.rand((*shape[:dim], n, *shape[dim + 1 :]), generator=one, device=x.device)

    return _draw(make, g, shape[dim], dim) * (hi - lo) + lo


def _crop(x: torch.Tensor, p: int, g: Generators, pad_mode: str = "zeros") -> torch.Tensor:
    """Pad by ``p`` (zeros, or the image mirrored without its edge row), then take an H x W
    window at a random offset per image."""
    if pad_mode == "reflect":
        return _reflect_crop(x, p, g)
    b, c, h, w = x.shape
    padded = F.pad(x, (p, p, p, p))
    dy, dx = _randint(2 * p + 1, b, x, g), _randint(2 * p + 1, b, x, g)
    rows = dy + torch.arange(h, device=x.device)  # [b, h]
    cols = dx + torch.arange(w, device=x.device)  # [b, w]
    # One gather over flattened pixels: each image reads its own window.
    index = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w)
    out = padded.reshape(b, c, -1).gather(2, index.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def _reflect_crop(x: torch.Tensor, p: int, g: Generators) -> torch.Tensor:
    """``_crop`` with reflect padding, read straight from ``x``: a pixel's source index is
    mirrored at the border, so no padded copy is made (and uint8 needs no float round trip)."""
    b, c, h, w = x.shape
    if p >= min(h, w):
        raise ValueError(f"reflect padding must be smaller than the image, got {p} for {h}x{w}")
    dy, dx = _randint(2 * p + 1, b, x, g), _randint(2 * p + 1, b, x, g)
    rows = _mirror(dy - p + torch.arange(h, device=x.device), h)  # [b, h]
    cols = _mirror(dx - p + torch.arange(w, device=x.device), w)  # [b, w]
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w)
    return x.reshape(b, c, -1).gather(2, index.expand(b, c, h * w)).reshape(b, c, h, w)


def _mirror(i: torch.Tensor, n: int) -> torch.Tensor:
    """Index ``i`` in [-(n - 1), 2n - 2] folded into [0, n - 1] as F.pad's "reflect" does."""
    return (n - 1) - ((n - 1) - i.abs()).abs()


def _flip(x: torch.Tensor, g: Generators) -> torch.Tensor:
    coin = _draw(lambda n, one: torch.rand(n, generator=one, device=x.device), g, x.shape[0]) < 0.5
    return torch.where(coin.view(-1, 1, 1, 1), x.flip(3), x)


def _gray(xf: torch.Tensor) -> torch.Tensor:
    r, gr, b = xf.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * gr + _GRAY[2] * b).unsqueeze(1)


def _jitter(xf: torch.Tensor, j: float, g: Generators) -> torch.Tensor:
    """Brightness, contrast, saturation, each by a factor in [1 - j, 1 + j], as torchvision's
    ColorJitter does them (in a fixed order), clamping to [0, 255] after each."""
    bright, contrast, sat = _uniform((3, xf.shape[0], 1, 1, 1), 1 - j, 1 + j, xf, g, dim=1)
    xf = (xf * bright).clamp_(0, 255)
    mean = _gray(xf).mean((1, 2, 3), keepdim=True)
    xf = (mean + contrast * (xf - mean)).clamp_(0, 255)
    gray = _gray(xf)
    return (gray + sat * (xf - gray)).clamp_(0, 255)


def _rotate(xf: torch.Tensor, degrees: float, g: Generators) -> torch.Tensor:
    """Rotate each image about its centre by an angle in [-degrees, degrees]; corners that
    come from outside the image are black. Assumes square images: affine_grid's [-1, 1]
    coordinates would otherwise stretch the rotation."""
    angle = torch.deg2rad(_uniform((xf.shape[0],), -degrees, degrees, xf, g))
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    return F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, size: int, g: Generators) -> torch.Tensor:
    """Zero a size x size square centred anywhere in the image, clipped at the border
    (DeVries & Taylor 2017), so some images lose less than a full square."""
    b, _, h, w = x.shape
    top = _randint(h, b, x, g) - size // 2
    left = _randint(w, b, x, g) - size // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)  # [b, h]
    in_cols = (cols >= left) & (cols < left + size)  # [b, w]
    return x.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0)
