"""The name -> builder table, after timm's ``register_model``."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

from torch import nn

from ablate.config import ConfigError, check_value

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


class UnknownModel(ConfigError):
    pass


# Model arguments that are fractions or scales, by name, with the range they must lie in.
# Every other integer argument (or list item) counts layers, channels, blocks or pixels,
# and must be at least 1: a width of 0 builds a net that fails in its first step.
ARG_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "dropout": ("in [0, 1)", lambda v: 0 <= v < 1),
    "compression": ("in (0, 1]", lambda v: 0 < v <= 1),
    "bn_momentum": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "bias_lr_scale": (">0", lambda v: v > 0),
    "logit_scale": (">0", lambda v: v > 0),
    "whiten_eps": (">0", lambda v: v > 0),
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; its keyword defaults are the model's defaults."""
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        raise UnknownModel(f"unknown model '{name}'; registered: {', '.join(list_models())}")
    return _BUILDERS[name]


def default_args(name: str) -> dict[str, Any]:
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k != "num_classes"}


def resolve_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The builder's defaults overlaid with ``args`` (None keeps the default), type-checked.

    Studies store the resolved arguments, so a run's config says exactly what was built.
    """
    fn = _builder(name)
    hints = typing.get_type_hints(fn)
    defaults = default_args(name)
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        accepted = ", ".join(f"model.{k}" for k in ["name", *sorted(defaults)])
        raise ConfigError(f"unknown config key 'model.{unknown[0]}' for {name}; accepted: {accepted}")
    out = dict(defaults)
    for k, v in args.items():
        if v is not None:
            out[k] = check_value(f"model.{k}", v, hints.get(k, Any))
            _check_range(f"model.{k}", out[k])
    return out


def _check_range(key: str, value: Any) -> None:
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_range(f"{key}.{i}", item)
        return
    name = key.split(".")[1]
    if name in ARG_RANGES and isinstance(value, float):
        bounds, ok = ARG_RANGES[name]
        if not ok(value):
            raise ConfigError(f"{key} must be {bounds}, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value!r}")


def create_model(name: str, num_classes: int = 10, **args: Any) -> nn.Module:
    return _builder(name)(num_classes=num_classes, **resolve_args(name, args))
