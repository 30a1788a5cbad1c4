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
    return out


def create_model(name: str, num_classes: int = 10, **args: Any) -> nn.Module:
    return _builder(name)(num_classes=num_classes, **resolve_args(name, args))
