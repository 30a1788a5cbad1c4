import ast
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ablate import figures
from ablate.figures import FIGURES

SEEDS = (0, 1)
SPREAD = 0.02  # seed 0 sits SPREAD above the grid point's mean, seed 1 SPREAD below
TRAIN_GAP = 0.1  # train accuracy = test accuracy + TRAIN_GAP
T_975_1 = 12.706204736174705  # Student t, 97.5th percentile, 1 degree of freedom

# The swept config keys of each study that has a figure; a new study needs a line here.
AXES = {
    "smoke": {"model.depth": [1, 2, 3], "model.activation": ["relu", "gelu"]},
    "kernel": {"model.kernel_size.0": [3, 5, 7], "model.kernel_size.1": [3, 5, 7]},
    "channels": {"model.channels.0": [16, 32, 64], "model.channels.1": [32, 64, 128]},
    "depth": {"model.depth": [2, 3, 4, 5]},
    "activation": {"model.activation": ["relu", "leaky_relu", "elu", "mish"]},
    "dropout": {"model.dropout": [0.0, 0.1, 0.3, 0.5]},
}
BASE = {
    "model.name": "plain_cnn", "model.depth": 2, "model.activation": "relu", "model.dropout": 0.0,
    "model.kernel_size.0": 3, "model.kernel_size.1": 3, "model.channels.0": 32,
    "model.channels.1": 64, "optimizer.lr": 0.05, "data.aug.cutout": 0, "epochs": 3,
}


def grid(study):
    """Every grid point of ``study`` as a dict of swept keys, with its known mean accuracy."""
    axes = AXES[study]
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return [(point, 0.40 + 0.03 * i) for i, point in enumerate(points)]


def make_runs(study, points=None, seeds=SEEDS, status="complete"):
    """A ``runs`` frame as the store builds it, plus its ``metrics``, for known means."""
    rows = []
    for point, mean in points if points is not None else grid(study):
        for seed in seeds:
            acc = mean + (SPREAD if seed == 0 else -SPREAD) if len(seeds) > 1 else mean
            rows.append({
                "study": study, "status": status, "seed": seed, "config_hash": "h",
                "epochs_done": 3, "test_acc": acc, "test_loss": 1.0,
                "train_acc": acc + TRAIN_GAP, "train_loss": 0.9, "wall_s": 1.0, "device": "cpu",
                **BASE, **point,
            })
    runs = pd.DataFrame(rows)
    runs.insert(0, "run_id", range(1, len(runs) + 1))
    return runs, make_metrics(runs)


def make_metrics(runs):
    rows = [
        {"run_id": r.run_id, "step": step, "name": name, "value": value}
        for r in runs.itertuples()
        for step in (1, 2, 3)
        for name, value in (("test_acc", r.test_acc), ("train_loss", 1.0 / step))
    ]
    return pd.DataFrame(rows, columns=["run_id", "step", "name", "value"])


def with_extra(runs, extra):
    extra = extra.copy()
    extra["run_id"] = range(runs["run_id"].max() + 1, runs["run_id"].max() + 1 + len(extra))
    both = pd.concat([runs, extra], ignore_index=True)
    return both, make_metrics(both)


def expected(study, frame_row, point_means):
    """The mean a frame row should hold: test accuracy, or train accuracy for a train series."""
    keys = tuple(frame_row[k] for k in AXES[study])
    gap = TRAIN_GAP if frame_row.get("series") == "train" else 0.0
    return point_means[keys] + gap


def check_frame(spec, frame, points, n=len(SEEDS)):
    axes = list(AXES[spec.study])
    assert set(axes + ["mean", "ci_low", "ci_high", "n"]) <= set(frame.columns)
    means = {tuple(p[k] for k in axes): m for p, m in points}
    series = frame["series"].nunique() if "series" in frame else 1
    assert len(frame) == len(points) * series
    for _, row in frame.iterrows():
        assert row["mean"] == pytest.approx(expected(spec.study, row, means))
        assert row["n"] == n


def specs():
    every = list(FIGURES.values())
    return pytest.mark.parametrize("spec", every, ids=lambda s: f"figure-{s.number}")


@specs()
def test_every_figure_has_synthetic_axes(spec):
    assert spec.study in AXES, f"add the swept keys of study {spec.study!r} to AXES"
    assert spec.caption and figures.get(spec.number) is spec


