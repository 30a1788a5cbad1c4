"""The user's own code: files and modules that register models (and losses, metrics).

A study names its plugins (``plugins = ["models/mynet.py", "mypkg.models"]``, files relative
to the study file), ``ablate run --plugin`` adds one for a call, and an installed package
registers through the entry-point group ``ablate.models``. What was loaded is kept in
``ABLATE_PLUGINS`` so that worker processes (spawned, or Ray's) load the same code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from ablate.config import ConfigError

ENV = "ABLATE_PLUGINS"
GROUP = "ablate.models"
_loaded: dict[str, str] = {}  # spec -> the module name it was imported as
_entry_points_done = False


class PluginError(ConfigError):
    pass


def resolve(spec: str, base: Path | None = None) -> str:
    """A file's absolute path (relative to ``base``, the study file's folder), or a module path."""
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise PluginError(f"plugin file '{spec}' does not exist" + (f" (looked in {base})" if base else ""))
        return str(path.resolve())
    return spec


def load(specs: list[str] | tuple[str, ...], base: Path | None = None) -> list[str]:
    """Import each plugin once; returns the resolved specs, now also in ``ABLATE_PLUGINS``."""
    resolved = [resolve(s, base) for s in specs]
    for spec in resolved:
        _import(spec)
    _export()
    return resolved


def _import(spec: str) -> None:
    if spec in _loaded:
        return
    try:
        if spec.endswith(".py") and os.path.isabs(spec):
            # Named for its content's path, so two files called models.py do not collide.
            name = "ablate_plugin_" + hashlib.sha256(spec.encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(name, spec)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            name = spec
            importlib.import_module(spec)
    except ConfigError:
        raise
    except ModuleNotFoundError as e:
        raise PluginError(f"plugin '{spec}' cannot be imported: {e}") from None
    except Exception as e:  # the user's code: say which file failed, and how, in one line
        raise PluginError(f"plugin '{spec}' failed to load: {type(e).__name__}: {e}") from None
    _loaded[spec] = name


def _export() -> None:
    os.environ[ENV] = os.pathsep.join(_loaded)


def loaded() -> list[str]:
    return list(_loaded)


def ship() -> tuple[tuple[str, str | None, bytes | None], ...]:
    """The loaded plugins as a worker on another machine needs them: (spec, file name,
    source) for a file, (spec, None, None) for a module path (installed there too)."""
    out = []
    for spec in _loaded:
        if spec.endswith(".py") and os.path.isabs(spec):
            out.append((spec, Path(spec).name, Path(spec).read_bytes()))
        else:
            out.append((spec, None, None))
    return tuple(out)


def receive(shipped) -> None:
    """Load what ``ship`` sent: a file from its own path where that holds the same source,
    else from a copy written under the temporary folder, named for its content (the model's
    code hash is of the content, so it is the same code either way)."""
    for spec, name, source in shipped:
        if source is None:
            _import(spec)
            continue
        if Path(spec).is_file() and Path(spec).read_bytes() == source:
            _import(spec)
            continue
        folder = Path(tempfile.gettempdir()) / "ablate-plugins" / hashlib.sha256(source).hexdigest()[:16]
        copy = folder / name
        if not copy.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(f"{name}.{os.getpid()}.tmp")
            tmp.write_bytes(source)
            os.replace(tmp, copy)
        _import(str(copy))
    _export()


def load_environment() -> None:
    """The plugins named in ``ABLATE_PLUGINS`` and the installed entry points, once each."""
    global _entry_points_done
    for spec in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        _import(spec)
    if not _entry_points_done:
        _entry_points_done = True
        load_entry_points()


def load_entry_points() -> None:
    """Every ``ablate.models`` entry point: a module that registers models, or a function to
    call. Its models are identified by the package's name and version."""
    from ablate.models.registry import _BUILDERS, set_origin

    for ep in importlib.metadata.entry_points(group=GROUP):
        before = set(_BUILDERS)
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type(sys)):
                obj()
        except Exception as e:
            raise PluginError(
                f"entry point '{ep.name}' ({ep.value}) of group {GROUP} failed to load: {type(e).__name__}: {e}"
            ) from None
        dist = getattr(ep, "dist", None)
        version = f"{dist.name}=={dist.version}" if dist is not None else f"{ep.value}=={ep.name}"
        for name in set(_BUILDERS) - before:
            set_origin(name, version)
