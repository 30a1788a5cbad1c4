"""The report's toy model: a stack of conv layers, configurable in every ablated dimension."""

from __future__ import annotations

from torch import nn

from ablate.config import ConfigError
from ablate.models.layers import activation as make_activation
from ablate.models.layers import per_layer
from ablate.models.registry import register_model

MAX_POOLS = 3  # 32 -> 16 -> 8 -> 4: deeper stacks keep 4x4 maps rather than vanish


def pool_positions(depth: int) -> set[int]:
    """Indices of the layers followed by a pooling step, spread evenly over the stack."""
    pools = min(depth, MAX_POOLS)
    return {round((k + 1) * depth / pools) - 1 for k in range(pools)}


def default_channels(depth: int, width: int) -> list[int]:
    """``width`` channels, doubled after every pooling step."""
    out, c = [], width
    for i in range(depth):
        out.append(c)
        if i in pool_positions(depth):
            c *= 2
    return out


class ConvLayer(nn.Sequential):
    """Conv -> [pool] -> BN -> act, or Conv -> BN -> act -> [pool].

    Pooling first is the report's "put max pooling forward": BN and ReLU are monotonic, so
    they commute with max pooling and cost a quarter as much on the pooled map.
    """

    def __init__(self, c_in, c_out, kernel, act, batchnorm, pool, pool_first, stride=1):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batchnorm)
        ]
        post = ([nn.BatchNorm2d(c_out)] if batchnorm else []) + [make_activation(act, c_out)]
        if pool is None:
            layers += post
        elif pool_first:
            layers += [pool, *post]
        else:
            layers += [*post, pool]
        super().__init__(*layers)


@register_model
def plain_cnn(
    num_classes: int = 10,
    depth: int = 3,
    channels: list[int] | None = None,
    width: int = 32,
    kernel_size: int | list[int] = 3,
    activation: str = "relu",
    batchnorm: bool = True,
    dropout: float = 0.0,
    pool: str = "max",
    pool_first: bool = False,
) -> nn.Module:
    """``depth`` conv layers, pooling spread over the stack, a 2x2 average pool and one
    linear classifier with ``dropout`` before it (4 x last channels inputs: 512 by default).

    ``channels``: one count per layer; None doubles ``width`` after every pooling step.
    ``kernel_size``: odd sizes keep the map size; one number or one per layer.
    """
    if depth < 1:
        raise ConfigError(f"model.depth must be >= 1, got {depth}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    if pool not in ("max", "avg"):
        raise ConfigError(f"model.pool must be max or avg, got {pool!r}")
    chans = per_layer("channels", channels, depth) if channels is not None else default_channels(depth, width)
    kernels = per_layer("kernel_size", kernel_size, depth)
    if any(k < 1 or k % 2 == 0 for k in kernels):
        raise ConfigError(f"model.kernel_size must be odd and positive, got {kernel_size}")
    pooling = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
    pools = pool_positions(depth)
    layers, c_in = [], 3
    for i, (c, k) in enumerate(zip(chans, kernels)):
        p = pooling(2) if i in pools else None
        layers.append(ConvLayer(c_in, c, k, activation, batchnorm, p, pool_first))
        c_in = c
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * c_in, num_classes),
    )
