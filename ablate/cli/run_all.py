"""``ablate run all``: every study of the report, in the order that yields the most per
unit of compute, within ``--budget``."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ablate.cli.common import DbOption, user_errors
from ablate.cli.help import flowed
from ablate.store import Store


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:,.1f} days"


_HELP = """Run every study of the report in one go: those feeding the most figures and claims per
training FLOP first, each study's unfinished points only, until --budget is spent.

Example: ablate run all --budget 8m --epochs 4 --data ~/cifar10
"""


def all_command():
    app = typer.Typer(add_completion=False)

    @app.command(
        name="all",
        short_help="Every study of the report, most figures and claims per GPU-second first.",
        help=flowed(_HELP),
    )
    def command(
        budget: Annotated[
            Optional[str],
            typer.Option(
                help="Stop cleanly once this much time is spent (90s, 8m, 1.5h); the unfinished points stay pending and the next call goes on from there."
            ),
        ] = None,
        studies: Annotated[
            Optional[str],
            typer.Option(
                metavar="A,B,...",
                help="Only these studies [default: every study of the report: all but smoke, speedrun, speedrun_legacy and fast_sgd].",
            ),
        ] = None,
        seeds: Annotated[
            Optional[int], typer.Option(help="Run seeds 0..N-1 of every grid point [default: each study's own].")
        ] = None,
        epochs: Annotated[
            Optional[int],
            typer.Option(
                help="Epochs per run, for every study (an optimizer switch keeps its place as a fraction of them)."
            ),
        ] = None,
        set_: Annotated[
            Optional[list[str]],
            typer.Option("--set", metavar="KEY=VALUE", help="Override a config key in every study; repeatable."),
        ] = None,
        data: Annotated[Optional[str], typer.Option(help="CIFAR-10 source, as for a study.")] = None,
        db: DbOption = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda, or a list such as cuda:0,cuda:1.")] = "auto",
        per_gpu: Annotated[
            Optional[int], typer.Option("--per-gpu", metavar="K", help="Train K points at once on each GPU.")
        ] = None,
        fuse: Annotated[
            Optional[str],
            typer.Option(
                "--fuse",
                metavar="N|auto",
                help="Train up to N points that share their model's shapes as one fused step, as for a study [default: auto].",
            ),
        ] = None,
        dry_run_: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Print each study's points left and the time they would take, judged from the runs in the database (with none on this kind of device, from a stated rough rate); download and train nothing.",
            ),
        ] = False,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Train the points that failed before again.")
        ] = False,
        checkpoints: Annotated[Optional[Path], typer.Option(help="Folder for the per-epoch checkpoints.")] = None,
    ) -> None:
        from ablate.cli.live import reporter_for
        from ablate.run import to_download
        from ablate.run_all import pace, parse_budget, parse_studies, plan_all, prepare, run_all

        with user_errors():
            seconds = parse_budget(budget)
            names = parse_studies(studies)
            plans = plan_all(
                names,
                sets=set_ or [],
                seeds=seeds,
                epochs=epochs,
                data=data,
                device=device,
                per_gpu=per_gpu,
                fuse=fuse,
                download=not dry_run_,
            )
            store = Store.open(db, create=not dry_run_)
        try:
            items = prepare(store, plans)
            _print_plan(items, seconds, pace(store, plans), any(to_download(p) for p in plans))
            if dry_run_:
                return
            with user_errors():
                run_all(store, items, seconds, reporter_for(), retry_failed=retry_failed, checkpoints=checkpoints)
        except KeyboardInterrupt:
            typer.echo("interrupted; unfinished points stay pending", err=True)
            raise typer.Exit(130) from None
        finally:
            store.close()
        failed = _print_outcome(items)
        if any(i.summary and i.summary.interrupted and not i.summary.out_of_time for i in items):
            raise typer.Exit(130)
        if failed:
            raise typer.Exit(1)

    return typer.main.get_command(app)


def _print_plan(items, seconds, pace, download: bool) -> None:
    table = Table(
        "study", "feeds", "points left", "GFLOP left", "estimate", title="in this order", title_justify="left"
    )
    for i in items:
        table.add_row(
            i.name,
            str(i.value),
            f"{len(i.todo)}/{len(i.plan.points)}",
            f"{i.flops / 1e9:,.0f}",
            _minutes(i.estimate_s) if i.todo else "-",
        )
    Console().print(table)
    known = [i.estimate_s for i in items if i.todo]
    total = "?" if any(e is None for e in known) else _minutes(sum(known))
    left = sum(len(i.todo) for i in items)
    typer.echo(
        f"{left} points left in {sum(bool(i.todo) for i in items)} studies; about {total} ({pace.says()})"
        + (f"; budget {_minutes(seconds)}" if seconds else "")
    )
    if download:
        from ablate.data import downloaded

        typer.echo(
            f"data: CIFAR-10 is not in {downloaded()[1]} yet; it is downloaded at run time "
            "(about 170 MB; --data DIR for a copy you have)"
        )


def _print_outcome(items) -> bool:
    failed = False
    for i in items:
        if i.skipped:
            typer.echo(f"{i.name}: {len(i.todo)} points not started: {i.skipped}")
        elif i.summary is not None:
            s = i.summary
            trained = sum(s.counts.values())
            line = f"{i.name}: {trained} trained" + (", stopped by the budget" if s.out_of_time else "")
            typer.echo(line)
            failed |= not s.ok
    if any(i.skipped or (i.summary and i.summary.out_of_time) for i in items):
        typer.echo("the budget is spent; the same command goes on from here")
    return failed
