"""``ablate studies`` and ``ablate models``: what can be run, and with what."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ablate.cli.common import JsonOption, axis_values, print_json, user_errors


def studies(
    name: Annotated[
        str | None, typer.Argument(help="One study, shown whole: its claims, checks and what it assumes.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """List the studies: their axes and values, grid points, default seeds, figures and the report's claims they check.

    Example: ablate studies --json; ablate studies depth
    """
    from ablate.studies import StudyError, load, study_files  # imports torch: only when asked

    if name is not None:
        with user_errors():
            return show_study(load(name), json_)
    found, broken = [], []
    for name in study_files():
        try:
            found.append(load(name))
        except StudyError as e:  # one bad file in ./studies/ hides no other study
            broken.append({"name": name, "error": str(e)})
    rows = [
        {
            "name": s.name,
            "description": s.description,
            "axes": s.axes,
            "points": s.size,
            "seeds": s.seeds,
            "figures": list(s.figures),
            "claims": [c.to_dict() for c in s.claims],
            "assumed": list(s.assumed),
            "path": str(s.path),
        }
        for s in found
    ]
    for b in broken:
        typer.echo(f"warning: study '{b['name']}' is left out: {b['error']}", err=True)
    if json_:
        return print_json(rows)
    # A study's name is what `ablate run` takes: never cut. The axes say which values (a
    # table-valued axis by its tables' names, or their count); --json has them whole.
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="grid: points x default seeds; --json: every value",
        caption_justify="left",
    )
    table.add_column("study", no_wrap=True, min_width=max((len(r["name"]) for r in rows), default=5))
    table.add_column("grid", no_wrap=True)
    table.add_column("claims", no_wrap=True, justify="right")
    table.add_column("figs", no_wrap=True)
    table.add_column("axes; description", ratio=1)
    for r in rows:
        axes = "; ".join(f"{k}: {_axis_summary(v)}" for k, v in r["axes"].items()) or "one point"
        table.add_row(
            r["name"],
            f"{r['points']} x {r['seeds']}",
            str(len(r["claims"])),
            ", ".join(map(str, r["figures"])) or "-",
            f"{escape(axes)}\n[dim]{escape(r['description'])}[/]",
        )
    Console().print(table)


def show_study(study, json_: bool) -> None:
    """One study: what it is, its grid, the report's claims with their checks, what it assumes."""
    from ablate.claims import describe

    claims = [{**c.to_dict(), "check_text": describe(c, study.axes)} for c in study.claims]
    if json_:
        return print_json(
            {
                "name": study.name,
                "description": study.description,
                "base": study.base,
                "axes": study.axes,
                "seeds": study.seeds,
                "figures": list(study.figures),
                "claims": claims,
                "assumed": list(study.assumed),
                "path": str(study.path),
            }
        )
    lines = [
        f"{study.name}: {study.description}",
        f"file: {study.path}",
        f"grid: {study.size} point(s) x {study.seeds} seed(s); figures: {', '.join(map(str, study.figures)) or '-'}",
    ]
    lines += [f"  {k} = {axis_values(v)}" for k, v in study.axes.items()]
    if claims:
        lines.append("claims:")
        lines += [f'  {c.get("section", "-")} "{c["text"]}"\n      check: {c["check_text"]}' for c in claims]
    lines.append(
        "assumed (not stated in the report):" if study.assumed else "assumed: nothing the report leaves unsaid"
    )
    lines += [f"  - {a}" for a in study.assumed]
    typer.echo("\n".join(lines))


def _axis_summary(values: list) -> str:
    """As ``axis_values`` lists them; tables by their ``name`` keys, else by how many."""
    if values and all(isinstance(v, dict) for v in values):
        names = [v.get("name") for v in values]
        if not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            return f"{len(values)} settings"
        values = names
    return axis_values(values)


PluginOption = Annotated[
    Optional[list[str]],
    typer.Option("--plugin", metavar="FILE", help="A Python file (or module path) that registers models; repeatable."),
]


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
        table.add_row(
            r["name"], f"{r['params']:,}", r["origin"], ", ".join(f"{k}={v}" for k, v in r["defaults"].items())
        )
    Console().print(table)
