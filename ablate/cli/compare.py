"""``ablate compare``: is each value of an axis really better or worse than the baseline?"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ablate.cli.common import DbOption, JsonOption, VariantOption, print_json, selection, user_errors


def compare(
    study: Annotated[str, typer.Argument(help="A study in the database.")],
    by: Annotated[
        Optional[str],
        typer.Option(
            "--by",
            help="The axis, as 'ablate studies' names it: model.block, optimizer, ... (default: a one-axis study's axis).",
        ),
    ] = None,
    baseline: Annotated[
        Optional[str],
        typer.Option(
            help="The value to compare against (default: the axis's first value with runs). A table-valued "
            "axis's values go by their name key (adam), else by their keys (crop_padding=4,flip=True; {} "
            "for the empty table)."
        ),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            help="test_acc, test_loss, train_acc, train_loss, wall_s, or a derived "
            "metric: epoch_time, mean_test_acc, early_test_acc, epochs_to_P (P "
            "percent), acc_drops, landscape_range, grad_spread, grad_max, grad_min, "
            "kernel_norm, diverged; or an evaluated one: macro_f1, class_acc.N "
            "(class N), ece, or a plugin's."
        ),
    ] = "test_acc",
    db: DbOption = None,
    variant: VariantOption = None,
    json_: JsonOption = False,
) -> None:
    """Each value of an axis against a baseline, over runs paired by seed: the mean difference,
    its 95% confidence interval, the p-value, and the p-value corrected by Holm for the number
    of values compared.

    A pair is two finished runs of one variant of the study with the same seed whose configs
    differ only in the axis. The seed is the unit: a seed's pairs from the study's other axes
    (blocks) are averaged first, and a test needs two seeds. The test is the paired t-test, or
    the exact sign-flip test for a 0/1 metric and for differences with no spread.

    Example: ablate compare resblock --by model.block --baseline original
    """
    from ablate.compare import compare as compare_  # pandas and scipy: only when asked

    with user_errors():
        found = compare_(study, by, db, baseline, metric, selection(variant))
    if json_:
        return print_json(found.to_dict())
    show(found)


def _num(x: float | None, pp: bool) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.2f}" if pp else f"{x:+.4g}"


def _p(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def show(found) -> None:
    from ablate.hints import left_out_text

    dropped = left_out_text(found.left_out)
    if found.baseline is None:
        if not found.hint:
            return typer.echo(
                f"no run of study '{found.study}' has {found.metric} to compare ({dropped}); running the "
                "same settings again trains nothing: change them (a lower optimizer.lr, say)"
            )
        why = f" ({dropped})" if dropped else ""
        return typer.echo(f"no finished runs of study '{found.study}' to compare yet{why}: {found.hint}")
    if not found.rows:
        return typer.echo(
            f"only {found.axis} = {found.baseline} has complete runs in study '{found.study}': "
            "nothing to compare it with"
        )
    pp = found.metric.endswith("_acc")  # accuracies are fractions: differences read in points
    unit = " (pp)" if pp else ""
    typer.echo(f"{found.study}: {found.metric} by {found.axis}, against {found.baseline}; variant {found.variant}")
    table = Table(
        "value", "seeds", "blocks", f"diff{unit}", f"95% CI{unit}", "p", "p (Holm)", "test", "p < 0.05 (Holm)"
    )
    for r in found.rows:
        ci = "-" if r.ci_low is None else f"{_num(r.ci_low, pp)} to {_num(r.ci_high, pp)}"
        verdict = "needs 2+ seeds" if r.p is None else "yes" if r.significant else "no"
        table.add_row(
            r.value, str(r.n), str(r.blocks), _num(r.mean_diff, pp), ci, _p(r.p), _p(r.p_holm), r.test or "-", verdict
        )
    Console(width=max(120, Console().width)).print(table)
    if dropped:
        typer.echo(f"left out: {dropped}")
    if not found.tested:
        typer.echo(f"No value has two seeds yet, and {found.rows[0].note}: {found.hint}")
