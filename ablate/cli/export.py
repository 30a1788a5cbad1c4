"""``ablate export``: the runs (or their per-epoch metrics) as csv, parquet or json."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer
from rich.markup import escape  # help is rich markup: an unescaped [...] vanishes

from ablate.cli.common import DbOption, selection, user_errors


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"
    json = "json"


def export(
    study: Annotated[Optional[str], typer.Argument(help="Only this study (default: every run).")] = None,
    format_: Annotated[Format, typer.Option("--format", help="File format.")] = Format.csv,
    out: Annotated[
        Optional[str],
        typer.Option(
            "--out",
            "-o",
            help="File to write, - for standard output (default: STUDY.csv, runs.csv; "
            "STUDY-metrics.csv, metrics.csv with --metrics; the extension follows --format).",
        ),
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics", help="The per-epoch table (study, run_id, seed, label, step, name, value) instead of the runs."
        ),
    ] = False,
    db: DbOption = None,
    variant: Annotated[
        Optional[str],
        typer.Option(
            "--variant",
            metavar="KEY|K=V,...|all",
            help=escape(
                "Which variant of the study, as for report and compare, or 'all' for every run "
                "[default: each study's variant with the most finished runs]."
            ),
        ),
    ] = None,
) -> None:
    """Write one row per run: status, seed, final metrics (test_acc a fraction) and the config
    as dotted columns (model.depth, optimizer.lr, ...), from the variant a report draws (the
    runs sharing one config apart from the study's axes and the seed), or every run with
    --variant all. The same table as results.runs() in Python.

    Example: ablate export depth --format parquet --out depth.parquet
    """
    from ablate import results  # pandas and pyarrow: only when asked

    with user_errors():
        chosen = variant if variant == results.ALL else selection(variant)
        where, n = results.export(out, db, study, format_.value, per_epoch=metrics, variant=chosen)
    if str(where) != "-":
        typer.echo(f"{n} {'metric rows' if metrics else 'runs'} -> {where}")
