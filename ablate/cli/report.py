"""``ablate report``: every figure whose study has runs, drawn from the database alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.common import DbOption, VariantOption, selection, user_errors
from ablate.config import ConfigError
from ablate.store import Store


def report(
    figure: Annotated[
        Optional[list[int]],
        typer.Option(
            "--figure", "-f", help="Only this figure number; repeatable. An existing README keeps its other sections."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Directory for figure-NN.png, figure-NN.csv and README.md.")] = Path(
        "reports"
    ),
    db: DbOption = None,
    variant: VariantOption = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Draw the variant run with this --set, as 'ablate run' took it; repeatable.",
        ),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Draw the variant run with these --epochs.")] = None,
    study: Annotated[
        Optional[str],
        typer.Option(
            help="Only this study: its figures of the report, else its own figure (study-NAME.png, chosen by its axes). An existing README keeps its other sections."
        ),
    ] = None,
) -> None:
    """Write the report's figures, the numbers behind them, the report's claims checked, and a README.

    Each study is drawn from one variant (the runs that share a config apart from its axes and
    the seed): by default the one with the most finished runs; --variant, --set or --epochs
    pick another.

    Example: ablate report --figure 4 --out reports/
    """
    from ablate.report import check_numbers, write_report  # matplotlib and scipy: only when asked
    from ablate.study_figures import report_numbers, write_study

    with user_errors():
        if study is not None and figure:
            raise ConfigError("--study and --figure each pick what to draw: give one of them")
        check_numbers(figure)
        chosen = selection(variant, set_, epochs)
        store = Store.open(db, create=False)
    try:
        with user_errors():
            if study is not None and not report_numbers(study):
                drawn = write_study(store, out, study, chosen)
                entries = []
            else:
                entries = write_report(store, out, figure or (report_numbers(study) if study else None), chosen)
    finally:
        store.close()
    if study is not None and not entries:
        if drawn.png is None:
            typer.echo(f"study {study}: not drawn: {drawn.problem}")
        else:
            typer.echo(f"study {study}: {drawn.png}")
    for e in entries:
        if e.problem:
            typer.echo(f"figure {e.number:2d}: not drawn: {e.problem}")
        elif e.png is None:
            typer.echo(f"figure {e.number:2d}: {e.empty}; fill it with: {e.command}")
        else:
            typer.echo(f"figure {e.number:2d}: {e.png}" + (f" ({e.note})" if e.note else ""))
    typer.echo(f"report: {out / 'README.md'}")
