"""One typed run configuration: the only thing the model, the data and the trainer share.

A config lives in two shapes: nested dataclasses for the code, and a plain nested dict
(JSON-able) for study files, ``--set`` overrides and the database. ``from_dict`` is the one
gate between them and refuses unknown keys, wrong types and out-of-range values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config key or value that cannot be accepted; the message names it."""


@dataclass(frozen=True)
class ModelCfg:
    name: str = "plain_cnn"
    # The builder's keyword arguments; studies resolve them to the builder's defaults so
    # the stored config says exactly what was built.
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AugCfg:
    crop_padding: int = 0  # random translation by up to this many pixels; 0 is off
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of the zeroed square; 0 is off
    jitter: float = 0.0  # brightness/contrast/saturation jitter strength; 0 is off
    rotate: float = 0.0  # largest rotation in degrees; 0 is off
    # random: a fair coin per image and batch. alternate: a coin per image in the first epoch,
    # then each image flipped in every other epoch (Jordan 2024): every image is seen both
    # ways in any two epochs in a row, which random flipping leaves to chance.
    flip_mode: str = "random"
    pad_mode: str = "zeros"  # what the crop's translation brings in at the border: zeros | reflect


@dataclass(frozen=True)
class DataCfg:
    # cifar10 | cifar100 | svhn | mnist | fashion_mnist | folders | synthetic; where a set
    # lives (--data) is not config: its fingerprint is the run's.
    dataset: str = "cifar10"
    aug: AugCfg = field(default_factory=AugCfg)
    # device: the data set on the training device, whole batches augmented there.
    # pil: a DataLoader with per-sample PIL transforms, the usual way; kept to measure against.
    pipeline: str = "device"
    image_size: int | None = None  # resize every image to this square size once, at load; None: as stored


@dataclass(frozen=True)
class MuonCfg:
    """optimizer.name = "muon": Muon on the conv filters (4-D weights), SGD on the rest.

    A filter bank's update is its Nesterov momentum flattened to [filters, fan-in] and
    orthogonalised by ``ns_steps`` Newton-Schulz iterations in bf16; the defaults are
    airbench94_muon's. The linear weights take SGD with the optimizer's own lr, momentum,
    nesterov and weight_decay; 1-D parameters (biases, norm scales) the same but for
    ``bias_lr`` and ``bias_weight_decay``.
    """

    lr: float = 0.24  # the filters'
    momentum: float = 0.6  # the filters'
    nesterov: bool = True  # the filters'
    ns_steps: int = 3  # Newton-Schulz iterations; 3 leaves the singular values in about [0.5, 1.5]
    ns_dtype: str = "bfloat16"  # the iterations' dtype: bfloat16 (the record's) | float32 (for fp32 parity)
    # Rescale each filter bank to a norm of sqrt(filters) (mean filter norm 1) before each step:
    # the weights' scale stays fixed, so lr alone sets the step's relative size.
    renormalize: bool = True
    weight_decay: float = 0.0  # the filters', decoupled; renormalize would undo it
    bias_lr: float | None = None  # None: optimizer.lr
    bias_weight_decay: float | None = None  # None: optimizer.weight_decay (0 with decay_weights_only)


@dataclass(frozen=True)
class OptimCfg:
    name: str = "sgd"  # sgd | adam | adamw | adadelta | ranger | ranger21 | muon
    lr: float = 0.05
    momentum: float = 0.9  # sgd, and muon for all but the filters
    nesterov: bool = False  # sgd, and muon for all but the filters
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw, ranger, ranger21
    # Leave biases and batch-norm parameters out of weight decay (the report's "MyAdaDelta").
    decay_weights_only: bool = False
    muon: MuonCfg = field(default_factory=MuonCfg)  # muon only


@dataclass(frozen=True)
class ScheduleCfg:
    name: str = "cosine"  # constant | step | cosine | onecycle | onecycle3 | linear
    warmup_epochs: float = 0.0  # linear warmup before constant, step and cosine
    step_every: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: decay factor
    peak_at: float = 0.25  # onecycle, onecycle3: fraction of training at the peak learning rate
    final_frac: float = 0.0  # cosine, onecycle, onecycle3, linear: final lr as a fraction of the peak
    # onecycle3: the level it starts from and comes back to, as a fraction of the peak
    # (torch's OneCycleLR starts at 1/div_factor = 1/25).
    start_frac: float = 0.04


@dataclass(frozen=True)
class SwitchCfg:
    """A second phase with its own optimizer and schedule: the report's "mixed optimizer"
    (Adam with warmup and cosine, then SGD with cosine). ``at_epoch`` 0 is no switch."""

    at_epoch: int = 0  # the last epoch of the first phase
    optimizer: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)


