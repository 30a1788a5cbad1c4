"""``ablate studies`` and ``ablate models``: what can be run, and with what."""

from __future__ import annotations

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
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
    # A study's name is what `ablate run` takes: never cut. The axes say which values (a
    # table-valued axis by its tables' names, or their count); --json has them whole.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, caption="grid: points x default seeds; --json: every value",
                  caption_justify="left")
    table.add_column("study", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=5))
    table.add_column("grid", no_wrap=True)
    table.add_column("claims", no_wrap=True, justify="right")
    table.add_column("figs", no_wrap=True)
    table.add_column("axes; description", ratio=1)
    for r in rows:
        axes = "; ".join(f"{k}: {_axis_summary(v)}" for k, v in r["axes"].items()) or "one point"
        table.add_row(r["name"], f"{r['points']} x {r['seeds']}", str(len(r["claims"])),
                      ", ".join(map(str, r["figures"])) or "-", f"{escape(axes)}\n[dim]{escape(r['description'])}[/]")
    Console().print(table)


def _axis_summary(values: list) -> str:
    """As ``axis_values`` lists them; tables by their ``name`` keys, else by how many."""
    if values and all(isinstance(v, dict) for v in values):
        names = [v.get("name") for v in values]
        if not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            return f"{len(values)} settings"
        values = names
    return axis_values(values)


def models(json_: JsonOption = False) -> None:
    """List the registered models with their parameter counts at CIFAR-10 defaults.

    Example: ablate models --json
    """
    from ablate.models import count_params, create_model, default_args, list_models

    rows = [
        {"name": n, "params": count_params(create_model(n, num_classes=10)), "defaults": default_args(n)}
        for n in list_models()
    ]
    if json_:
        return print_json(rows)
    table = Table("model", "parameters", "defaults")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", ", ".join(f"{k}={v}" for k, v in r["defaults"].items()))
    Console().print(table)
