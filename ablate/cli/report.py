"""``ablate report``: every figure whose study has runs, drawn from the database alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.common import DbOption, user_errors
from ablate.store import Store


def report(
    figure: Annotated[Optional[list[int]], typer.Option("--figure", "-f", help="Only this figure number; repeatable.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for figure-NN.png, figure-NN.csv and README.md.")] = Path("reports"),
    db: DbOption = None,
) -> None:
    """Write the report's figures, the numbers behind them and a README.

    Example: ablate report --figure 4 --out reports/
    """
    from ablate.report import check_numbers, write_report  # matplotlib and scipy: only when asked

    with user_errors():
        check_numbers(figure)
        store = Store.open(db, create=False)
    try:
        entries = write_report(store, out, figure)
    finally:
        store.close()
    for e in entries:
        if e.problem:
            typer.echo(f"figure {e.number:2d}: not drawn: {e.problem}")
        elif e.png is None:
            typer.echo(f"figure {e.number:2d}: no runs of study '{e.study}' yet; fill it with: {e.command}")
        else:
            typer.echo(f"figure {e.number:2d}: {e.png}")
    typer.echo(f"report: {out / 'README.md'}")
