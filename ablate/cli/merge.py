"""``ablate merge``: the finished runs of other databases into this one."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ablate.cli.common import DbOption, user_errors


def merge(
    sources: Annotated[list[str], typer.Argument(help="Databases to merge in: files or SQLAlchemy URLs.", metavar="SRC...")],
    db: DbOption = None,
    assume_data: Annotated[Optional[str], typer.Option(
        "--assume-data", metavar="FINGERPRINT|DIR",
        help="For source runs recorded before ablate fingerprinted data (on data other than synthetic): the data "
             "they trained on, as a fingerprint or a data directory to fingerprint.")] = None,
) -> None:
    """Import the finished runs of other databases (their metrics, probes and artifacts too).

    A run is (study, config, data, seed): one already finished here is never replaced or
    duplicated, a finished run replaces a pending, failed or stale one, and merging again
    changes nothing. Everything goes in one transaction: a failed merge changes nothing.

    Example: ablate merge gpu-window.db --db results.db
    """
    from ablate.merge import merge as merge_  # torch only for --assume-data DIR

    with user_errors():
        found = merge_(sources, db, assume_data)
    for m in found:
        typer.echo(f"{m.source}: {m.added} added, {m.replaced} replaced (pending, failed or stale here), "
                   f"{m.finished_here} skipped (finished here already)"
                   + (f", {m.running_here} left to the runner training them here" if m.running_here else "")
                   + (f", {m.unfinished} unfinished there, not imported" if m.unfinished else ""))
