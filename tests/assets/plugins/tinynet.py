"""A user's model as a plugin file: what tests/test_plugins.py and test_models.py load."""

from typing import Annotated

from torch import nn

from ablate.models import Range, register_model


@register_model
def tinynet(
    num_classes: int = 10, in_channels: int = 3, width: int = 4, extra: Annotated[int, Range(0, None)] = 0
) -> nn.Module:
    layers = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
    for _ in range(extra):  # 0 extra layers is a fine model: no built-in width rule applies
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