@dataclass(frozen=True)
class LossCfg:
    label_smoothing: float = 0.0
    # pytorch: the true class gets 1 - eps + eps/C, every other eps/C (CrossEntropyLoss).
    # report: the report's Eq. 1, the true class 1 - eps, every other eps/(C - 1).
    smoothing_form: str = "pytorch"
    name: str = "cross_entropy"  # cross_entropy | focal | a plugin's (ablate.loss.register_loss)
    focal_gamma: float = 2.0  # focal: the exponent of (1 - p_true) weighing each image's loss


@dataclass(frozen=True)
class EvalCfg:
    # Views whose logits are averaged at test time: none | flip | flip_translate (the flip
    # pair, and at half weight that pair shifted by one pixel up-left and down-right).
    tta: str = "none"
    every: int = 1  # epochs between evaluations; the last epoch is always evaluated


@dataclass(frozen=True)
class AverageCfg:
    """An exponential moving average of the weights (and BN statistics), off by default.

    lookahead: every ``every`` steps the average moves towards the weights and the weights
    jump back to it, ending on the average (airbench94's variant of Lookahead).
    ema: the weights train undisturbed; evaluation uses the average.
    """

    name: str = "none"  # none | lookahead | ema
    every: int = 5  # steps between updates
    decay: float = 0.95  # per step: an update keeps decay**every of the average
    # The decay is scaled by (step / total steps) ** ramp_power, so the early, fast-moving
    # weights are barely averaged; 0 keeps it constant.
    ramp_power: float = 3.0


@dataclass(frozen=True)
class ProbeCfg:
    """Opt-in measurements of training itself; off by default, and free when off."""

    grad_norm_every: int = 0  # steps between relative gradient norms of every conv layer
    landscape_every: int = 0  # steps between losses along the gradient (Santurkar et al.)
    landscape_steps: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # multiples of the current lr
    kernels: bool = False  # keep the first conv layer's weights at the end


@dataclass(frozen=True)
class RunConfig:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optimizer: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    switch: SwitchCfg = field(default_factory=SwitchCfg)
    loss: LossCfg = field(default_factory=LossCfg)
    probes: ProbeCfg = field(default_factory=ProbeCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    averaging: AverageCfg = field(default_factory=AverageCfg)
    epochs: int = 20
    train_subset: int | None = None  # train on this many images of a fixed shuffle; None: all
    batch_size: int = 128
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    # The source hash of a plugin model's code (ablate.models.registry.code_hash), set by
    # ablate, never by a study: an edited model file is another config. '' for ablate's own
    # models, whose code is identified by ablate's version in the run's row instead.
    code: str = ""


OPTIMIZERS = ("sgd", "adam", "adamw", "adadelta", "ranger", "ranger21", "muon")
# linear: 1 -> final_frac in a straight line over the run (airbench94_muon's, to 0).
SCHEDULES = ("constant", "step", "cosine", "onecycle", "onecycle3", "linear")
CHOICES = {
    "data.dataset": ("cifar10", "cifar100", "svhn", "mnist", "fashion_mnist", "folders", "synthetic"),
    "data.pipeline": ("device", "pil"),
    "data.aug.flip_mode": ("random", "alternate"),
    "data.aug.pad_mode": ("zeros", "reflect"),
    "eval.tta": ("none", "flip", "flip_translate"),
    "averaging.name": ("none", "lookahead", "ema"),
    "optimizer.name": OPTIMIZERS,
    "schedule.name": SCHEDULES,
    "switch.optimizer.name": OPTIMIZERS,
    "switch.schedule.name": SCHEDULES,
    "precision": ("auto", "fp32", "bf16"),
    "loss.smoothing_form": ("pytorch", "report"),
    "optimizer.muon.ns_dtype": ("bfloat16", "float32"),
    "switch.optimizer.muon.ns_dtype": ("bfloat16", "float32"),
}
# Classes per data set, for the checks that need them before the data are loaded.
# Image folders have as many as they have folders: checked when they are read.
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "mnist": 10, "fashion_mnist": 10, "synthetic": 10}

