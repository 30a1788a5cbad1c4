"""``ablate studies`` and ``ablate models``: what can be run, and with what."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ablate.cli.common import JsonOption, print_json, user_errors


def studies(json_: JsonOption = False) -> None:
    """List the studies: their axes and values, grid points, default seeds, figures and the report's claims they check.

    Example: ablate studies --json
    """
    from ablate.studies import list_studies  # imports torch: only when asked

    with user_errors():
        found = list_studies()
    rows = [
        {"name": s.name, "description": s.description, "axes": s.axes, "points": s.size,
         "seeds": s.seeds, "figures": list(s.figures), "claims": [c.to_dict() for c in s.claims], "path": str(s.path)}
        for s in found
    ]
    if json_:
        return print_json(rows)
    table = Table("study", "axes", "points", "seeds", "figures", "claims", "description")
    for r in rows:
        axes = "\n".join(f"{k} = {v}" for k, v in r["axes"].items()) or "-"
        table.add_row(r["name"], axes, str(r["points"]), str(r["seeds"]),
                      ", ".join(map(str, r["figures"])) or "-", str(len(r["claims"])) or "-", r["description"])
    Console().print(table)


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
