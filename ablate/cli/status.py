"""``ablate status``: per study, points complete / running / pending / failed / diverged."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ablate.cli.common import DbOption, JsonOption, VariantOption, print_json, selection, user_errors
from ablate.config import ConfigError
from ablate.status import study_status
from ablate.store import Store

COLUMNS = ("complete", "running", "pending", "failed", "diverged", "stale")
# Short headers, so the table fits 80 columns on a pipe or in a CI log.
HEADERS = ("done", "run", "pend", "fail", "div", "stale")


def status(
    study: Annotated[Optional[str], typer.Argument(help="Only this study, with a table of its points.")] = None,
    db: DbOption = None,
    variant: VariantOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what ran, what runs and what failed, per study.

    With STUDY: its variants, and a row per point of one variant (axis values, seed, status,
    epochs, test accuracy, time).

    Example: ablate status depth --json
    """
    with user_errors():
        store = Store.open(db, create=False)
        try:
            if variant is not None and study is None:
                raise ConfigError("--variant names a variant of one study: give the study too")
            found = study_status(store, study, selection(variant))
        finally:
            store.close()
    if json_:
        return print_json({"studies": found})
    if not found:
        typer.echo(f"no runs{' of ' + study if study else ''} in {store.url}")
        return
    # Light rules and a space between columns: the table fits 80 columns (a CI log, a pipe).
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    for header in ("study", *HEADERS, "var", "best", "updated (UTC)"):
        table.add_column(header, no_wrap=True)
    for s in found:
        best = f"{100 * s['best_test_acc']:.2f}%" if s["best_test_acc"] is not None else "-"
        last = s["last_update"].strftime("%m-%d %H:%M") if s["last_update"] else "-"
        table.add_row(s["name"], *(str(s["counts"][c]) for c in COLUMNS), str(len(s["variants"])), best, last)
    console = Console()
    console.print(table)
    for s in found:
        if study is not None or len(s["variants"]) > 1:
            _print_variants(console, s)
        if study is not None and s["points"]:
            _print_points(console, s)
        for m in s.get("mixed_code", []):
            versions = ", ".join(f"{v} ({n} run(s))" for v, n in m["versions"].items())
            console.print(
                f"warning: {s['name']} {m['label']} (config {m['config_hash'][:8]}) ran on "
                f"{len(m['versions'])} versions of the model's code: {versions}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    for s in found:
        for r in s["runs"]:
            if r["status"] not in ("failed", "stale"):
                continue
            if r["status"] == "stale":
                why = f"{r['stale_reason']}; the next 'ablate run {s['name']}' re-queues it to resume from its last checkpoint"
            else:
                why = f"{r['error'] or 'no message'} ('ablate run {s['name']} --retry-failed' trains it again)"
            console.print(
                f"{s['name']} run {r['id']} ({r['label']}, seed {r['seed']}) {r['status']}: {why}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            if r["notes"]:
                console.print(
                    f"  notes: {'; '.join(r['notes'].splitlines())}", markup=False, highlight=False, soft_wrap=True
                )


def _print_points(console: Console, s: dict) -> None:
    """One row per run of the chosen variant: where it sits in the grid and how it went."""
    table = Table(
        *s["axes"],
        "seed",
        "status",
        "epochs",
        "test acc",
        "time",
        title=f"{s['name']}, variant {s['variant']}: {len(s['points'])} run(s)",
        title_justify="left",
    )
    for p in s["points"]:
        acc = f"{100 * p['test_acc']:.2f}%" if p["test_acc"] is not None else "-"
        table.add_row(
            *(_value(p["axes"][a]) for a in s["axes"]),
            str(p["seed"]),
            p["status"],
            f"{p['epochs_done']}/{p['epochs']}",
            acc,
            _time(p["wall_s"]),
        )
    console.print(table)


def _value(v) -> str:
    if isinstance(v, dict):  # a table-valued axis (optimizer): by its name, else its keys
        return str(v["name"]) if "name" in v else ",".join(f"{k}={x}" for k, x in v.items()) or "{}"
    return "-" if v is None else str(v)


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}h {m % 60:02d}m" if m >= 60 else f"{m}m {s:02d}s" if m else f"{seconds:.1f} s"


def _print_variants(console: Console, s: dict) -> None:
    """A study's variants: the runs that share one config apart from its axes and the seed.
    Statistics never pool two of them; reports draw the first (*) unless told otherwise."""
    console.print(
        f"{s['name']}: {len(s['variants'])} variant(s); report, compare and export draw the one "
        "marked * (--variant KEY for another)",
        markup=False,
        highlight=False,
    )
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    for header in ("variant", "points", "seeds", *HEADERS[:4]):
        table.add_column(header, no_wrap=True)
    table.add_column("differs from the study's base", overflow="fold")
    for v in s["variants"]:
        seeds = "-" if not v["seeds"][1] else "-".join(dict.fromkeys(map(str, v["seeds"])))
        table.add_row(
            v["key"] + (" *" if v["default"] else ""),
            f"{v['done_points']}/{v['points']}",
            seeds,
            *(str(v["counts"][c]) for c in COLUMNS[:4]),
            v["differs"],
        )
    console.print(table)