# (lowest, highest, highest included?) for numbers that have a sensible range.
RANGES = {
    "epochs": (1, None),
    "batch_size": (1, None),
    "seed": (0, None),
    "train_subset": (1, None),
    "data.aug.crop_padding": (0, 16),
    "data.aug.cutout": (0, 32),
    "data.aug.jitter": (0.0, 1.0),
    "data.aug.rotate": (0.0, 180.0),
    "data.image_size": (1, None),
    "optimizer.lr": (0.0, None),
    "optimizer.momentum": (0.0, 1.0),
    "optimizer.weight_decay": (0.0, None),
    "optimizer.muon.lr": (0.0, None),
    "optimizer.muon.momentum": (0.0, 1.0),
    "optimizer.muon.ns_steps": (1, 20),
    "optimizer.muon.weight_decay": (0.0, None),
    "optimizer.muon.bias_lr": (0.0, None),
    "optimizer.muon.bias_weight_decay": (0.0, None),
    "schedule.warmup_epochs": (0.0, None),
    "schedule.step_every": (1, None),
    "schedule.gamma": (0.0, 1.0),
    "schedule.peak_at": (0.0, 1.0),
    "schedule.final_frac": (0.0, 1.0),
    "schedule.start_frac": (0.0, 1.0),
    "loss.label_smoothing": (0.0, 1.0),
    "loss.focal_gamma": (0.0, None),
    "switch.at_epoch": (0, None),
    "probes.grad_norm_every": (0, None),
    "probes.landscape_every": (0, None),
    "eval.every": (1, None),
    "averaging.every": (1, None),
    "averaging.decay": (0.0, 1.0),
    "averaging.ramp_power": (0.0, None),
}
# The second phase's optimizer and schedule obey the first's ranges.
RANGES.update({f"switch.{k}": v for k, v in list(RANGES.items()) if k.startswith(("optimizer.", "schedule."))})
# Zero is as wrong as negative here.
_POSITIVE = {f"{p}optimizer.{k}" for p in ("", "switch.") for k in ("lr", "muon.lr", "muon.bias_lr")}


# ---------------------------------------------------------------------------- dicts


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested, JSON-able form; model args sit beside the model's name."""
    d = dataclasses.asdict(cfg)
    model = d.pop("model")
    d["model"] = {"name": model["name"], **model["args"]}
    return json.loads(json.dumps(d))  # tuples become lists, as they would in JSON


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Build and validate a config from its nested dict form (missing keys take defaults)."""
    d = dict(d)
    model = dict(d.pop("model", {}) or {})
    name = model.pop("name", ModelCfg.name)
    if not isinstance(name, str):
        raise ConfigError(f"model.name must be a string, got {name!r}")
    cfg = _build(RunConfig, d, "")
    if cfg.switch.at_epoch >= cfg.epochs:
        raise ConfigError(f"switch.at_epoch must be below epochs ({cfg.epochs}), got {cfg.switch.at_epoch}")
    for prefix, schedule in (("schedule", cfg.schedule), ("switch.schedule", cfg.switch.schedule)):
        if schedule.name == "onecycle3" and not 2 * schedule.peak_at < 1:
            raise ConfigError(
                f'{prefix}.peak_at must be below 0.5 for {prefix}.name = "onecycle3" '
                f"(its rise and fall take 2 x peak_at of training), got {schedule.peak_at}"
            )
    for prefix, optim in (("optimizer", cfg.optimizer), ("switch.optimizer", cfg.switch.optimizer)):
        if optim.name == "muon" and optim.muon.renormalize and optim.muon.weight_decay:
            raise ConfigError(
                f"{prefix}.muon.weight_decay does nothing with {prefix}.muon.renormalize = true "
                f"(the rescale undoes it): set one of them off, got {optim.muon.weight_decay}"
            )
    if cfg.data.dataset in DATASET_CLASSES:
        check_smoothing(cfg.loss, DATASET_CLASSES[cfg.data.dataset])
    aug = cfg.data.aug
    if cfg.data.pipeline == "pil" and (aug.flip_mode != "random" or aug.pad_mode != "zeros"):
        raise ConfigError(
            'data.aug.flip_mode and data.aug.pad_mode other than random and zeros need data.pipeline = "device"'
        )
    return dataclasses.replace(cfg, model=ModelCfg(name=name, args=model))


def check_smoothing(loss: LossCfg, num_classes: int) -> None:
    """Eq. 1 gives every wrong class eps/(C-1), which passes the true class's 1 - eps above
    (C-1)/C: refuse that rather than train on targets that favour a wrong class."""
    if loss.smoothing_form == "report" and loss.label_smoothing > (num_classes - 1) / num_classes:
        raise ConfigError(
            f"loss.label_smoothing must be <= (C-1)/C = {(num_classes - 1) / num_classes:.4g} "
            f'for loss.smoothing_form = "report" with C = {num_classes} classes, '
            f"got {loss.label_smoothing}"
        )


def _build(cls, d: dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table of keys, got {d!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "model"}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; accepted here: {', '.join(prefix + f for f in sorted(fields))}"
        )
    kwargs = {}
    for key, value in d.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = check_value(f"{prefix}{key}", value, hint)
    return cls(**kwargs)


def check_value(key: str, value: Any, hint: Any) -> Any:
    """Coerce ``value`` to ``hint`` where that loses nothing, check choices and ranges."""
    value = coerce(key, value, hint)
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in RANGES and value is not None:
        lo, hi = RANGES[key]
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (key in _POSITIVE and value <= 0):
            bounds = f">{lo}" if key in _POSITIVE else f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise ConfigError(f"{key} must be {bounds}, got {value!r}")
    return value


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Accept ``value`` as type ``hint``: ints for floats, lists for tuples, None for Optional."""
    if hint is Any or hint is typing.Any or hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(key, value, option)
            except ConfigError:
                pass  # the next option may take it; the message names them all
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
            return tuple(coerce(f"{key}.{i}", v, a) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(f"{key}.{i}", v, item) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # NaN passes every range check (each comparison is false), and JSON has no NaN.
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(hint) if a is not type(None)]
        opt = " or none" if type(None) in typing.get_args(hint) else ""
        return " or ".join(names) + opt
    if typing.get_origin(hint) in (tuple, list):
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