@specs()
def test_draw_plots_the_known_means_with_ci(spec, tmp_path):
    runs, metrics = make_runs(spec.study)
    fig, frame = spec.draw(runs, metrics)
    assert isinstance(fig, Figure)
    check_frame(spec, frame, grid(spec.study))
    # two seeds at mean +- SPREAD: sd = SPREAD * sqrt(2), so the half-width is t * SPREAD
    half = frame["ci_high"] - frame["mean"]
    assert half.to_numpy() == pytest.approx(T_975_1 * SPREAD)
    assert fig._suptitle.get_text().replace("\n", " ") == f"Figure {spec.number}: {spec.caption}"

    path = tmp_path / f"figure-{spec.number:02d}.png"
    figures.save(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    frame.to_csv(tmp_path / "figure.csv", index=False)  # the frame must be writable as is


@specs()
def test_unfinished_and_failed_runs_are_ignored(spec):
    runs, _ = make_runs(spec.study)
    # wildly wrong numbers, so any that leak into a mean show
    for status in ("failed", "pending", "running"):
        extra, _ = make_runs(spec.study, status=status)
        extra["test_acc"] = 0.99 if status != "pending" else np.nan
        runs, metrics = with_extra(runs, extra)
    _, frame = spec.draw(runs, metrics)
    check_frame(spec, frame, grid(spec.study))


@specs()
def test_diverged_runs_count_as_results(spec):
    runs, _ = make_runs(spec.study)
    extra, _ = make_runs(spec.study, seeds=(2,), status="diverged")  # one more seed at the mean
    runs, metrics = with_extra(runs, extra)
    _, frame = spec.draw(runs, metrics)
    check_frame(spec, frame, grid(spec.study), n=3)


@specs()
def test_partial_grid_and_single_seed(spec, tmp_path):
    points = grid(spec.study)[1:]  # the first grid point never ran
    if not points:
        pytest.skip("study has a single grid point")
    runs, metrics = make_runs(spec.study, points=points, seeds=(0,))
    fig, frame = spec.draw(runs, metrics)
    check_frame(spec, frame, points, n=1)
    assert frame["ci_low"].isna().all()  # one seed has no interval
    figures.save(fig, tmp_path / "partial.png")
    assert (tmp_path / "partial.png").stat().st_size > 0


@specs()
def test_no_results_is_a_clear_error(spec):
    runs, metrics = make_runs(spec.study, status="pending")
    with pytest.raises(ValueError, match=spec.study):
        spec.draw(runs, metrics)


def heatmap_cell(fig, row, col):
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    return ax.images[0].get_array()[rows.index(str(row)), cols.index(str(col))]


def test_kernel_heatmap_cell_holds_its_mean():
    runs, metrics = make_runs("kernel")
    fig, frame = figures.get(1).draw(runs, metrics)
    means = {(p["model.kernel_size.0"], p["model.kernel_size.1"]): m for p, m in grid("kernel")}
    assert heatmap_cell(fig, 3, 5) == pytest.approx(means[(3, 5)])
    cell = frame[(frame["model.kernel_size.0"] == 3) & (frame["model.kernel_size.1"] == 5)]
    assert cell["mean"].item() == pytest.approx(means[(3, 5)])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{100 * means[(3, 5)]:.1f}" in texts


def test_heatmap_missing_cell_is_blank():
    cell = {"model.channels.0": 32, "model.channels.1": 64}
    points = [(p, m) for p, m in grid("channels") if p != cell]
    runs, metrics = make_runs("channels", points=points)
    fig, frame = figures.get(3).draw(runs, metrics)
    assert np.ma.is_masked(heatmap_cell(fig, 32, 64))
    assert len(fig.axes[0].texts) == len(points)  # no annotation on the blank cell
    assert len(frame) == len(points)


def test_activation_bars_keep_the_study_order():
    runs, metrics = make_runs("activation")
    _, frame = figures.get(6).draw(runs, metrics)
    assert list(frame["model.activation"]) == AXES["activation"]["model.activation"]


def test_depth_figure_has_test_and_train_series():
    runs, metrics = make_runs("depth")
    fig, frame = figures.get(4).draw(runs, metrics)
    assert set(frame["series"]) == {"test", "train"}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["test", "train"]


def test_get_unknown_figure_lists_known_numbers():
    with pytest.raises(KeyError, match="known figures: 0, 1, 3"):
        figures.get(99)


def test_registering_a_number_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        figures.figure(1, "kernel", "again")(lambda runs, metrics: None)


def test_save_is_reproducible(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        fig, _ = figures.get(4).draw(*make_runs("depth"))
        figures.save(fig, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


@specs()
def test_point_whose_runs_all_diverged_without_accuracy_is_missing(spec, tmp_path):
    runs, _ = make_runs(spec.study)
    first = grid(spec.study)[0][0]
    hit = np.logical_and.reduce([runs[k] == v for k, v in first.items()])
    runs.loc[hit, ["status", "test_acc", "train_acc"]] = ["diverged", np.nan, np.nan]
    fig, frame = spec.draw(runs, make_metrics(runs))
    missing = frame[np.logical_and.reduce([frame[k] == v for k, v in first.items()])]
    assert (missing["n"] == 0).all() and missing["mean"].isna().all()
    figures.save(fig, tmp_path / "diverged.png")


def test_figures_module_stays_off_the_database_and_pyplot():
    tree = ast.parse(Path(figures.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    banned = ("sqlalchemy", "torch", "ablate.store", "matplotlib.pyplot")
    assert not [m for m in imported if m.startswith(banned)]
