"""The commands ablate suggests. Each does what it says for the runs it is about: it names
the database it was read from, the options that made the variant, and --retry-failed where
the runs it would fill have failed (a plain ``ablate run`` leaves failed runs alone)."""

from __future__ import annotations

from typing import Any

from ablate.store import DEFAULT_URL


def _cell(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def run_command(
    study: str, variant=None, db: str | None = None, seeds: int | None = None, retry_failed: bool = False
) -> str:
    """``ablate run STUDY`` with what it takes to add runs to ``variant`` (an
    ``ablate.variants.Variant``, or None for the study's own defaults) in ``db``."""
    parts = [f"ablate run {study}"]
    if seeds is not None:
        parts.append(f"--seeds {seeds}")
    if variant is not None:
        for key, value in sorted(variant.diff.items()):
            if key == "code":  # the model's source hash: set by its file, never by --set
                continue
            parts.append(f"--epochs {_cell(value)}" if key == "epochs" else f"--set {key}={_cell(value)}")
        if variant.data_name not in (None, "synthetic") and "data.dataset" not in variant.diff:
            parts.append("--data DIR")
    if retry_failed:
        parts.append("--retry-failed")
    if db and db != DEFAULT_URL:
        parts.append(f"--db {db}")
    return " ".join(parts)


def left_out(runs, metric: str = "test_acc") -> dict[str, int]:
    """Runs of a variant that a statistic of ``metric`` cannot use, counted by why: finished
    runs without the metric (a diverged run has no test accuracy), and runs that have not
    finished (failed, pending, running, stale)."""
    out: dict[str, int] = {}
    if runs is None or len(runs) == 0:
        return out
    done = runs["status"].isin(("complete", "diverged"))
    missing = done & (runs[metric].isna() if metric in runs.columns else True)
    for status, n in runs[missing]["status"].value_counts().items():
        out[f"{status} without {metric}"] = int(n)
    for status, n in runs[~done]["status"].value_counts().items():
        out[str(status)] = int(n)
    return out


def left_out_text(counts: dict[str, int]) -> str:
    """``6 diverged without test_acc, 2 failed``; empty when nothing was left out."""
    order = sorted(counts, key=lambda k: (" without " not in k, k))  # finished without it first
    return ", ".join(f"{counts[k]} {k}" for k in order)
