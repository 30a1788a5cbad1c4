"""The report's figures, each drawn from a study's runs and nothing else.

A figure is a function registered with ``@figure(number, study, caption)``. It gets the
study's ``runs`` (one row per run, config keys as dotted columns), its long ``metrics``
frame (per-epoch metrics with step = epoch, probes with step = training step) and its
``artifacts`` (run_id -> name -> array, e.g. the first-layer kernels), and returns the
matplotlib figure plus the exact numbers it plotted, which become ``figure-NN.csv`` next
to the image. The registry filters the runs (and their metrics and artifacts) to results
and sets the title, so a figure function only chooses what to plot. A figure that lacks
what it needs (a run, a probe, an artifact) raises ``ValueError`` saying what is missing.

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
from typing import Callable, Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ablate.stats import ACCURACY, summarize

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
FOOTER_WIDTH = 100  # the caption line under a figure, in its smaller font

# Axis names for config keys, in the report's words; other keys show as themselves.
LABELS = {
    "model.depth": "number of conv layers",
    "model.activation": "activation",
    "model.dropout": "dropout rate on the FC layer",
    "model.kernel_size.0": "first-layer kernel size",
    "model.kernel_size.1": "second-layer kernel size",
    "model.channels.0": "first-layer channels",
    "model.channels.1": "second-layer channels",
    "model.batchnorm": "batch norm",
    "model.block": "residual block",
    "optimizer.name": "optimizer",
}

# The report's names for the residual block orders (section 4.8) and the optimizers.
BLOCKS = {
    "original": "Original",
    "bn_after_add": "BN after addition",
    "act_before_add": "ReLU before addition",
    "act_preact": "ReLU-only pre-activation",
    "preact": "Full pre-activation",
}
OPTIMIZERS = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adadelta": "AdaDelta",
    "ranger": "Ranger",
    "ranger21": "Ranger21",
}

# What the trainer's probes store (see ablate.probes): metric name prefixes and the
# artifact holding the first conv layer's weights, [out, in, k, k].
RELGRAD = "relgrad.conv"  # + the conv layer's 1-based index in module order
LANDSCAPE = "landscape.x"  # + the multiple of the current lr, formatted with :g
KERNELS = "kernels.conv1"

# Rolling-mean windows, in recorded points, for the probe curves. Probes are per-batch
# and noisy; the CSV keeps the raw values beside the smoothed ones that are drawn.
SMOOTH_RELGRAD = 5  # every probes.grad_norm_every steps: ~400 points in 20 epochs
SMOOTH_LANDSCAPE = 9  # every probes.landscape_every steps: fewer, noisier points
KERNEL_COLUMNS = 8  # kernels per row of the Figure 2 grid


class _Percent(PercentFormatter):
    """Percent with as few decimals as keep every tick label distinct: a narrow range
    (28.5% to 29.5%) would otherwise read 29%, 29%, 28%, 28%."""

    def format_ticks(self, values):
        for decimals in range(5):
            self.decimals = decimals
            labels = [self(v, i) for i, v in enumerate(values)]
            if len(set(labels)) == len(labels):
                return labels
        return labels


def _percent() -> PercentFormatter:
    """Accuracy ticks in percent, for data kept as fractions.

    Frames and CSVs hold accuracies as the database does (fractions), and only the axis
    shows percent, so the CSV is exactly what was plotted. A new formatter per axis,
    because a formatter binds to the axis it is set on.
    """
    return _Percent(xmax=1.0, decimals=0)


Artifacts = Mapping[int, Mapping[str, np.ndarray]]  # run_id -> name -> array


@dataclass(frozen=True)
class FigureSpec:
    number: int
    study: str  # the study whose runs feed it
    caption: str  # the report's caption, verbatim
    draw: Callable[..., tuple[Figure, pd.DataFrame]]  # (runs, metrics, artifacts=None, *, note, footer)


FIGURES: dict[int, FigureSpec] = {}


def figure(number: int, study: str, caption: str):
    """Register ``draw(runs, metrics, artifacts) -> (Figure, frame)`` as figure ``number``.

    The registered ``FigureSpec.draw`` first keeps only result runs (and their metrics and
    artifacts), sorted by run_id, then calls ``draw`` under the pinned rcParams and titles
    the figure, with ``note`` after the caption ("6 of 8 points") and ``footer`` under the
    plot (what the numbers are: data, epochs, seeds, error bars). A ``ValueError`` from
    ``draw`` (something the figure needs is missing) comes out prefixed with the figure
    number and study.
    """

    def register(draw):
        if number in FIGURES:
            raise ValueError(f"figure {number} is registered twice")

        @functools.wraps(draw)
        def run(
            runs: pd.DataFrame,
            metrics: pd.DataFrame,
            artifacts: Artifacts | None = None,
            *,
            note: str = "",
            footer: str = "",
        ) -> tuple[Figure, pd.DataFrame]:
            results = results_only(runs)
            if results.empty:
                raise ValueError(f"figure {number}: study {study!r} has no complete or diverged runs yet")
            ids = set(results["run_id"].tolist())
            kept = metrics[metrics["run_id"].isin(ids)]
            kept_artifacts = {rid: a for rid, a in (artifacts or {}).items() if rid in ids}
            with matplotlib.rc_context(RC):
                try:
                    fig, frame = draw(results, kept, kept_artifacts)
                except ValueError as error:
                    raise ValueError(f"figure {number} (study {study!r}): {error}") from error
                fig.suptitle(textwrap.fill(f"Figure {number}: {caption}" + (f" ({note})" if note else ""), TITLE_WIDTH))
                if footer:
                    add_footer(fig, footer)
            return fig, frame.reset_index(drop=True)

        FIGURES[number] = FigureSpec(number, study, caption, run)
        return draw

    return register


def add_footer(fig: Figure, text: str) -> None:
    """``text`` under everything the figure shows, an outside legend included: laid out
    first, so the line goes below what is there; saving with a tight box takes it in."""
    FigureCanvasAgg(fig)  # a canvas that can measure text, without pyplot
    fig.draw_without_rendering()
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    fig.text(
        box.x0 / fig.get_figwidth(),
        (box.y0 - 0.08) / fig.get_figheight(),
        textwrap.fill(text, FOOTER_WIDTH),
        ha="left",
        va="top",
        fontsize="small",
        color="0.25",
    )


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


def _on(value) -> bool:
    """Whether a config value switches something on: set, and not 0 or False."""
    return bool(pd.notna(value) and value != 0)


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


CHANCE = 0.1  # CIFAR-10's ten classes: what guessing scores
NEAR_CHANCE = 0.15  # a point this close to chance gets the chance line drawn beside it


def chance_line(ax: Axes, values) -> bool:
    """A dashed line at chance level where some plotted accuracy comes near it, with the axis
    stretched to show it: 12% reads as a result only until one sees that 10% is guessing."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not v.size or v.min() > CHANCE + NEAR_CHANCE:
        return False
    ax.axhline(CHANCE, color="0.4", linestyle="--", linewidth=1.0, zorder=0.5)
    ax.annotate(
        f"chance ({100 * CHANCE:.0f}%)",
        (0.995, CHANCE),
        xycoords=("axes fraction", "data"),
        xytext=(0, 2),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=7,
        color="0.35",
    )
    low, high = ax.get_ylim()
    if low > CHANCE - 0.02:
        ax.set_ylim(CHANCE - 0.02, high)
    return True


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
    chance_line(ax, summary["mean"])
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
        ax.annotate(
            f"{100 * mean:.1f}%",
            (pos, top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            family=RC["font.family"],
        )
    ax.set_xticks(positions, [_tick(v) for v in summary[x]])
    ax.set_xlabel(label(x))
    ax.yaxis.set_major_formatter(_percent())
    ax.grid(axis="x", visible=False)
    chance_line(ax, summary["mean"])


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
        ax.text(j, i, f"{100 * value:.1f}%", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(len(table.columns)), [_tick(v) for v in table.columns])
    ax.set_yticks(range(len(table.index)), [_tick(v) for v in table.index])
    ax.set_xlabel(label(cols))
    ax.set_ylabel(label(rows))
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="mean test accuracy", format=_percent())


