"""``ablate studies`` and ``ablate models``: what can be run, and with what."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ablate.cli.common import JsonOption, axis_values, print_json


def studies(json_: JsonOption = False) -> None:
    """List the studies: their axes and values, grid points, default seeds, figures and the report's claims they check.

    Example: ablate studies --json
    """
    from ablate.studies import StudyError, load, study_files  # imports torch: only when asked

    found, broken = [], []
    for name in study_files():
        try:
            found.append(load(name))
        except StudyError as e:  # one bad file in ./studies/ hides no other study
            broken.append({"name": name, "error": str(e)})
    rows = [
        {"name": s.name, "description": s.description, "axes": s.axes, "points": s.size,
         "seeds": s.seeds, "figures": list(s.figures), "claims": [c.to_dict() for c in s.claims], "path": str(s.path)}
        for s in found
    ]
    for b in broken:
        typer.echo(f"warning: study '{b['name']}' is left out: {b['error']}", err=True)
    if json_:
        return print_json(rows)
    table = Table("study", "axes", "points", "seeds", "figures", "claims", "description")
    for r in rows:
        axes = "\n".join(f"{k} = {axis_values(v)}" for k, v in r["axes"].items()) or "-"
        table.add_row(r["name"], axes, str(r["points"]), str(r["seeds"]),
                      ", ".join(map(str, r["figures"])) or "-", str(len(r["claims"])) or "-", r["description"])
    Console().print(table)


PluginOption = Annotated[Optional[list[str]], typer.Option(
    "--plugin", metavar="FILE", help="A Python file (or module path) that registers models; repeatable.")]


def models(json_: JsonOption = False, plugin: PluginOption = None) -> None:
    """List the registered models (the built-in ones, the installed packages' and those of --plugin files)
    with their parameter counts at CIFAR-10 defaults and where each came from.

    Example: ablate models --plugin models/mynet.py
    """
    from ablate.cli.common import user_errors
    from ablate.models import model_catalog

    with user_errors():
        rows = model_catalog(plugin or [])
    if json_:
        return print_json(rows)
    table = Table("model", "parameters", "from", "defaults")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", r["origin"],
                      ", ".join(f"{k}={v}" for k, v in r["defaults"].items()))
    Console().print(table)
