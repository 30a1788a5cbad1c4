"""Building blocks shared by the model families."""

from __future__ import annotations

from torch import nn

from ablate.config import ConfigError

ACTIVATIONS = {
    "relu": lambda c: nn.ReLU(inplace=True),
    "leaky_relu": lambda c: nn.LeakyReLU(0.1, inplace=True),
    "prelu": lambda c: nn.PReLU(c),  # one learnable slope per channel
    "elu": lambda c: nn.ELU(inplace=True),
    "celu": lambda c: nn.CELU(inplace=True),
    "gelu": lambda c: nn.GELU(),
    "silu": lambda c: nn.SiLU(inplace=True),
    "mish": lambda c: nn.Mish(inplace=True),
}


def activation(name: str, channels: int) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name](channels)


def per_layer(key: str, value: int | list[int], depth: int) -> list[int]:
    """An int applies to every layer; a list must name one value per layer."""
    if isinstance(value, int):
        return [value] * depth
    if len(value) != depth:
        raise ConfigError(
            f"model.{key} has {len(value)} values for {depth} layers; give one per layer or a single number"
        )
    return list(value)
