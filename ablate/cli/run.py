"""``ablate run STUDY``: each study is a subcommand, so ``ablate run depth --help`` shows its grid.

STUDY is the name of a built-in study, of a file in ``./studies/``, or the path of a study file.
"""

# No `from __future__ import annotations`: Typer evaluates the option annotations, whose
# help texts are f-strings over each study's own defaults.
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape  # help is rich markup: an unescaped [...] vanishes
from rich.table import Table
from typer.core import TyperGroup

from ablate.cli.common import DbOption, axis_values, fail, user_errors
from ablate.store import Store

# ablate.studies and ablate.run import torch (seconds); they load when a study is named, so
# that `ablate status` and `ablate report` start at once.


def _help(study) -> str:
    axes = "\n\n".join(f"  {k} = {axis_values(v)}" for k, v in study.axes.items()) or "  (no axes: a single point)"
    return (
        f"{study.description}\n\n"
        f"Axes ({study.size} grid points x {study.seeds} seed(s) by default):\n\n{axes}\n\n"
        f"Feeds figure(s): {', '.join(map(str, study.figures)) or 'none'}. "
        f"File: {study.path}"
    )


def study_command(name: str, study):
    from ablate.studies import MAX_POINTS  # loaded already: the study was

    app = typer.Typer(add_completion=False)

    @app.command(name=name, help=escape(_help(study)), short_help=escape(study.description))
    def command(
        seeds: Annotated[
            Optional[int],
            typer.Option(help=escape(f"Run seeds 0..N-1 of every grid point [study default: {study.seeds}].")),
        ] = None,
        epochs: Annotated[
            Optional[int],
            typer.Option(
                help="Epochs per run, overriding the study's (an optimizer switch keeps its place as a fraction of them)."
            ),
        ] = None,
        set_: Annotated[
            Optional[list[str]],
            typer.Option(
                "--set",
                metavar="KEY=VALUE",
                help="Override a config key in dotted form, e.g. optimizer.lr=0.05; repeatable.",
            ),
        ] = None,
        data: Annotated[
            Optional[str],
            typer.Option(
                help="Where the study's data.dataset lives: a directory (CIFAR-10's python batches or train/ and test/ image folders; another named set in torchvision's layout), or 'synthetic'. Default: download into the cache ($ABLATE_DATA or ~/.cache/ablate/cifar10, and NAME beside it)."
            ),
        ] = None,
        db: DbOption = None,
        device: Annotated[
            str,
            typer.Option(
                help="auto, cpu, cuda, or a list such as cuda:0,cuda:1 (with --backend ray: auto, cpu or cuda)."
            ),
        ] = "auto",
        per_gpu: Annotated[
            Optional[int],
            typer.Option(
                "--per-gpu",
                metavar="K",
                help=escape(
                    "Train K points at once on each GPU, each in its own process [default: 1; with --backend ray, 4 for models under 1M parameters]."
                ),
            ),
        ] = None,
        fuse: Annotated[
            Optional[str],
            typer.Option(
                "--fuse",
                metavar="N|auto",
                help=escape(
                    "Train up to N points that share their model's shapes (seeds of a point; points that differ only in optimizer, schedule or loss) as one fused model step; 1 turns it off [default: auto, 16 on a GPU, 1 on the CPU]."
                ),
            ),
        ] = None,
        compile_: Annotated[
            bool,
            typer.Option(
                "--compile", help="torch.compile the training step, capturing CUDA graphs (CUDA only; experimental)."
            ),
        ] = False,
        backend: Annotated[
            str,
            typer.Option(
                help=escape(
                    'local: this machine\'s devices; ray: Ray tasks on a Ray cluster (pip install "ablate[ray]").'
                )
            ),
        ] = "local",
        address: Annotated[
            Optional[str],
            typer.Option(
                help=escape(
                    "With --backend ray: the cluster, e.g. ray://HOST:10001 or auto [default: the running cluster, else a new one here]."
                )
            ),
        ] = None,
        connect_timeout: Annotated[
            Optional[float],
            typer.Option(
                "--connect-timeout",
                metavar="SECONDS",
                help=escape(
                    "With --backend ray: give up on a cluster that has not taken this driver after so long, with exit 2 [default: 30]."
                ),
            ),
        ] = None,
        dry_run_: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="Print the grid points, which are done, and the fused groups the rest would train in; download and train nothing.",
            ),
        ] = False,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Train the points that failed before again, from scratch.")
        ] = False,
        keep_checkpoints: Annotated[
            bool, typer.Option("--keep-checkpoints", help="Keep each run's last checkpoint after it ends.")
        ] = False,
        checkpoints: Annotated[
            Optional[Path],
            typer.Option(
                help="Folder for the per-epoch checkpoints (default: checkpoints/NAME/ beside the database NAME.db; for a server database, ./checkpoints/NAME/)."
            ),
        ] = None,
        replace_study: Annotated[
            bool,
            typer.Option(
                "--replace-study",
                help="Let this file redefine a study of the same name recorded with another base or other axes (its runs stay, as another variant).",
            ),
        ] = False,
        max_points: Annotated[
            int,
            typer.Option(
                "--max-points",
                metavar="N",
                help="Refuse a grid of more than N runs (grid points x seeds) before building it.",
            ),
        ] = MAX_POINTS,
        plugin: Annotated[
            Optional[list[str]],
            typer.Option(
                "--plugin",
                metavar="FILE",
                help="A Python file (or module path) that registers models, losses or metrics, imported before the study; repeatable.",
            ),
        ] = None,
    ) -> None:
        from ablate.cli.interrupt import second_interrupt_exits
        from ablate.cli.live import reporter_for
        from ablate.run import check_writable, data_changes, dry_run, execute, pending_count, plan, reach_cluster

        # What selects these points again: the command that resumes them, and the report of them.
        again = _options(
            db=db,
            data=data,
            seeds=seeds,
            epochs=epochs,
            sets=set_ or [],
            checkpoints=checkpoints,
            backend=backend,
            address=address,
        ) + [w for f in plugin or [] for w in ("--plugin", f)]
        resume = _command("ablate", "run", str(study.path) if _by_path(name, study) else name, *again)
        with user_errors():
            p = plan(
                study.path or name,
                sets=set_ or [],
                seeds=seeds,
                epochs=epochs,
                data=data,
                device=device,
                backend=backend,
                per_gpu=per_gpu,
                fuse=fuse,
                compile=compile_,
                max_points=max_points,
                download=not dry_run_,
                plugins=plugin or [],
            )
            if checkpoints is not None and not dry_run_:  # before the open, which creates a new database
                check_writable(checkpoints)
            if not dry_run_:
                reach_cluster(p, address, connect_timeout)
            store = Store.open(db, create=not dry_run_)
        if data is not None and data != "synthetic" and {q.config.data.dataset for q in p.points} == {"synthetic"}:
            typer.echo(f"note: study '{p.study.name}' trains on synthetic data; --data is ignored", err=True)
        try:
            if dry_run_:
                for line in data_changes(store, p):
                    typer.echo(line)
                return _print_dry_run(dry_run(store, p))
            started = time.monotonic()
            with user_errors(), second_interrupt_exits(store, resume):  # the data is read before anything is written
                summary = execute(
                    store,
                    p,
                    reporter_for(),
                    retry_failed=retry_failed,
                    keep_checkpoints=keep_checkpoints,
                    checkpoints=checkpoints,
                    address=address,
                    replace_study=replace_study,
                )
            wall = time.monotonic() - started
            left = pending_count(store, p) if summary.interrupted else 0
        except KeyboardInterrupt:  # before training began: every write so far was a whole transaction
            typer.echo(f"interrupted; unfinished points stay pending: `{resume}` resumes them", err=True)
            raise typer.Exit(130) from None
        finally:
            store.close()
        done = sum(summary.counts.values())
        line = f"{summary.study}: {done} trained ({_counts(summary.counts)}), {summary.skipped} already done"
        if summary.retried:
            line += f", {summary.retried} failed before and retried"
        if summary.left_failed:
            line += f", {summary.left_failed} failed before (not retried; --retry-failed trains them again)"
        if summary.elsewhere:
            line += f", {summary.elsewhere} running in another runner"
        typer.echo(f"{line}, in {_duration(wall)}")
        for error in summary.errors:
            typer.echo(f"error: {error}", err=True)
        if summary.interrupted:
            typer.echo(f"interrupted: {left} point(s) left pending; `{resume}` resumes them", err=True)
            raise typer.Exit(130)
        figures = " ".join(f"--figure {f}" for f in p.study.figures) or f"--study {p.study.name}"
        report = _command(
            "ablate", "report", *figures.split(), *_options(db=db, epochs=epochs, sets=set_ or []), *_report_out(db)
        )
        typer.echo(
            f"next: `{report}`"
            if summary.ok
            else f"next: `ablate status {p.study.name}` shows the errors; "
            f"`{resume} --retry-failed` trains the failed points again"
        )
        if not summary.ok:
            raise typer.Exit(1)

    return typer.main.get_command(app)


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def _by_path(name: str, study) -> bool:
    """Whether the study was named by the path of its file (not by a study's name)."""
    from ablate.studies import study_files

    return name not in study_files() and study.path is not None