# ------------------------------------------------------- helpers: runs, probes, artifacts


def runs_with(runs: pd.DataFrame, column: str, value) -> pd.DataFrame:
    """The runs whose ``column`` equals ``value``; a ValueError naming it when there are none."""
    _require(runs, column)
    chosen = runs[runs[column] == value]
    if chosen.empty:
        have = ", ".join(_tick(v) for v in pd.unique(runs[column]))
        raise ValueError(f"needs a finished run with {column} == {_tick(value)} (finished: {have})")
    return chosen


def preferred_run(runs: pd.DataFrame, *preferences: tuple[str, object]) -> pd.Series:
    """The first run (in run_id order) after narrowing by each ``(column, value)`` in turn,
    skipping a preference that no run meets."""
    for column, value in preferences:
        if column in runs.columns and (runs[column] == value).any():
            runs = runs[runs[column] == value]
    return runs.iloc[0]


def probe_rows(metrics: pd.DataFrame, runs: pd.DataFrame, prefix: str, how: str) -> pd.DataFrame:
    """The probe metrics named ``prefix...`` of ``runs``; a ValueError saying how to get them."""
    rows = metrics[metrics["run_id"].isin(runs["run_id"]) & metrics["name"].str.startswith(prefix)]
    if rows.empty:
        ids = ", ".join(str(i) for i in runs["run_id"])
        raise ValueError(f"run(s) {ids} recorded no {prefix}* metrics ({how})")
    return rows


