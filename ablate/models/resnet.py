"""Residual nets: one block wired in the five orders of He et al. 2016, and the nets built on it.

- ``resnet``: a small CIFAR ResNet for the ``resblock`` study (report 4.8, Figure 10).
- ``resnet18``: ResNet-18 for CIFAR, 11,173,962 parameters (report section 2).
- ``resnet9``: the DAWNBench ResNet-9 of Myrtle.ai, 6,573,130 parameters (report 5).
- ``resnet12``: ResNet-9 with a residual pair after every stage, 7,827,786 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ablate.config import ConfigError
from ablate.models.layers import activation as make_activation
from ablate.models.plain_cnn import ConvLayer
from ablate.models.registry import register_model

# The report's five blocks (section 4.8) as written there; "add" is the shortcut's addition.
ORDERS = {
    "original": "conv bn act conv bn add act",
    "bn_after_add": "conv bn act conv add bn act",
    "act_before_add": "conv bn act conv bn act add",
    "act_preact": "act conv bn act conv bn add",  # ReLU-only pre-activation
    "preact": "bn act conv bn act conv add",  # full pre-activation
}
DOWNSAMPLING = ("stride", "maxpool")


def check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"model.{key} must be one of {', '.join(choices)}, got {value!r}")


def norm_or_act(op: str, channels: int, act: str, inplace: bool = True) -> nn.Module:
    if op == "bn":
        return nn.BatchNorm2d(channels)
    module = make_activation(act, channels)
    if not inplace and hasattr(module, "inplace"):
        module.inplace = False
    return module


class ResBlock(nn.Module):
    """Two 3x3 convs with BN and activation wired as ``ORDERS[order]``, plus a shortcut.

    ``forward`` walks ``order_ops`` one op at a time, so that list *is* the wiring.
    ``downsample``: None keeps the map size; "stride" gives the first conv stride 2;
    "maxpool" starts the block with a 2x2 max-pool that both paths read (the report's
    "improved downsampling block", section 6.1), so ``order_ops`` begins with "pool".

    The shortcut is the identity where the shapes match, else a 1x1 conv + BN in every
    order. He et al. 2016 drop that BN in pre-activation nets; keeping it means the five
    orders differ in nothing but the residual path's wiring.
    """

    def __init__(
        self, c_in: int, c_out: int, order: str = "original", act: str = "relu", downsample: str | None = None
    ):
        super().__init__()
        check_choice("block", order, ORDERS)
        if downsample is not None:
            check_choice("downsample", downsample, DOWNSAMPLING)
        wiring = ORDERS[order].split()
        self.order_ops = (["pool"] if downsample == "maxpool" else []) + wiring
        stride = 2 if downsample == "stride" else 1
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if downsample == "maxpool" else []
        c, s = c_in, stride
        for i, op in enumerate(wiring):
            if op == "conv":
                layers.append(nn.Conv2d(c, c_out, 3, stride=s, padding=1, bias=False))
                c, s = c_out, 1  # only the first conv strides
            elif op != "add":
                # An op on the block's input must leave it intact: the shortcut reads it.
                layers.append(norm_or_act(op, c, act, inplace=i > 0))
        self.layers = nn.ModuleList(layers)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, layers = x, iter(self.layers)
        for op in self.order_ops:
            if op == "add":
                out = out + self.shortcut(x)
            else:
                out = next(layers)(out)
                if op == "pool":
                    x = out  # the shortcut downsamples by the same pooling
        return out


def residual_net(
    num_classes: int, widths: list[int], depth: int, block: str, act: str, downsample: str
) -> nn.Sequential:
    """Stem 3x3 conv -> one stage of ``depth`` blocks per width, each stage after the first
    halving the map in its first block -> global average pool -> linear."""
    check_choice("block", block, ORDERS)
    check_choice("downsample", downsample, DOWNSAMPLING)
    if depth < 1:
        raise ConfigError(f"model.depth must be >= 1, got {depth}")
    wiring = ORDERS[block].split()
    lead = wiring[: wiring.index("conv")]  # what a block does to its input before its first conv
    # Every conv output is normalised and activated once before the next conv: the stem does
    # what the blocks don't do on entry, and the last block's sum gets the blocks' entry ops
    # (BN -> act for full pre-activation, as in He et al. 2016; act for ReLU-only).
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False)]
    layers += [norm_or_act(op, widths[0], act) for op in ("bn", "act") if op not in lead]
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(depth):
            layers.append(ResBlock(c, w, block, act, downsample if i > 0 and j == 0 else None))
            c = w
    layers += [norm_or_act(op, c, act) for op in lead]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


@register_model
def resnet(
    num_classes: int = 10,
    block: str = "original",
    depth: int = 1,
    width: int = 32,
    stages: int = 3,
    activation: str = "relu",
    downsample: str = "stride",
) -> nn.Module:
    """A small CIFAR ResNet for comparing block orders: ``stages`` stages of ``depth``
    blocks, ``width`` channels doubled per stage (0.31M parameters at the defaults).

    ``block``: original | bn_after_add | act_before_add | act_preact | preact.
    ``downsample``: stride (stride-2 first conv) | maxpool (2x2 max-pool on the block input).
    """
    if width < 1 or stages < 1:
        raise ConfigError(f"model.width and model.stages must be >= 1, got {width} and {stages}")
    return residual_net(num_classes, [width * 2**i for i in range(stages)], depth, block, activation, downsample)


@register_model
def resnet18(
    num_classes: int = 10,
    block: str = "original",
    activation: str = "relu",
    downsample: str = "stride",
) -> nn.Module:
    """ResNet-18 for CIFAR: 3x3 stem, no stem pooling, 2 blocks per stage of 64/128/256/512.

    11,173,962 parameters with 10 classes, in every block order and with either downsampling
    (the report's best: ``block="preact"``, ``activation="mish"``, ``downsample="maxpool"``);
    PReLU adds its slopes.
    """
    return residual_net(num_classes, [64, 128, 256, 512], 2, block, activation, downsample)


class Scale(nn.Module):
    """Multiplies by a constant: ResNet-9's 0.125 on the logits, a fixed (not learned) factor."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def myrtle_net(
    num_classes: int, width: int, residual_after: set[int], act: str, pool_first: bool, downsample: str = "maxpool"
) -> nn.Sequential:
    """Myrtle.ai's DAWNBench layout: a prep conv (``width`` channels) and three conv + 2x2
    max-pool stages (2, 4 and 8 x ``width``), a residual pair after the stages in
    ``residual_after`` (0 is the prep conv), global max-pool, linear, x0.125.

    Each conv is Conv3x3 (no bias) -> BN -> act, with the pool after the conv (``pool_first``)
    or after the act; the residual pair is x + act(BN(conv(act(BN(conv(x)))))), the
    "act_before_add" order. ``downsample="stride"`` gives each stage's conv stride 2 in
    place of the pool (the same parameters; ``pool_first`` then has nothing to move).
    """
    if width < 1:
        raise ConfigError(f"model.width must be >= 1, got {width}")
    check_choice("downsample", downsample, DOWNSAMPLING)
    layers: list[nn.Module] = []
    c = 3
    for i, mult in enumerate((1, 2, 4, 8)):
        pool = nn.MaxPool2d(2) if i > 0 and downsample == "maxpool" else None
        stride = 2 if i > 0 and downsample == "stride" else 1
        layers.append(ConvLayer(c, width * mult, 3, act, True, pool, pool_first, stride))
        c = width * mult
        if i in residual_after:
            layers.append(ResBlock(c, c, "act_before_add", act))
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, num_classes), Scale(0.125))


