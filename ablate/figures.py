"""The report's figures, each drawn from a study's runs and nothing else.

A figure is a function registered with ``@figure(number, study, caption)``. It gets the
study's ``runs`` (one row per run, config keys as dotted columns) and its long ``metrics``
frame, and returns the matplotlib figure plus the exact numbers it plotted, which become
``figure-NN.csv`` next to the image. The registry filters the runs to results and sets
the title, so a figure function only chooses what to plot.

This is the only module that imports matplotlib; it knows nothing of the database.
Figures are built as plain ``Figure`` objects, never through pyplot: pyplot keeps every
figure alive in a global list until closed, which leaks when a report fails half way,
and it needs a backend, which a headless server may not have. Saving goes through Agg.
"""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ablate.stats import summarize

# A diverged run is a finding (that setting does not train), so it counts; failed,
# running and pending runs say nothing about the config.
RESULT_STATUSES = ("complete", "diverged")

# Pinned so a figure regenerated on another machine or matplotlib install looks the same
# as the one in the report, whatever the user's matplotlibrc says.
RC = {
    "figure.figsize": (6.4, 4.4),
    "figure.dpi": 100,
    "font.family": "DejaVu Sans",  # ships with matplotlib, so always present
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "figure.titlesize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=matplotlib.colormaps["tab10"].colors),
    "lines.linewidth": 1.8,
    "lines.markersize": 6,
    "errorbar.capsize": 3,
    "image.cmap": "viridis",
}
DPI = 150
TITLE_WIDTH = 70  # characters; about what fits across the default figure width

# Axis names for config keys, in the report's words; other keys show as themselves.
LABELS = {
    "model.depth": "number of conv layers",
    "model.activation": "activation",
    "model.dropout": "dropout rate on the FC layer",
    "model.kernel_size.0": "first-layer kernel size",
    "model.kernel_size.1": "second-layer kernel size",
    "model.channels.0": "first-layer channels",
    "model.channels.1": "second-layer channels",
}

def _percent() -> PercentFormatter:
    """Accuracy ticks in percent, for data kept as fractions.

    Frames and CSVs hold accuracies as the database does (fractions), and only the axis
    shows percent, so the CSV is exactly what was plotted. A new formatter per axis,
    because a formatter binds to the axis it is set on.
    """
    return PercentFormatter(xmax=1.0, decimals=0)


@dataclass(frozen=True)
class FigureSpec:
    number: int
    study: str  # the study whose runs feed it
    caption: str  # the report's caption, verbatim
    draw: Callable[[pd.DataFrame, pd.DataFrame], tuple[Figure, pd.DataFrame]]


FIGURES: dict[int, FigureSpec] = {}