def kernels_of(artifacts: Artifacts, run_id: int) -> np.ndarray:
    """Run ``run_id``'s first-layer weights, [out, in=3, k, k], as float64."""
    weights = artifacts.get(int(run_id), {}).get(KERNELS)
    if weights is None:
        raise ValueError(f"run {run_id} has no {KERNELS!r} artifact (the study needs probes.kernels = true)")
    if weights.ndim != 4 or weights.shape[1] != 3:
        raise ValueError(f"run {run_id}: {KERNELS!r} has shape {weights.shape}, not [out, 3, k, k]")
    return weights.astype(np.float64)


def smooth(values: pd.Series, window: int) -> pd.Series:
    """Centred rolling mean over ``window`` points; the ends average what they have."""
    return values.rolling(window, center=True, min_periods=1).mean()


def probe_lines(ax: Axes, frame: pd.DataFrame, series: str, name: Callable[[object], str]) -> None:
    """One line per ``series`` value: ``smoothed`` against ``step``, raw ``value`` faint beneath."""
    for key, part in frame.groupby(series, sort=True):
        (raw,) = ax.plot(part["step"], part["value"], linewidth=0.6, alpha=0.25)
        ax.plot(part["step"], part["smoothed"], color=raw.get_color(), label=name(key))
    ax.set_xlabel("training step")


def relgrad_figure(runs: pd.DataFrame, metrics: pd.DataFrame, column: str, value):
    """Figures 5 and 7: relative gradient norm of every conv layer of the runs where
    ``column == value``, mean over seeds, log scale."""
    chosen = runs_with(runs, column, value)
    rows = probe_rows(
        metrics,
        chosen,
        RELGRAD,
        "probes.grad_norm_every must be > 0 and at most a run's training steps, epochs x training images / batch size",
    )
    rows = rows.assign(layer=rows["name"].str.removeprefix(RELGRAD).astype(int))
    frame = rows.groupby(["layer", "step"], as_index=False).agg(value=("value", "mean"), n=("run_id", "nunique"))
    frame["smoothed"] = frame.groupby("layer")["value"].transform(smooth, SMOOTH_RELGRAD)
    fig, ax = new_axes()
    probe_lines(ax, frame, "layer", lambda layer: f"conv{layer}")
    ax.set_yscale("log")
    ax.set_ylabel("relative gradient norm  ‖∇W‖ / ‖W‖")
    ax.legend(title="layer", ncols=2 if frame["layer"].nunique() > 5 else 1)
    seeds = (
        f"mean of {chosen['seed'].nunique()} seeds"
        if chosen["seed"].nunique() > 1
        else f"seed {_tick(chosen['seed'].iloc[0])}"
    )
    described = [
        f"{label(c)}: {_tick(chosen[c].iloc[0])}"
        for c in ("model.depth", "model.batchnorm")
        if c in chosen.columns and chosen[c].nunique(dropna=False) == 1
    ]
    every = int(np.diff(np.sort(frame["step"].unique())).min()) if frame["step"].nunique() > 1 else None
    faint = f"faint: every probe ({every} steps apart)" if every else "faint: every probe"
    ax.set_title(
        ", ".join(described + [seeds]) + f"\n{faint}; bold: rolling mean of {SMOOTH_RELGRAD} probes", fontsize="medium"
    )
    return fig, frame[["layer", "step", "value", "smoothed", "n"]]


