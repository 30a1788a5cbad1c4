"""Studies: a base config, axes whose product is the grid, seeds, and the figures they feed.

A study is a TOML file, read as data and never executed::

    description = "Accuracy against the number of conv layers"
    figures = [4]
    seeds = 1

    [base]
    epochs = 20
    model = { name = "plain_cnn", kernel_size = 3 }

    [axes]
    "model.depth" = [1, 2, 3, 4, 5, 6, 7, 8]

Built-in studies ship in the package; files in ``./studies/`` (or any path) work too.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ablate import plugins
from ablate.claims import Claim
from ablate.claims import parse_all as parse_claims
from ablate.config import (
    ConfigError,
    RunConfig,
    config_hash,
    from_dict,
    get_key,
    merge,
    set_key,
    to_dict,
)
from ablate.loss import check_name as check_loss
from ablate.models import create_model, resolve_args
from ablate.models.registry import code_hash, is_builtin

LOCAL_DIR = Path("studies")
# The most runs (grid points x seeds) one expansion builds unless told otherwise (--max-points):
# a grid is held in memory whole, and each point's model is built once to check it.
MAX_POINTS = 10_000
_TOP_KEYS = {"name", "description", "figures", "seeds", "base", "axes", "reported", "claims", "plugins", "assumed"}
# The report's figures (ablate.figures registers them; studies do not import matplotlib).
# tests/test_figures.py checks the two agree.
FIGURE_NUMBERS = tuple(range(0, 13))


class StudyError(ConfigError):
    pass


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: dict[str, Any]  # nested config dict; missing keys take RunConfig defaults
    axes: dict[str, list[Any]]  # dotted config key -> values, in file order
    seeds: int
    figures: tuple[int, ...]
    path: Path | None = None
    reported: dict[str, Any] | None = None  # a recipe's result in the report: acc, epochs, layers, params, note
    claims: tuple[Claim, ...] = ()  # the report's claims this study's grid can check (ablate.claims)
    assumed: tuple[str, ...] = ()  # what the study takes that the report does not say
    plugins: tuple[str, ...] = ()  # files (absolute) and module paths that register its models

    @property
    def size(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n


@dataclass(frozen=True)
class GridPoint:
    config: RunConfig  # seed included
    config_hash: str  # seed excluded: (hash, seed) names a run
    axes: dict[str, Any]  # this point's value on each axis

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def label(self) -> str:
        return " ".join(f"{k.split('.', 1)[-1]}={_short(v)}" for k, v in self.axes.items()) or "base"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_short(v)}" for k, v in value.items()) + "}"
    return str(value)


# ------------------------------------------------------------------------- finding


def _builtin_files() -> dict[str, Path]:
    try:
        root = Path(str(importlib.resources.files("ablate.builtin_studies")))
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, not installed
        root = Path(__file__).resolve().parent.parent / "studies"
    return {p.stem: p for p in root.glob("*.toml")}


def _local_files() -> dict[str, Path]:
    if not LOCAL_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(LOCAL_DIR.glob("*.toml"))}


def study_files() -> dict[str, Path]:
    """Name -> file, built-in first, then ``./studies/`` (a local file of the same name wins)."""
    return dict(sorted({**_builtin_files(), **_local_files()}.items()))


def list_studies() -> list[Study]:
    return [load(path) for path in study_files().values()]


def load(name_or_path: str | Path) -> Study:
    """A study by name (built-in or ``./studies/NAME.toml``) or by the path of its file."""
    files = study_files()
    text = str(name_or_path)
    if text in files:
        return parse_file(files[text])
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise StudyError(f"study file '{path}' does not exist")
        return parse_file(path)
    raise StudyError(f"unknown study '{text}'; known studies: {', '.join(files)} (or give the path of a .toml file)")


def parse_file(path: Path) -> Study:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StudyError(f"cannot read study file '{path}': {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(
            f"study file '{path}' is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    return parse(text, path)


def parse(text: str, path: Path | None = None) -> Study:
    where = str(path) if path else "<study>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{where}: invalid TOML: {e}") from None
    try:
        return _from_doc(doc, path)
    except ConfigError as e:
        raise StudyError(_located(where, text, e)) from None


def _located(where: str, text: str, e: ConfigError) -> str:
    return f"{where}{_line_of(text, str(e))}: {e}"


def _from_doc(doc: dict[str, Any], path: Path | None) -> Study:
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown study key '{unknown[0]}'; accepted: {', '.join(sorted(_TOP_KEYS))}")
    axes = doc.get("axes", {})
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError("[axes] maps each dotted config key to a non-empty list of values")
    seeds = doc.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
    assumed = doc.get("assumed", [])
    if not isinstance(assumed, list) or not all(isinstance(a, str) and a.strip() for a in assumed):
        raise ConfigError(f"assumed must be a list of sentences, got {assumed!r}")
    figures = doc.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, int) for f in figures):
        raise ConfigError(f"figures must be a list of figure numbers, got {figures!r}")
    unknown_figures = [f for f in figures if f not in FIGURE_NUMBERS]
    if unknown_figures:
        raise ConfigError(
            f"figures: no figure {unknown_figures[0]}; the report's figures are "
            f"{', '.join(map(str, FIGURE_NUMBERS))} (a study without one gets a figure of its own)"
        )
    specs = doc.get("plugins", [])
    if not isinstance(specs, list) or not all(isinstance(p, str) and p for p in specs):
        raise ConfigError(f"plugins must be a list of files or module paths, got {specs!r}")
    for where, value in (("base", doc.get("base") or {}), ("axes", axes)):
        if isinstance(value, dict) and "code" in value:
            raise ConfigError(f"'code' in [{where}] is set by ablate from the model's source, not by a study")
    study = Study(
        name=str(doc.get("name") or (path.stem if path else "study")),
        description=str(doc.get("description", "")),
        base=doc.get("base", {}),
        axes=axes,
        seeds=seeds,
        figures=tuple(figures),
        path=path,
        reported=doc.get("reported"),
        claims=parse_claims(doc.get("claims"), axes),
        assumed=tuple(assumed),
        plugins=tuple(plugins.load(specs, path.resolve().parent if path else None)),
    )
    # The base is checked here; every grid point when the study is expanded (planned). Listing
    # studies loads every file, and a grid may be far too large to build (MAX_POINTS).
    _resolve(to_dict(from_dict(study.base)))
    return study


def _line_of(text: str, message: str) -> str:
    """`` (line N)`` for the first line naming the key an error message quotes (or starts
    with: "optimizer.lr must be ..."), the whole dotted key (an axis) before its last part."""
    m = re.search(r"'([\w.]+)'", message) or re.match(r"([\w.]+) must\b", message)
    if not m:
        return ""
    key = m.group(1)
    for pattern in (rf"['\"]{re.escape(key)}['\"]", rf"\b{re.escape(key.split('.')[-1])}\b"):
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(pattern, line):
                return f" (line {i})"
    return ""


# ------------------------------------------------------------------------ the grid


def expand(
    study: Study,
    overrides: Iterable[tuple[str, Any]] = (),
    seeds: int | None = None,
    max_points: int = MAX_POINTS,
) -> list[GridPoint]:
    """Every (axis values, seed) point of ``study``, validated, with ``--set`` overrides applied.

    Overrides apply to the base; a key that is an axis is refused rather than silently
    collapsing the grid. A grid of more than ``max_points`` runs (grid points x seeds) is
    refused before any point is built.
    """
    overrides = list(overrides)
    n_seeds = seeds if seeds is not None else study.seeds
    total = study.size * n_seeds
    if total > max_points:
        raise ConfigError(
            f"study '{study.name}' has {study.size:,} grid point(s) x {n_seeds:,} seed(s) = "
            f"{total:,} runs, more than the limit of {max_points:,}; --max-points N raises it"
        )
    base = to_dict(from_dict(study.base))  # defaults filled in, base validated
    study_epochs = base["epochs"]
    tables = [a for a, values in study.axes.items() if any(isinstance(v, dict) for v in values)]
    for key, value in overrides:
        if key == "code":
            raise ConfigError("'code' is set by ablate from the model's source; edit the model's file instead")
        if key in study.axes:
            raise ConfigError(f"'{key}' is an axis of study '{study.name}'; edit its values in the study file")
        under = next((a for a in tables if key.startswith(a + ".")), None)
        if under:  # some of the axis's tables would take it and others not: set it in each table
            raise ConfigError(
                f"'{key}' lies under the axis '{under}' of study '{study.name}', whose values are "
                "whole tables; set it in those tables in the study file (or a copy of it)"
            )
        base = _set_checked(base, key, value)
    if "epochs" in dict(overrides) and "switch.at_epoch" not in dict(overrides):
        base = _shorten_switch(base, study_epochs, study.name)
    if overrides:
        _resolve(base)  # an override's value is the command line's fault, not the file's: no file and line
    keys = list(study.axes)
    points = []
    for values in itertools.product(*study.axes.values()):
        d = base
        try:
            for key, value in zip(keys, values):
                d = _set_checked(d, key, value)
            cfg = _resolve(d)
        except ConfigError as e:  # a value in the file, or a combination of values: say where
            if study.path is None or not study.path.is_file():
                raise
            raise StudyError(_located(str(study.path), study.path.read_text(errors="replace"), e)) from None
        digest = config_hash(cfg)
        for seed in range(n_seeds):
            points.append(GridPoint(dataclasses.replace(cfg, seed=seed), digest, dict(zip(keys, values))))
    return points


def _shorten_switch(base: dict[str, Any], study_epochs: int, study: str) -> dict[str, Any]:
    """A recipe that switches optimizer at epoch A of E, run for N epochs, switches at the
    same fraction of N: ``--epochs`` shortens the recipe, both phases included."""
    at, epochs = base["switch"]["at_epoch"], base["epochs"]
    if not at or epochs == study_epochs:
        return base
    if epochs < 2:
        raise ConfigError(
            f"study '{study}' switches optimizer after epoch {at} of {study_epochs}: "
            f"--epochs {epochs} leaves no room for both phases; give 2 or more, "
            "or --set switch.at_epoch=0 for the first phase alone"
        )
    return _set_checked(base, "switch.at_epoch", min(max(round(at * epochs / study_epochs), 1), epochs - 1))


def _set_checked(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set a dotted key. A table value (an axis of whole optimizers, say) is merged into the
    table there, unless it names a different ``name``: a different model or optimizer
    starts from its own defaults rather than inheriting arguments meant for another."""
    head = key.split(".")[0]
    if head not in d:
        raise ConfigError(f"unknown config key '{key}'; top-level keys: {', '.join(sorted(d))}")
    current = None
    if head != "model" or isinstance(value, dict):
        try:
            current = get_key(d, key)
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"unknown config key '{key}'") from None
    if isinstance(value, dict) and isinstance(current, dict):
        renamed = "name" in value and value["name"] != current.get("name")
        value = dict(value) if renamed else merge(current, value)
    return set_key(d, key, value)


def _resolve(d: dict[str, Any]) -> RunConfig:
    """Validate the dict, fill in the model's own defaults, and build it once on the meta
    device so a bad combination of arguments fails here rather than inside a worker."""
    cfg = from_dict(d)
    check_loss(cfg.loss.name)
    args = resolve_args(cfg.model.name, cfg.model.args)
    code = "" if is_builtin(cfg.model.name) else code_hash(cfg.model.name)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, args=args), code=code)
    try:
        with torch.device("meta"):
            create_model(cfg.model.name, **args)
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError) as e:  # a combination the ranges let through
        if isinstance(e, ConfigError):
            raise
        text = str(e).strip().splitlines()
        raise ConfigError(
            f"model '{cfg.model.name}' cannot be built with {args}: {text[0] if text else type(e).__name__}"
        ) from None
    return cfg
