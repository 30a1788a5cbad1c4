"""The ``ablate`` command line: thin wrappers over the Python functions in ``ablate.*``."""

from __future__ import annotations

import typer

from ablate.cli import catalog, compare, export, merge, report, run, status
from ablate.cli.help import flowed, hide_flag_types

app = typer.Typer(
    name="ablate",
    help="CNN ablation studies on CIFAR-10: run a study's grid, record every run, draw every figure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        import ablate

        typer.echo(f"ablate {ablate.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print ablate's version and exit."
    ),
) -> None:
    pass


app.add_typer(run.app, name="run")
for name, fn in (
    ("status", status.status),
    ("report", report.report),
    ("export", export.export),
    ("compare", compare.compare),
    ("merge", merge.merge),
    ("studies", catalog.studies),
    ("models", catalog.models),
):
    app.command(name, help=flowed(fn.__doc__))(fn)
hide_flag_types()


def main() -> None:
    from ablate.cli import interrupt

    interrupt.OWN_PROCESS = True  # this process is the command's: a second Ctrl-C may end it
    app()
