"""The name -> builder table, after timm's ``register_model``.

The built-in models register themselves when ``ablate.models`` is imported; a user's models
come from plugins (``ablate.plugins``): a file, a module path, or the entry-point group
``ablate.models`` of an installed package.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ablate.config import ConfigError, check_value

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_RANGES: dict[str, dict[str, "Range"]] = {}  # model -> argument -> range declared with it
_ORIGINS: dict[str, str] = {}  # model -> where it came from, when it is not ablate's own
# What the data decide, never the config: passed by the trainer, left out of the defaults.
DATA_ARGS = ("num_classes", "in_channels")


class UnknownModel(ConfigError):
    pass


@dataclass(frozen=True)
class Range:
    """A number's bounds for a plugin model's argument, inclusive; None leaves that side open.

    Declared as ``typing.Annotated[int, Range(0, None)]`` or in ``register_model(ranges=...)``.
    """

    lo: float | None = None
    hi: float | None = None

    def check(self, key: str, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(f"{key}.{i}", item)
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            bounds = (
                f">= {self.lo}"
                if self.hi is None
                else f"<= {self.hi}"
                if self.lo is None
                else f"in [{self.lo}, {self.hi}]"
            )
            raise ConfigError(f"{key} must be {bounds}, got {value!r}")


# The built-in models' arguments that are fractions or scales, by name, with the range they
# must lie in. Every other integer argument of theirs (or list item) counts layers, channels,
# blocks or pixels, and must be at least 1: a width of 0 builds a net that fails in its first
# step. A plugin model's arguments get only the ranges its author declares.
ARG_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "dropout": ("in [0, 1)", lambda v: 0 <= v < 1),
    "compression": ("in (0, 1]", lambda v: 0 < v <= 1),
    "bn_momentum": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "bias_lr_scale": (">0", lambda v: v > 0),
    "logit_scale": (">0", lambda v: v > 0),
    "whiten_eps": (">0", lambda v: v > 0),
    "head_std": (">0", lambda v: v > 0),
}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    ranges: dict[str, tuple[float | None, float | None]] | None = None,
):
    """Register ``fn`` under its own name (or ``name``); its keyword defaults are the model's
    defaults. ``ranges`` maps an argument to its (lowest, highest), None for an open side.

    Used bare (``@register_model``) or with options (``@register_model(ranges={...})``)."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        _BUILDERS[key] = fn
        declared = {k: Range(*v) for k, v in (ranges or {}).items()}
        for arg, hint in typing.get_type_hints(fn, include_extras=True).items():
            for meta in getattr(hint, "__metadata__", ()):
                if isinstance(meta, Range):
                    declared.setdefault(arg, meta)
        _RANGES[key] = declared
        if not fn.__module__.startswith("ablate.models."):
            _ORIGINS[key] = _origin(fn)
        else:
            _ORIGINS.pop(key, None)
        return fn

    return add(fn) if fn is not None else add


def _origin(fn: Callable) -> str:
    module = sys.modules.get(fn.__module__)
    path = getattr(module, "__file__", None)
    return str(Path(path).resolve()) if path else fn.__module__


def is_builtin(name: str) -> bool:
    return name in _BUILDERS and name not in _ORIGINS


def origin(name: str) -> str:
    """``built-in``, or where a plugin model came from (its file, or its package and version)."""
    _builder(name)
    return _ORIGINS.get(name, "built-in")


def set_origin(name: str, text: str) -> None:
    """Name a model's origin after the fact (an entry point names its package's version)."""
    _ORIGINS[name] = text


def code_hash(name: str) -> str:
    """16 hex digits naming the code that builds ``name``: its module's source, or for a
    model of an installed package, the package's name and version (``pkg==1.2``)."""
    fn = _builder(name)
    where = _ORIGINS.get(name)
    if where and "==" in where and not Path(where).exists():
        return where
    module = sys.modules.get(fn.__module__)
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def code_version(name: str) -> str:
    """What a run records as the code that trained it: ``ablate 0.1.0 plain_cnn.py:HASH`` for a
    built-in model, ``mynet.py:HASH`` for a plugin file, ``pkg==1.2`` for an installed package."""
    digest = code_hash(name)
    if "==" in digest:
        return digest
    module = sys.modules.get(_builder(name).__module__)
    file = Path(getattr(module, "__file__", None) or name).name
    if is_builtin(name):
        import ablate

        return f"ablate {ablate.__version__} {file}:{digest}"
    return f"{file}:{digest}"


def list_models() -> list[str]:
    from ablate import plugins

    plugins.load_environment()
    return sorted(_BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _BUILDERS:
        from ablate import plugins

        plugins.load_environment()  # a worker process: the runner's plugins, by the environment
    if name not in _BUILDERS:
        raise UnknownModel(
            f"unknown model '{name}'; registered: {', '.join(sorted(_BUILDERS))}. "
            "Your own model: register it with ablate.models.register_model in a file "
            'and name that file in the study\'s plugins = ["FILE"] (or ablate run --plugin FILE)'
        )
    return _BUILDERS[name]


def default_args(name: str) -> dict[str, Any]:
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in DATA_ARGS}


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
            if is_builtin(name):
                _check_range(f"model.{k}", out[k])
            elif k in _RANGES.get(name, {}):
                _RANGES[name][k].check(f"model.{k}", out[k])
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


def takes_in_channels(name: str) -> bool:
    return "in_channels" in inspect.signature(_builder(name)).parameters


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **args: Any) -> nn.Module:
    """The model ``name`` with ``args``; ``in_channels`` reaches only a builder that takes it
    (the built-in models take three)."""
    extra = {"in_channels": in_channels} if takes_in_channels(name) else {}
    return _builder(name)(num_classes=num_classes, **extra, **resolve_args(name, args))