@register_model
def resnet9(
    num_classes: int = 10,
    width: int = 64,
    activation: str = "relu",
    pool_first: bool = True,
) -> nn.Module:
    """The DAWNBench ResNet-9 (Myrtle.ai, David Page): residual pairs after stages 1 and 3.

    6,573,130 parameters at the defaults, the report's count: convs without bias, affine BN,
    a linear layer with bias, and a fixed 0.125 logit scale. ``pool_first`` is the report's
    "put max pooling forward" (section 5.2).
    """
    return myrtle_net(num_classes, width, {1, 3}, activation, pool_first)


@register_model
def resnet12(
    num_classes: int = 10,
    width: int = 64,
    activation: str = "relu",
    pool_first: bool = True,
    downsample: str = "maxpool",
) -> nn.Module:
    """ResNet-9 with a residual pair after every stage: 12 conv layers, 7,827,786 parameters.

    ``downsample``: maxpool (each stage's conv followed by a 2x2 max-pool) | stride (that conv
    with stride 2 instead), the report's section 6.1 comparison; the count is the same.

    A reconstruction of the report's "12 layers, 7,827,786 parameters" net (trained with
    Ranger), which the report does not describe. The count matches exactly: 7,827,786 -
    6,573,130 = 2 x (64*64*9 + 2*64) + 2 x (256*256*9 + 2*256), the residual pairs ResNet-9
    lacks at 64 and 256 channels. It has 12 convs + 1 linear, so "12 layers" counts convs here.
    """
    return myrtle_net(num_classes, width, {0, 1, 2, 3}, activation, pool_first, downsample)
