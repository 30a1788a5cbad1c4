"""``ablate merge``: the finished runs of other databases into this one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ablate.cli.common import DbOption, user_errors


def merge(
    sources: Annotated[
        list[str], typer.Argument(help="Databases to merge in: files or SQLAlchemy URLs.", metavar="SRC...")
    ],
    db: DbOption = None,
    assume_data: Annotated[
        Optional[str],
        typer.Option(
            "--assume-data",
            metavar="FINGERPRINT|DIR",
            help="For source runs recorded before ablate fingerprinted data (on data other than synthetic): the data "
            "they trained on, as a fingerprint or a data directory to fingerprint. A run merged before keeps "
            "the data it was merged with.",
        ),
    ] = None,
    on_conflict: Annotated[
        str,
        typer.Option(
            "--on-conflict",
            metavar="keep|replace",
            help="Where a run is finished both here and in a source with other numbers: keep this database's "
            "(the default) or replace it with the source's. Each conflict is printed either way.",
        ),
    ] = "keep",
    replace_study: Annotated[
        bool,
        typer.Option(
            "--replace-study",
            help="Let a source's study redefine a study of the same name here that has another base or other axes "
            "(the runs here stay, as another variant).",
        ),
    ] = False,
    rename: Annotated[
        Optional[list[str]],
        typer.Option(
            "--rename",
            metavar="OLD=NEW",
            help="Merge the sources' study OLD as study NEW (for a name taken here by another definition); repeatable.",
        ),
    ] = None,
) -> None:
    """Import the finished runs of other databases (their metrics, probes and artifacts too).

    A run is (study, config, data, seed): one already finished here is never duplicated, nor
    replaced unless its numbers differ and --on-conflict replace says so; a finished run
    replaces a pending, failed or stale one, and merging again changes nothing. Everything
    goes in one transaction: a failed merge changes nothing.

    Example: ablate merge gpu-window.db --db results.db
    """
    from ablate.merge import merge as merge_  # torch only for --assume-data DIR

    with user_errors():
        found = merge_(sources, db, assume_data, on_conflict, replace_study, rename)
    for m in found:
        typer.echo(
            f"{m.source}: {m.added} added, {m.replaced} replaced (pending, failed or stale here"
            + (", or in conflict" if on_conflict == "replace" and m.conflicts else "")
            + "), "
            f"{m.finished_here} skipped (finished here already)"
            + (f", {m.unassumed_before} skipped: merged before without --assume-data" if m.unassumed_before else "")
            + (f", {m.assumed_before} skipped: merged before with other data assumed" if m.assumed_before else "")
            + (f", {len(m.conflicts)} in conflict" if m.conflicts else "")
            + (f", {m.running_here} left to the runner training them here" if m.running_here else "")
            + (f", {m.unfinished} unfinished there, not imported" if m.unfinished else "")
        )
        for name in m.redefined:
            typer.echo(f"  study '{name}' now has the definition of {m.source} (--replace-study)")
        for c in m.conflicts:
            also = f" (and {', '.join(c.also)})" if c.also else ""
            kept = (
                "kept this database's (--on-conflict replace takes the source's)"
                if c.kept == "here"
                else "took the source's (--on-conflict replace)"
            )
            typer.echo(
                f"  conflict: study '{c.study}', run {c.label} (seed {c.seed}): {c.metric} {c.here} here "
                f"(run {c.here_id}), {c.there} in {m.source} (run {c.there_id}){also}; {kept}"
            )