# ------------------------------------------------------------------------ overrides


def parse_value(text: str) -> Any:
    """Read an override's value as TOML (``0.05``, ``true``, ``[3, 5]``), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"optimizer.lr=0.05"`` -> ``("optimizer.lr", 0.05)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes KEY=VALUE (e.g. optimizer.lr=0.05), got {text!r}")
    return key.strip(), parse_value(value.strip())


def set_key(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of nested dict ``d`` with dotted ``key`` set; an integer part indexes a list."""
    d = json.loads(json.dumps(d))
    parts = key.split(".")
    node: Any = d
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:i])
                raise ConfigError(f"{where} has {len(node)} items; '{key}' is out of range")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"unknown config key '{key}': {'.'.join(parts[:i])} is a value, not a table")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
    return d


def get_key(d: dict[str, Any], key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"kernel_size": [3, 5]}}`` -> ``{"model.kernel_size.0": 3, ...}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out.update(flatten({str(i): x for i, x in enumerate(v)}, key + "."))
        else:
            out[key] = v
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; values in ``update`` win."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------- identity


# Keys added after runs were first recorded. At their defaults they stay out of the hash, so
# every config that could be written before them keeps its identity, and its recorded runs.
# A key added from now on goes here too.
LATER_KEYS = (
    "data.aug.flip_mode",
    "data.aug.pad_mode",
    "eval",
    "averaging",
    "schedule.start_frac",
    "switch.schedule.start_frac",
    "loss.smoothing_form",
    "code",
    "data.image_size",
    "loss.name",
    "loss.focal_gamma",
    "optimizer.muon",
    "switch.optimizer.muon",
    # Inside a muon table that is not at its defaults (the one above then stays in).
    "optimizer.muon.ns_dtype",
    "switch.optimizer.muon.ns_dtype",
)


# Model arguments added after runs were first recorded, with the value that builds what was
# built before them. Studies store every argument resolved, so a new one would otherwise
# change the hash of every config of that model; at this value it stays out.
LATER_MODEL_ARGS = {
    "resnet12": {"downsample": "maxpool"},
    "speednet": {"head_std": None, "whiten_bias_steps": None},
}


def config_hash(cfg: RunConfig) -> str:
    """Identity of what changes the result, seed excluded: the seed is its own axis.

    Devices, worker counts and data paths never enter a RunConfig, so they cannot enter it.
    """
    d = to_dict(cfg)
    d.pop("seed")
    defaults = to_dict(RunConfig())
    for key in LATER_KEYS:
        *parents, leaf = key.split(".")
        node, default = d, defaults
        for part in parents:
            node, default = node.get(part, {}), default[part]
        if leaf in node and node[leaf] == default[leaf]:
            del node[leaf]
    model = d["model"]
    for arg, before in LATER_MODEL_ARGS.get(model["name"], {}).items():
        if arg in model and model[arg] == before:
            del model[arg]
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def study_grid(spec: dict[str, Any]) -> str:
    """What of a stored study spec decides its runs: the base and the axes. A description,
    claims, figures or default seeds may change without making it another study; two specs
    of one name with different grids are two studies (``ablate run`` and ``ablate merge``
    refuse to mix them)."""
    return json.dumps({"base": spec.get("base") or {}, "axes": spec.get("axes") or {}}, sort_keys=True)