def history_lines(ax: Axes, summary: pd.DataFrame) -> None:
    """Mean against epoch, one line per ``label`` in ``summary`` order, 95% CI band where n > 1."""
    for name, part in summary.groupby("label", sort=False):
        (line,) = ax.plot(part["epoch"], part["mean"], label=name)
        ci = (part["n"] > 1).to_numpy()
        if ci.any():
            ax.fill_between(
                part["epoch"], part["ci_low"], part["ci_high"], where=ci, color=line.get_color(), alpha=0.2, linewidth=0
            )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def convergence_history(
    runs: pd.DataFrame, metrics: pd.DataFrame, column: str, labels: pd.Series
) -> tuple[Figure, pd.DataFrame]:
    """Test accuracy and train loss per epoch, one line per run ``labels`` value (grouped
    with ``column``), mean over seeds with a 95% CI band; groups in the study's order."""
    keyed = runs[["run_id", "config_hash", column]].assign(label=labels.to_numpy())
    names = {"test_acc": "test accuracy", "train_loss": "train loss"}
    long = metrics[metrics["name"].isin(names)].merge(keyed, on="run_id")
    if long.empty:
        raise ValueError("no per-epoch test_acc or train_loss metrics in the finished runs")
    long = long.rename(columns={"name": "metric", "step": "epoch"})
    summary = summarize(long, [column, "label", "metric", "epoch"], value="value")
    acc = summary["metric"] == "test_acc"  # an accuracy stays in [0, 1], a loss above 0
    summary.loc[acc, ["ci_low", "ci_high"]] = summary.loc[acc, ["ci_low", "ci_high"]].clip(*ACCURACY)
    summary["ci_low"] = summary["ci_low"].clip(lower=0.0)
    rank = {v: i for i, v in enumerate(pd.unique(keyed["label"]))}
    order = np.lexsort((summary["epoch"], summary["metric"].map(list(names).index), summary["label"].map(rank)))
    summary = summary.iloc[order].reset_index(drop=True)

    fig = Figure(figsize=(10.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (metric, name) in zip(axes, names.items()):
        history_lines(ax, summary[summary["metric"] == metric])
        ax.set_title(name, fontsize="medium")
        ax.set_ylabel(name)
    axes[0].yaxis.set_major_formatter(_percent())
    chance_line(axes[0], summary.loc[summary["metric"] == "test_acc", "mean"])
    # In the train-loss panel's upper right, which a falling loss leaves empty; the caption
    # line goes under the figure.
    axes[1].legend(loc="upper right", title=label(column), fontsize="small", title_fontsize="small")
    return fig, summary


def kernel_mosaic(weights: np.ndarray, columns: int = KERNEL_COLUMNS, gap: int = 1) -> np.ndarray:
    """One RGB image of every kernel in ``weights`` [out, 3, k, k], ``columns`` to a row,
    each min-max scaled on its own to [0, 1], on a white background with ``gap`` pixels
    between kernels."""
    out, _, k, _ = weights.shape
    cols = min(columns, out)
    rows = -(-out // cols)
    cell = k + gap
    mosaic = np.ones((rows * cell - gap, cols * cell - gap, 3))
    for i, w in enumerate(weights):
        lo, hi = w.min(), w.max()
        scaled = (w - lo) / (hi - lo) if hi > lo else np.full_like(w, 0.5)
        r, c = divmod(i, cols)
        mosaic[r * cell : r * cell + k, c * cell : c * cell + k] = scaled.transpose(1, 2, 0)
    return mosaic


AUG_DEFAULTS = {"flip_mode": "random", "pad_mode": "zeros"}  # not worth a word in a subtitle


def _aug_words(key: str, value) -> str:
    """An augmentation setting as a reader says it: "crop 4", "flip", "colour jitter 0.4"."""
    if AUG_DEFAULTS.get(key) == value:
        return ""
    words = {
        "crop_padding": f"crop {_tick(value)}",
        "flip": "flip",
        "jitter": f"colour jitter {_tick(value)}",
        "rotate": f"rotation {_tick(value)}°",
        "flip_mode": f"{value} flips",
        "pad_mode": f"{value} padding",
    }
    return words.get(key, f"{key} {_tick(value)}")


def cutout_pair(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Runs with cutout and without, and what the comparison holds fixed.

    Where possible the two sides share every other augmentation setting, crop+flip
    preferred (the report's comparison); otherwise every run with cutout against every
    run without.
    """
    _require(runs, "data.aug.cutout")
    cut = runs["data.aug.cutout"].fillna(0).astype(float) > 0
    if cut.all() or not cut.any():
        raise ValueError(
            "needs finished runs both with cutout (data.aug.cutout > 0) and without; "
            f"all {len(runs)} are {'with' if cut.all() else 'without'}"
        )
    others = sorted(c for c in runs.columns if c.startswith("data.aug.") and c != "data.aug.cutout")
    key = runs[others].astype(str).agg("|".join, axis=1) if others else pd.Series("", runs.index)
    paired = [k for k in pd.unique(key) if cut[key == k].any() and not cut[key == k].all()]
    if not paired:
        return runs[cut], runs[~cut], "every run with cutout against every run without"

    def crop_flip(k) -> bool:
        row = runs[key == k].iloc[0]
        return _on(row.get("data.aug.crop_padding")) and _on(row.get("data.aug.flip"))

    same = key == ([k for k in paired if crop_flip(k)] or paired)[0]
    row = runs[same].iloc[0]
    fixed = [_aug_words(c.removeprefix("data.aug."), row[c]) for c in others if _on(row[c])]
    fixed = [w for w in fixed if w]
    sizes = "/".join(_tick(v) for v in sorted(runs.loc[same & cut, "data.aug.cutout"].unique()))
    return runs[same & cut], runs[same & ~cut], f"{', '.join(fixed) or 'no other augmentation'}; cutout {sizes} or none"


# ---------------------------------------------------------------------------- figures


def _heatmap_figure(runs: pd.DataFrame, rows: str, cols: str) -> tuple[Figure, pd.DataFrame]:
    _require(runs, rows, cols)
    summary = summarize(runs, [rows, cols], bounds=ACCURACY)
    fig, ax = new_axes(figsize=(6.4, 5.0))
    accuracy_heatmap(fig, ax, summary, rows, cols)
    return fig, summary


@figure(0, "smoke", "Smoke study: test accuracy by depth and activation (synthetic data)")
def smoke(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    _require(runs, "model.depth", "model.activation")
    summary = summarize(runs, ["model.activation", "model.depth"], bounds=ACCURACY)
    summary = _in_order_of_appearance(summary, runs, "model.activation")
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.depth", series="model.activation")
    ax.set_ylabel("test accuracy")
    return fig, summary


@figure(1, "kernel", "Accuracy of Different Kernel Size Combinations with a 2-ConvLayer CNN")
def kernel(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    return _heatmap_figure(runs, "model.kernel_size.0", "model.kernel_size.1")


@figure(2, "kernel", "Kernel Visualization")
def kernel_images(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    # The report shows the 7x7 kernels: those of the 7x7 + 7x7 net where it ran.
    run = preferred_run(runs_with(runs, "model.kernel_size.0", 7), ("model.kernel_size.1", 7), ("seed", 0))
    weights = kernels_of(artifacts, run["run_id"])
    flat = weights.reshape(len(weights), -1)
    frame = pd.DataFrame(
        {
            "run_id": run["run_id"],
            "kernel": np.arange(len(weights)),
            "min": flat.min(axis=1),
            "max": flat.max(axis=1),
            "norm": np.linalg.norm(flat, axis=1),
        }
    )
    mosaic = kernel_mosaic(weights)
    width = 5.2
    fig, ax = new_axes(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1] + 1.0))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    sizes = "x".join(_tick(run[c]) for c in ("model.kernel_size.0", "model.kernel_size.1") if c in run)
    ax.set_title(
        f"run {run['run_id']} (kernel sizes {sizes}, seed {_tick(run.get('seed'))}): "
        f"{len(weights)} first-layer kernels, each scaled to its own range",
        fontsize="small",
    )
    return fig, frame


@figure(3, "channels", "Accuracy of Different Channel Combinations with a 2-ConvLayer CNN")
def channels(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    return _heatmap_figure(runs, "model.channels.0", "model.channels.1")


@figure(4, "depth", "Accuracy of Different Depth")
def depth(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    # Train accuracy beside test accuracy separates the report's two explanations for
    # the drop after 3 layers: overfitting (train keeps rising) from optimisation
    # trouble (train falls too).
    _require(runs, "model.depth")
    parts = [
        summarize(runs, ["model.depth"], value=f"{series}_acc", bounds=ACCURACY).assign(series=series)
        for series in ("test", "train")
    ]
    summary = pd.concat(parts, ignore_index=True)
    summary = summary[["model.depth", "series", "mean", "ci_low", "ci_high", "n"]]
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.depth", series="series")
    ax.legend()  # "test" and "train" need no legend title
    ax.set_ylabel("accuracy")
    return fig, summary


@figure(5, "depth", "Relative Gradient Norm of Different Layers")
def depth_relgrad(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    # The 5-layer net without batch norm, where the report saw the unbalanced updates.
    return relgrad_figure(runs, metrics, "model.depth", 5)


@figure(6, "activation", "Accuracy of different activation on a 3-ConvLayer CNN")
def activation(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    _require(runs, "model.activation")
    summary = summarize(runs, ["model.activation"], bounds=ACCURACY)
    summary = _in_order_of_appearance(summary, runs, "model.activation")
    fig, ax = new_axes()
    accuracy_bars(ax, summary, "model.activation")
    ax.set_ylabel("test accuracy")
    return fig, summary


@figure(7, "batchnorm", "Relative Gradient Norm with BN")
def batchnorm_relgrad(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    return relgrad_figure(runs, metrics, "model.batchnorm", True)


@figure(8, "batchnorm", "Comparison of Loss Landscape")
def landscape(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    # At each probed step, the spread of the batch loss over the step sizes tried along the
    # gradient (Santurkar et al.): a narrow band is a smooth, predictable landscape.
    _require(runs, "model.batchnorm")
    rows = probe_rows(
        metrics,
        runs,
        LANDSCAPE,
        "probes.landscape_every must be > 0 and at most a run's training steps, epochs x training images / batch size",
    )
    rows = rows[np.isfinite(rows["value"])]  # a step size that blew the loss up has no range
    per_run = rows.groupby(["run_id", "step"])["value"].agg(low="min", high="max").reset_index()
    per_run = per_run.merge(runs[["run_id", "model.batchnorm"]], on="run_id")
    frame = per_run.groupby(["model.batchnorm", "step"], as_index=False).agg(
        low=("low", "mean"), high=("high", "mean"), n=("run_id", "nunique")
    )
    for edge in ("low", "high"):
        frame[f"{edge}_smoothed"] = frame.groupby("model.batchnorm")[edge].transform(smooth, SMOOTH_LANDSCAPE)

    fig, ax = new_axes()
    for bn, part in frame.groupby("model.batchnorm", sort=True):
        name = {True: "with BN", False: "without BN"}.get(bn, f"batch norm {_tick(bn)}")
        band = ax.fill_between(
            part["step"], part["low_smoothed"], part["high_smoothed"], alpha=0.35, linewidth=0, label=name
        )
        for edge in ("low_smoothed", "high_smoothed"):
            ax.plot(part["step"], part[edge], color=band.get_facecolor()[0], alpha=1.0, linewidth=0.8)
    # Without batch norm the long steps can overshoot by orders of magnitude.
    low, high = frame["low_smoothed"].min(), frame["high_smoothed"].max()
    if low > 0 and high / low > 20:
        ax.set_yscale("log")
    multiples = sorted(rows["name"].unique(), key=lambda n: float(n.removeprefix(LANDSCAPE)))
    steps = ", ".join(n.removeprefix(LANDSCAPE) for n in multiples)
    ax.set_title(
        f"batch loss at w - m·lr·∇L, min to max over m in {{{steps}}};\nrolling mean over {SMOOTH_LANDSCAPE} probes",
        fontsize="medium",
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("loss along the gradient")
    ax.legend()
    return fig, frame


@figure(9, "dropout", "Accuracy when Different Dropout is Assigned to FCLayer")
def dropout(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    _require(runs, "model.dropout")
    summary = summarize(runs, ["model.dropout"], bounds=ACCURACY)
    fig, ax = new_axes()
    accuracy_lines(ax, summary, "model.dropout")
    ax.set_ylabel("test accuracy")
    return fig, summary


@figure(10, "resblock", "Convergence History with Different ResBlocks")
def resblock(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    _require(runs, "model.block")
    labels = runs["model.block"].map(lambda b: BLOCKS.get(b, _tick(b)))
    return convergence_history(runs, metrics, "model.block", labels)


@figure(11, "optimizer", "Convergence History with Different Optimizers")
def optimizer(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    _require(runs, "optimizer.name")

    def name(row) -> str:
        if not _on(row.get("optimizer.decay_weights_only")):
            return OPTIMIZERS.get(row["optimizer.name"], _tick(row["optimizer.name"]))
        if row["optimizer.name"] == "adadelta":
            return "MyAdaDelta (no decay on biases)"  # the report's own AdaDelta
        return f"{OPTIMIZERS.get(row['optimizer.name'], row['optimizer.name'])} (no decay on biases)"

    return convergence_history(runs, metrics, "optimizer.name", runs.apply(name, axis=1))


@figure(12, "augmentation", "Magnitude of Layer 1 Kernel Weight, Using Cutout or Not")
def cutout_kernels(runs: pd.DataFrame, metrics: pd.DataFrame, artifacts: Artifacts):
    # L2 norm of each first-layer kernel (over its input channels and k x k taps), sorted:
    # the report's finding is that cutout enlarges them.
    with_cutout, without, compared = cutout_pair(runs)
    parts = []
    for setting, chosen in (("without Cutout", without), ("with Cutout", with_cutout)):
        for run_id in chosen["run_id"]:
            weights = kernels_of(artifacts, run_id)
            norms = np.linalg.norm(weights.reshape(len(weights), -1), axis=1)
            parts.append(
                pd.DataFrame({"setting": setting, "run_id": run_id, "kernel": np.arange(len(norms)), "norm": norms})
            )
    frame = pd.concat(parts, ignore_index=True)
    # 1 = the run's largest kernel; several seeds of a setting average rank by rank.
    frame["rank"] = frame.groupby("run_id")["norm"].rank(ascending=False, method="first").astype(int)

    fig, ax = new_axes()
    width = 0.42
    for shift, (setting, part) in zip((-width / 2, width / 2), frame.groupby("setting", sort=False)):
        bars = part.groupby("rank")["norm"].mean()
        runs_of = part["run_id"].nunique()
        ax.bar(
            bars.index + shift,
            bars.to_numpy(),
            width=width,
            alpha=0.85,
            label=setting if runs_of == 1 else f"{setting} (mean of {runs_of} runs)",
        )
    ax.set_xlabel("first-layer kernels, largest first")
    ax.set_ylabel("L2 norm of kernel weights")
    ax.set_title(compared, fontsize="medium")
    ax.grid(axis="x", visible=False)
    ax.legend()
    return fig, frame[["setting", "run_id", "kernel", "rank", "norm"]]


# ------------------------------------------------------------------ generic figures
#
# A study that feeds none of the report's figures gets one chosen by its axes: one axis,
# the metric against it with 95% intervals (a line for a numeric axis, bars otherwise); two,
# a heatmap with the numbers in its cells; more, small multiples of that heatmap over the
# values of the others. Beside it, the per-epoch curve of each point.

SMALL_MULTIPLES_COLUMNS = 3
CURVE_LEGEND_MAX = 10  # points; more lines than this go unlabelled


def generic_figure(
    points: pd.DataFrame,
    axes: list[str],
    numeric: dict[str, bool],
    metric: str,
    curves: pd.DataFrame,
    title: str,
    footer: str = "",
) -> tuple[Figure, pd.DataFrame, pd.DataFrame]:
    """(figure, plotted numbers, curves) of a study's finished runs.

    ``points``: one row per run with ``run_id``, ``config_hash``, ``seed``, ``metric`` and a
    column per axis holding the value's label, as an ordered categorical (the study's order).
    ``curves``: the long per-epoch rows (run_id, step, name, value) of ``metric``, or of
    test_acc where ``metric`` is not recorded per epoch. Raises ValueError with no results.
    """
    if points.empty or points[metric].notna().sum() == 0:
        raise ValueError(f"no finished run has {metric}")
    bounds = ACCURACY if metric.endswith("_acc") or metric.startswith("class_acc.") else None
    summary = _study_order(summarize(points, axes, value=metric, bounds=bounds), points, axes)
    summary = summary[summary["n"] > 0].reset_index(drop=True)
    curve_summary = _curve_summary(points, axes, curves)
    with matplotlib.rc_context(RC):
        if len(axes) <= 2:
            fig = Figure(figsize=(11.0, 4.6), layout="constrained")
            main, right = fig.subplots(1, 2)
            (_one_axis if len(axes) == 1 else _heatmap)(main, summary, axes, numeric, metric)
        else:
            combos = summary[axes[2:]].drop_duplicates().reset_index(drop=True)
            cols = min(SMALL_MULTIPLES_COLUMNS, len(combos) + 1)
            rows = -(-(len(combos) + 1) // cols)
            fig = Figure(figsize=(4.2 * cols, 3.6 * rows), layout="constrained")
            grid = np.atleast_1d(fig.subplots(rows, cols)).ravel()
            for ax, (_, combo) in zip(grid, combos.iterrows()):
                part = summary[(summary[axes[2:]] == combo.to_numpy()).all(axis=1)]
                _heatmap(ax, part, axes[:2], numeric, metric)
                ax.set_title(", ".join(f"{_short_axis(a)}={combo[a]}" for a in axes[2:]), fontsize="medium")
            right = grid[len(combos)]
            for ax in grid[len(combos) + 1 :]:
                ax.set_visible(False)
        _curves(right, curve_summary)
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        if footer:
            add_footer(fig, footer)
    plotted = summary.assign(metric=metric)[[*axes, "metric", "mean", "ci_low", "ci_high", "n"]]
    return fig, _plain(plotted), _plain(curve_summary)


def _study_order(summary: pd.DataFrame, points: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Rows in the study's order of each axis's values (summarize sorts their labels as text)."""
    if summary.empty:
        return summary
    ranks = [summary[a].map({v: i for i, v in enumerate(points[a].cat.categories)}).to_numpy() for a in axes]
    out = summary.iloc[np.lexsort(ranks[::-1])].reset_index(drop=True)
    for a in axes:
        out[a] = pd.Categorical(out[a], categories=points[a].cat.categories, ordered=True)
    return out


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical axis columns back to their labels, for the CSV."""
    return frame.apply(lambda c: c.astype(str) if isinstance(c.dtype, pd.CategoricalDtype) else c)


def _short_axis(axis: str) -> str:
    return axis.split(".", 1)[-1]


def _is_fraction(metric: str) -> bool:
    return metric.endswith("_acc") or metric.startswith("class_acc.") or metric == "macro_f1"


def _cell_text(metric: str, value: float) -> str:
    return f"{100 * value:.1f}%" if _is_fraction(metric) else f"{value:.3g}"


def _one_axis(ax: Axes, summary: pd.DataFrame, axes: list[str], numeric: dict[str, bool], metric: str) -> None:
    (axis,) = axes
    have = summary["n"] > 1
    low = (summary["mean"] - summary["ci_low"]).where(have, 0.0).to_numpy()
    high = (summary["ci_high"] - summary["mean"]).where(have, 0.0).to_numpy()
    if numeric[axis]:
        x = pd.to_numeric(summary[axis].astype(str)).to_numpy()
        ax.errorbar(x, summary["mean"], yerr=[low, high], marker="o", capsize=3)
        ax.set_xticks(x, [str(v) for v in summary[axis]])
    else:
        x = np.arange(len(summary))
        ax.bar(x, summary["mean"], yerr=[low, high], capsize=3, color="C0")
        ax.set_xticks(
            x, [str(v) for v in summary[axis]], rotation=30 if len(x) > 4 else 0, ha="right" if len(x) > 4 else "center"
        )
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{label(metric)} (mean, 95% CI)")
    if _is_fraction(metric):
        ax.yaxis.set_major_formatter(_percent())


def _heatmap(ax: Axes, summary: pd.DataFrame, axes: list[str], numeric: dict[str, bool], metric: str) -> None:
    rows_axis, cols_axis = axes[:2]
    table = summary.pivot_table(index=rows_axis, columns=cols_axis, values="mean", observed=True, sort=True)
    image = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(table.index)), [str(v) for v in table.index])
    ax.set_xticks(range(len(table.columns)), [str(v) for v in table.columns])
    ax.set_ylabel(rows_axis)
    ax.set_xlabel(cols_axis)
    ax.grid(False)
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(
                    j,
                    i,
                    _cell_text(metric, values[i, j]),
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if values[i, j] > middle else "white",
                )
    # The bar reads as the cells do: percent for an accuracy.
    percent = _percent() if _is_fraction(metric) else None
    ax.figure.colorbar(image, ax=ax, label=f"{label(metric)} (mean)", format=percent)


def _curve_summary(points: pd.DataFrame, axes: list[str], curves: pd.DataFrame) -> pd.DataFrame:
    keyed = points[["run_id", "config_hash", *axes]].assign(
        label=points[axes].astype(str).agg(lambda r: " ".join(f"{_short_axis(a)}={v}" for a, v in r.items()), axis=1)
    )
    long = curves.merge(keyed, on="run_id").rename(columns={"step": "epoch", "name": "metric"})
    if long.empty:
        return pd.DataFrame(columns=["label", "metric", "epoch", "mean", "ci_low", "ci_high", "n"])
    metric = str(long["metric"].iloc[0])
    bounds = ACCURACY if _is_fraction(metric) else None
    summary = summarize(long, [*axes, "label", "metric", "epoch"], value="value", bounds=bounds)
    summary = _study_order(summary, points, axes)
    return summary[["label", "metric", "epoch", "mean", "ci_low", "ci_high", "n"]]


def _curves(ax: Axes, summary: pd.DataFrame) -> None:
    if summary.empty:
        ax.set_visible(False)
        return
    metric = str(summary["metric"].iloc[0])
    history_lines(ax, summary)
    ax.set_ylabel(label(metric))
    ax.set_title(f"{label(metric)} per epoch, each point", fontsize="medium")
    if _is_fraction(metric):
        ax.yaxis.set_major_formatter(_percent())
    if summary["label"].nunique() <= CURVE_LEGEND_MAX:
        ax.legend(fontsize="x-small")
