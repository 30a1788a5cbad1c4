"""Test-time augmentation: a batch's logits averaged over a few views of each image.

As in airbench94 (Jordan 2024): ``flip`` averages each image with its mirror image;
``flip_translate`` adds that pair shifted by one pixel diagonally each way (reflect
padding), the two shifted pairs together weighing as much as the unshifted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("none", "flip", "flip_translate")


def views(x: torch.Tensor, mode: str) -> tuple[list[torch.Tensor], list[float]]:
    """The views of normalised images [B, C, H, W] that ``mode`` averages, and their weights."""
    if mode == "none":
        return [x], [1.0]
    if mode == "flip":
        return [x, x.flip(3)], [0.5, 0.5]
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        down_right, up_left = padded[..., :h, :w], padded[..., 2:, 2:]
        shifted = [down_right, down_right.flip(3), up_left, up_left.flip(3)]
        return [x, x.flip(3), *shifted], [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    raise ValueError(f"unknown test-time augmentation {mode!r}; one of {', '.join(MODES)}")


def tta_logits(
    model: nn.Module, x: torch.Tensor, mode: str = "none", memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """The weighted mean of the model's logits over the views, in float32.

    All views go through the model as one batch: in eval mode that gives what one view at a
    time would, and one large batch keeps the accelerator busier.
    """
    vs, weights = views(x, mode)
    batch = vs[0] if len(vs) == 1 else torch.cat(vs)
    out = model(batch.contiguous(memory_format=memory_format)).float().reshape(len(vs), len(x), -1)
    if len(vs) == 1:
        return out[0]
    return sum(w * out[i] for i, w in enumerate(weights))
