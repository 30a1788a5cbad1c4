"""The usual CIFAR pipeline: per-image PIL transforms in a DataLoader with worker processes.

ablate trains with ``augment.py`` (whole batches on the device). This one exists so the
report's "module augmentation" claim can be measured against it (the ``speed`` study,
``data.pipeline = "pil"``): the same augmentations, done the way most code does them.
"""

from __future__ import annotations

import os

import torch
from torchvision import transforms

from ablate.config import AugCfg
from ablate.data import MEAN, STD

WORKERS = min(4, os.cpu_count() or 1)


class Cutout:
    """Zero a size x size square at a random centre (clipped at the border), as augment.py does."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
        y0, x0 = max(cy - self.size // 2, 0), max(cx - self.size // 2, 0)
        img = img.clone()
        img[:, y0 : cy - self.size // 2 + self.size, x0 : cx - self.size // 2 + self.size] = 0
        return img


def pil_transform(aug: AugCfg) -> transforms.Compose:
    steps = []
    if aug.crop_padding:
        steps.append(transforms.RandomCrop(32, padding=aug.crop_padding))
    if aug.flip:
        steps.append(transforms.RandomHorizontalFlip())
    if aug.jitter:
        steps.append(transforms.ColorJitter(aug.jitter, aug.jitter, aug.jitter))
    if aug.rotate:
        steps.append(transforms.RandomRotation(aug.rotate))
    steps.append(transforms.ToTensor())
    if aug.cutout:
        steps.append(Cutout(aug.cutout))  # before normalising, so the square is black as in augment.py
    steps.append(transforms.Normalize(MEAN, STD))
    return transforms.Compose(steps)


class PilImages(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, aug: AugCfg):
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()  # HWC uint8, as PIL wants
        self.y = y
        self.transform = pil_transform(aug)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def pil_loader(x: torch.Tensor, y: torch.Tensor, aug: AugCfg, batch: int, seed: int, workers: int = WORKERS):
    """A shuffling DataLoader over CPU uint8 tensors; drops the ragged last batch like the trainer."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        PilImages(x.cpu(), y.cpu(), aug),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=gen,
        persistent_workers=workers > 0,
    )