def figure(number: int, study: str, caption: str):
    """Register ``draw(runs, metrics) -> (Figure, frame)`` as figure ``number`` of ``study``.

    The registered ``FigureSpec.draw`` first keeps only result runs (and their metrics),
    sorted by run_id, then calls ``draw`` under the pinned rcParams and titles the figure.
    """

    def register(draw):
        if number in FIGURES:
            raise ValueError(f"figure {number} is registered twice")
        title = textwrap.fill(f"Figure {number}: {caption}", TITLE_WIDTH)

        @functools.wraps(draw)
        def run(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
            results = results_only(runs)
            if results.empty:
                raise ValueError(
                    f"figure {number}: study {study!r} has no complete or diverged runs yet"
                )
            kept = metrics[metrics["run_id"].isin(results["run_id"])]
            with matplotlib.rc_context(RC):
                fig, frame = draw(results, kept)
                fig.suptitle(title)
            return fig, frame.reset_index(drop=True)

        FIGURES[number] = FigureSpec(number, study, caption, run)
        return draw

    return register


def get(number: int) -> FigureSpec:
    try:
        return FIGURES[number]
    except KeyError:
        known = ", ".join(str(n) for n in sorted(FIGURES))
        raise KeyError(f"no figure {number}; known figures: {known}") from None


def save(fig: Figure, path) -> None:
    """Write ``fig`` to ``path``; the format comes from the suffix (png for the report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The PNG "Software" tag names the matplotlib version; dropping it keeps a
    # regenerated figure byte-identical when nothing it plots has changed.
    metadata = {"Software": None} if path.suffix.lower() == ".png" else None
    # Tick labels are created while saving, so they need the pinned rcParams too.
    with matplotlib.rc_context(RC):
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata=metadata)


# ---------------------------------------------------------------------------- helpers


def results_only(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that are results, in run_id order (the order the study queued them)."""
    kept = runs[runs["status"].isin(RESULT_STATUSES)]
    return kept.sort_values("run_id", kind="stable").reset_index(drop=True)


def new_axes(figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    """A one-panel figure; constrained layout keeps the wrapped title and colorbar clear."""
    fig = Figure(figsize=figsize or RC["figure.figsize"], layout="constrained")
    return fig, fig.add_subplot()


def label(column: str) -> str:
    return LABELS.get(column, column)


def _tick(value) -> str:
    # Config values may come back as floats when the column also holds NaN; 3.0 reads as 3.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _require(runs: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in runs.columns]
    if missing:
        raise KeyError(f"runs frame lacks config column(s) {missing}")


def _in_order_of_appearance(summary: pd.DataFrame, runs: pd.DataFrame, column: str):
    """Reorder ``summary`` rows to follow the study's own order of ``column`` values."""
    order = list(pd.unique(runs[column]))
    rank = summary[column].map({v: i for i, v in enumerate(order)})
    return summary.iloc[np.argsort(rank.to_numpy(), kind="stable")].reset_index(drop=True)


def _errors(summary: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths; a single seed has no interval and gets none."""
    low = (summary["mean"] - summary["ci_low"]).fillna(0.0)
    high = (summary["ci_high"] - summary["mean"]).fillna(0.0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _ci_bars(ax: Axes, xs: np.ndarray, summary: pd.DataFrame, colour: str) -> None:
    """95% CI error bars at ``xs`` for the rows of ``summary`` with more than one seed."""
    ci = (summary["n"] > 1).to_numpy()
    if ci.any():
        yerr = _errors(summary[ci])
        ax.errorbar(xs[ci], summary["mean"][ci], yerr=yerr, fmt="none", ecolor=colour)


def accuracy_lines(ax: Axes, summary: pd.DataFrame, x: str, series: str | None = None) -> None:
    """Mean accuracy against numeric ``x``, one line per ``series`` value, 95% CI bars.

    Series keep their order in ``summary``; error bars are drawn only where n > 1.
    """
    groups = [(None, summary)] if series is None else list(summary.groupby(series, sort=False))
    values = np.sort(summary[x].unique())
    # Several series share each x, so their error bars would hide each other; shift each
    # series sideways by a few percent of the x spacing. The frame keeps the true x.
    step = np.diff(values).min() if len(values) > 1 else 1.0
    shifts = (np.arange(len(groups)) - (len(groups) - 1) / 2) * 0.04 * step
    for (name, part), shift in zip(groups, shifts):
        part = part.sort_values(x)
        xs = part[x].to_numpy(dtype=float) + shift
        (line,) = ax.plot(xs, part["mean"], marker="o", label=None if name is None else _tick(name))
        _ci_bars(ax, xs, part, line.get_color())
    ax.set_xticks(values, [_tick(v) for v in values])
    ax.set_xlabel(label(x))
    ax.yaxis.set_major_formatter(_percent())
    if series is not None:
        ax.legend(title=label(series))


def accuracy_bars(ax: Axes, summary: pd.DataFrame, x: str) -> None:
    """One bar per categorical ``x`` value in ``summary`` order, 95% CI bars where n > 1."""
    positions = np.arange(len(summary))
    ax.bar(positions, summary["mean"], color="C0", width=0.6)
    _ci_bars(ax, positions, summary, "0.2")
    # Bars start at zero, so differences of a point or two are only legible as numbers.
    tops = summary["mean"] + _errors(summary)[1]
    for pos, mean, top in zip(positions, summary["mean"], tops):
        if np.isnan(mean):  # every run of this value diverged without a test accuracy
            continue
        ax.annotate(f"{100 * mean:.1f}", (pos, top), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, [_tick(v) for v in summary[x]])
    ax.set_xlabel(label(x))
    ax.yaxis.set_major_formatter(_percent())
    ax.grid(axis="x", visible=False)


def accuracy_heatmap(fig: Figure, ax: Axes, summary: pd.DataFrame, rows: str, cols: str) -> None:
    """Mean accuracy over two config axes, each cell annotated in percent.

    Grid points with no result are NaN and drawn blank, so a half-run study still plots.
    """
    table = summary.pivot(index=rows, columns=cols, values="mean").sort_index().sort_index(axis=1)
    values = table.to_numpy(dtype=float)
    cmap = matplotlib.colormaps[RC["image.cmap"]].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isnan(value):
            continue
        # Light text on the dark end of the colormap, dark text on the light end.
        r, g, b, _ = image.cmap(image.norm(value))
        colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
        ax.text(j, i, f"{100 * value:.1f}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(table.columns)), [_tick(v) for v in table.columns])
    ax.set_yticks(range(len(table.index)), [_tick(v) for v in table.index])
    ax.set_xlabel(label(cols))
    ax.set_ylabel(label(rows))
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="mean test accuracy", format=_percent())


# ---------------------------------------------------------------------------- figures


def _heatmap_figure(runs: pd.DataFrame, rows: str, cols: str) -> tuple[Figure, pd.DataFrame]:
    _require(runs, rows, cols)
    summary = summarize(runs, [rows, cols])
    fig, ax = new_axes(figsize=(6.4, 5.0))
    accuracy_heatmap(fig, ax, summary, rows, cols)
    return fig, summary


@figure(0, "smoke", "Smoke study: test accuracy by depth and activation (synthetic data)")
def smoke(runs: pd.DataFrame, metrics: pd.DataFrame):
    _require(runs, "model.depth", "model.activation")
    summary = summarize(runs, ["model.activation", "model.depth"])
    summary = _in_order_of_appearance(summary, runs, "model.activation")
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.depth", series="model.activation")
    ax.set_ylabel("test accuracy")
    return fig, summary


@figure(1, "kernel", "Accuracy of Different Kernel Size Combinations with a 2-ConvLayer CNN")
def kernel(runs: pd.DataFrame, metrics: pd.DataFrame):
    return _heatmap_figure(runs, "model.kernel_size.0", "model.kernel_size.1")


@figure(3, "channels", "Accuracy of Different Channel Combinations with a 2-ConvLayer CNN")
def channels(runs: pd.DataFrame, metrics: pd.DataFrame):
    return _heatmap_figure(runs, "model.channels.0", "model.channels.1")


@figure(4, "depth", "Accuracy of Different Depth")
def depth(runs: pd.DataFrame, metrics: pd.DataFrame):
    # Train accuracy beside test accuracy separates the report's two explanations for
    # the drop after 3 layers: overfitting (train keeps rising) from optimisation
    # trouble (train falls too).
    _require(runs, "model.depth")
    parts = [
        summarize(runs, ["model.depth"], value=f"{series}_acc").assign(series=series)
        for series in ("test", "train")
    ]
    summary = pd.concat(parts, ignore_index=True)
    summary = summary[["model.depth", "series", "mean", "ci_low", "ci_high", "n"]]
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.depth", series="series")
    ax.legend()  # "test" and "train" need no legend title
    ax.set_ylabel("accuracy")
    return fig, summary


@figure(6, "activation", "Accuracy of different activation on a 3-ConvLayer CNN")
def activation(runs: pd.DataFrame, metrics: pd.DataFrame):
    _require(runs, "model.activation")
    summary = summarize(runs, ["model.activation"])
    summary = _in_order_of_appearance(summary, runs, "model.activation")
    fig, ax = new_axes()
    accuracy_bars(ax, summary, "model.activation")
    ax.set_ylabel("test accuracy")
    return fig, summary


@figure(9, "dropout", "Accuracy when Different Dropout is Assigned to FCLayer")
def dropout(runs: pd.DataFrame, metrics: pd.DataFrame):
    _require(runs, "model.dropout")
    summary = summarize(runs, ["model.dropout"])
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.dropout")
    ax.set_ylabel("test accuracy")
    return fig, summary