def _options(db=None, data=None, seeds=None, epochs=None, sets=(), checkpoints=None, backend="local", address=None):
    """The options that name a run's points again (not how they are trained)."""
    out: list[str] = []
    for flag, value in (
        ("--db", db),
        ("--data", data),
        ("--seeds", seeds),
        ("--epochs", epochs),
        ("--checkpoints", checkpoints),
    ):
        if value is not None:
            out += [flag, str(value)]
    for s in sets:
        out += ["--set", s]
    if backend != "local":
        out += ["--backend", backend] + (["--address", address] if address else [])
    return out


def _report_out(db: str | None) -> list[str]:
    """``--out scratch`` beside ``--db scratch.db``: the report of another database goes
    beside it, not over the reports/ of the default one. Nothing for a server database."""
    from ablate.store import database_file

    path = database_file(db)
    if db is None or path is None or path == database_file(None):
        return []
    # A path as the user wrote it (scratch.db -> scratch); a URL by the file it names.
    return ["--out", str((Path(db) if "://" not in db else path).with_suffix(""))]


def _command(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def _print_dry_run(rows: list[dict]) -> None:
    table = Table("point", "seed", "config hash", "status", "group")
    for r in rows:
        table.add_row(r["label"], str(r["seed"]), r["config_hash"], r["status"], str(r["group"] or "-"))
    Console().print(table)
    done = sum(r["status"] in ("complete", "diverged") for r in rows)
    data = ", ".join(dict.fromkeys(r["data"] for r in rows))
    sizes: dict[int, int] = {}
    for r in rows:
        if r["group"]:
            sizes[r["group"]] = sizes.get(r["group"], 0) + 1
    fused = sorted((n for n in sizes.values() if n > 1), reverse=True)
    line = f"{len(rows)} points on {data}: {done} done, {len(rows) - done} to train"
    if fused:
        line += f", in {len(sizes)} groups ({len(fused)} fused, of {', '.join(map(str, fused))})"
    typer.echo(line)


def _preload_plugins(args: list[str]) -> None:
    """``--plugin FILE`` before the study is read: the study's models may be the plugin's."""
    from ablate import plugins

    args = [str(a) for a in args]  # from a shell always strings; from Python (CliRunner) maybe paths
    specs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--plugin"]
    specs += [a.split("=", 1)[1] for a in args if a.startswith("--plugin=")]
    if specs:
        with user_errors():
            plugins.load(specs)


def _broken_command(name: str, message: str):
    """Stands in for a study file that does not load: listed, and refusing with the reason."""
    app = typer.Typer(add_completion=False)

    @app.command(
        name=name,
        help=f"(invalid study: {message})",
        short_help="(invalid study file)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def command(ctx: typer.Context) -> None:
        fail(message)

    return typer.main.get_command(app)


class StudyGroup(TyperGroup):
    """Subcommands made from study files, found afresh on every call."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        from ablate.studies import study_files

        return ["all", *study_files()]

    def get_command(self, ctx: typer.Context, name: str):
        from ablate.studies import StudyError, load, study_files

        if name == "all":
            from ablate.cli.run_all import all_command

            return all_command()

        try:
            return study_command(name, load(name))
        except StudyError as e:
            if name in study_files():
                return _broken_command(name, str(e))
            fail(str(e))

    def resolve_command(self, ctx, args):
        _preload_plugins(args[1:])
        # Torch, the study and its data take seconds to load: say so on a terminal (in a log or
        # a pipe, a refused input stays one line).
        if not {"--help", "-h"} & set(args[1:]) and _on_terminal():
            typer.echo(f"{args[0]}: loading torch, the study and its data ...", err=True)
        # Click would report an unknown name as "No such command"; ours names the studies.
        return args[0], self.get_command(ctx, args[0]), args[1:]


app = typer.Typer(
    cls=StudyGroup,
    no_args_is_help=True,
    help="Train a study's grid points (those not done yet) and record them in the database.\n\n"
    "Example: ablate run depth --seeds 3 --epochs 20 --set optimizer.lr=0.05",
)
