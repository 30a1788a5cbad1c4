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
EPOCHS = (1, 2, 3)

# The swept config keys of each study that has a figure; a new study needs a line here.
AXES = {
    "smoke": {"model.depth": [1, 2, 3], "model.activation": ["relu", "gelu"]},
    "kernel": {"model.kernel_size.0": [3, 5, 7], "model.kernel_size.1": [3, 5, 7]},
    "channels": {"model.channels.0": [16, 32, 64], "model.channels.1": [32, 64, 128]},
    "depth": {"model.depth": [2, 3, 4, 5]},
    "activation": {"model.activation": ["relu", "leaky_relu", "elu", "mish"]},
    "dropout": {"model.dropout": [0.0, 0.1, 0.3, 0.5]},
    "batchnorm": {"model.batchnorm": [False, True]},
    "resblock": {"model.block": ["original", "bn_after_add", "act_before_add", "act_preact", "preact"]},
    "optimizer": {"optimizer.name": ["sgd", "adam", "adadelta"]},
    "augmentation": {"data.aug.crop_padding": [0, 4], "data.aug.flip": [False, True], "data.aug.cutout": [0, 8]},
}
BASE = {
    "model.name": "plain_cnn",
    "model.depth": 2,
    "model.activation": "relu",
    "model.dropout": 0.0,
    "model.kernel_size.0": 3,
    "model.kernel_size.1": 3,
    "model.channels.0": 32,
    "model.channels.1": 64,
    "model.batchnorm": False,
    "model.block": "original",
    "optimizer.name": "sgd",
    "optimizer.lr": 0.05,
    "optimizer.decay_weights_only": False,
    "data.aug.crop_padding": 0,
    "data.aug.flip": False,
    "data.aug.cutout": 0,
    "epochs": 3,
}


def implied(study, point):
    """Config keys that move with a swept one in the real study file."""
    if study == "batchnorm":
        return {"model.depth": 5}
    if study == "optimizer":  # the report's "MyAdaDelta" leaves biases out of weight decay
        return {"optimizer.decay_weights_only": point["optimizer.name"] == "adadelta"}
    return {}


# Probes and artifacts, as closed forms of a run's test accuracy: a mean over seeds of
# a form is the form at the mean, and a wrong run leaking in shows.
RELGRAD_STEPS = range(20, 201, 20)
LANDSCAPE_STEPS = range(50, 501, 50)
MULTIPLES = (0, 0.25, 0.5, 1, 2, 4)
KERNELS_OUT = 12  # first-layer kernels per run: a grid row and a half
PATTERN = {  # one unit-norm [3, k, k] kernel shape per size; kernel j is acc * (j + 1) * it
    k: (lambda a: a / np.linalg.norm(a))(np.random.default_rng(k).normal(size=(3, k, k))) for k in (1, 3, 5, 7)
}


def relgrad(acc, layer, step):
    return acc * 10.0 ** (1 - layer) * (1 + 0.5 * (step // 20 % 3))


def landscape(acc, batchnorm, multiple, step):
    """Lowest at a step of 1 x lr, highest at 4 x; without batch norm the range is wide."""
    return acc * (1 + (multiple - 1) ** 2 * (0.05 if batchnorm else 3.0)) * (1 + step / 1000)


def grid(study):
    """Every grid point of ``study`` as a dict of swept keys, with its known mean accuracy."""
    axes = AXES[study]
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return [(point, 0.40 + 0.03 * i) for i, point in enumerate(points)]


def make_runs(study, points=None, seeds=SEEDS, status="complete"):
    """A ``runs`` frame as the store builds it, for known means; ``data`` adds the rest."""
    rows = []
    for point, mean in points if points is not None else grid(study):
        for seed in seeds:
            acc = mean + (SPREAD if seed == 0 else -SPREAD) if len(seeds) > 1 else mean
            rows.append(
                {
                    "study": study,
                    "status": status,
                    "seed": seed,
                    "config_hash": "h",
                    "epochs_done": 3,
                    "test_acc": acc,
                    "test_loss": 1.0,
                    "train_acc": acc + TRAIN_GAP,
                    "train_loss": 0.9,
                    "wall_s": 1.0,
                    "device": "cpu",
                    **BASE,
                    **implied(study, point),
                    **point,
                }
            )
    runs = pd.DataFrame(rows)
    runs.insert(0, "run_id", range(1, len(runs) + 1))
    return runs


def make_metrics(runs):
    """Per-epoch metrics for every run; the probes its study records, at training steps."""
    rows = []
    for r in runs.to_dict("records"):
        acc = r["test_acc"]
        for step in EPOCHS:
            rows += [(r["run_id"], step, "test_acc", acc), (r["run_id"], step, "train_loss", 1.0 / step)]
        if r["study"] in ("depth", "batchnorm"):
            rows += [
                (r["run_id"], step, f"relgrad.conv{layer}", relgrad(acc, layer, step))
                for step in RELGRAD_STEPS
                for layer in range(1, r["model.depth"] + 1)
            ]
        if r["study"] == "batchnorm":
            rows += [
                (r["run_id"], step, f"landscape.x{m:g}", landscape(acc, r["model.batchnorm"], m, step))
                for step in LANDSCAPE_STEPS
                for m in MULTIPLES
            ]
    return pd.DataFrame(rows, columns=["run_id", "step", "name", "value"])


def make_artifacts(runs):
    """First-layer kernels of every run, float32 as the trainer keeps them."""
    out = {}
    for r in runs.to_dict("records"):
        pattern = PATTERN[r["model.kernel_size.0"]]
        scale = r["test_acc"] * np.arange(1, KERNELS_OUT + 1)[:, None, None, None]
        out[r["run_id"]] = {"kernels.conv1": (scale * pattern).astype(np.float32)}
    return out


def data(runs):
    """What report.py hands a figure: runs, their metrics and their artifacts."""
    return runs, make_metrics(runs), make_artifacts(runs)


def with_extra(runs, extra):
    extra = extra.copy()
    extra["run_id"] = range(runs["run_id"].max() + 1, runs["run_id"].max() + 1 + len(extra))
    return pd.concat([runs, extra], ignore_index=True)


def expected(study, frame_row, point_means):
    """The mean a frame row should hold: test accuracy, or train accuracy for a train series."""
    keys = tuple(frame_row[k] for k in AXES[study])
    gap = TRAIN_GAP if frame_row.get("series") == "train" else 0.0
    return point_means[keys] + gap


def check_summary(spec, frame, runs, points, n):
    """An accuracy figure: one row per grid point (and series) with its mean over seeds."""
    axes = list(AXES[spec.study])
    assert set(axes + ["mean", "ci_low", "ci_high", "n"]) <= set(frame.columns)
    means = {tuple(p[k] for k in axes): m for p, m in points}
    series = frame["series"].nunique() if "series" in frame else 1
    assert len(frame) == len(points) * series
    for _, row in frame.iterrows():
        assert row["mean"] == pytest.approx(expected(spec.study, row, means))
        assert row["n"] == n
    if n == 2:  # two seeds at mean +- SPREAD: sd = SPREAD * sqrt(2), half-width t * SPREAD
        half = frame["ci_high"] - frame["mean"]
        assert half.to_numpy() == pytest.approx(T_975_1 * SPREAD)


def mean_where(points, column, value):
    return next(m for p, m in points if p[column] == value)


def check_kernel_images(spec, frame, runs, points, n):
    # the 7x7 + 7x7 run of the lowest seed, a finished one, whose kernels are known
    run = runs.set_index("run_id").loc[frame["run_id"].unique().item()]
    finished = runs[runs["status"].isin(figures.RESULT_STATUSES)]
    assert run["status"] in figures.RESULT_STATUSES and run["seed"] == finished["seed"].min()
    assert (run["model.kernel_size.0"], run["model.kernel_size.1"]) == (7, 7)
    scale = run["test_acc"] * np.arange(1, KERNELS_OUT + 1)
    assert list(frame["kernel"]) == list(range(KERNELS_OUT))
    assert frame["norm"].to_numpy() == pytest.approx(scale, rel=1e-5)
    assert frame["min"].to_numpy() == pytest.approx(scale * PATTERN[7].min(), rel=1e-5)
    assert frame["max"].to_numpy() == pytest.approx(scale * PATTERN[7].max(), rel=1e-5)


def check_relgrad(column, value):
    def check(spec, frame, runs, points, n):
        mean = mean_where(points, column, value)
        assert sorted(frame["layer"].unique()) == [1, 2, 3, 4, 5]  # one line per conv layer
        assert len(frame) == 5 * len(RELGRAD_STEPS)
        for row in frame.itertuples():
            assert row.value == pytest.approx(relgrad(mean, row.layer, row.step))
            assert row.n == n

    return check


def check_landscape(spec, frame, runs, points, n):
    assert set(frame["model.batchnorm"]) == {p["model.batchnorm"] for p, _ in points}
    assert len(frame) == len(points) * len(LANDSCAPE_STEPS)
    for _, row in frame.iterrows():
        mean = mean_where(points, "model.batchnorm", row["model.batchnorm"])
        # low and high are the min and max over the multiples, before smoothing
        values = [landscape(mean, row["model.batchnorm"], m, row["step"]) for m in MULTIPLES]
        assert (row["low"], row["high"]) == pytest.approx((min(values), max(values)))
        assert row["n"] == n


def check_history(column):
    def check(spec, frame, runs, points, n):
        assert {column, "label", "metric", "epoch", "mean", "ci_low", "ci_high", "n"} <= set(frame.columns)
        assert len(frame) == len(points) * 2 * len(EPOCHS)
        assert list(pd.unique(frame[column])) == [p[column] for p, _ in points]  # the study's order
        acc, loss = frame[frame["metric"] == "test_acc"], frame[frame["metric"] == "train_loss"]
        for _, row in acc.iterrows():
            assert row["mean"] == pytest.approx(mean_where(points, column, row[column]))
        assert loss["mean"].to_numpy() == pytest.approx(1.0 / loss["epoch"].to_numpy())
        assert (frame["n"] == n).all()
        if n == 2:
            half = acc["ci_high"] - acc["mean"]
            assert half.to_numpy() == pytest.approx(T_975_1 * SPREAD)

    return check


def check_cutout(spec, frame, runs, points, n):
    # crop+flip against crop+flip+cutout: the finished runs of those two points, no others
    finished = runs[runs["status"].isin(figures.RESULT_STATUSES)]
    crop_flip = finished[(finished["data.aug.crop_padding"] == 4) & finished["data.aug.flip"]]
    by_run = runs.set_index("run_id")
    for setting, cut in (("with Cutout", True), ("without Cutout", False)):
        part = frame[frame["setting"] == setting]
        want = crop_flip[(crop_flip["data.aug.cutout"] > 0) == cut]["run_id"]
        assert sorted(part["run_id"].unique()) == sorted(want) and len(want) == n
        for run_id, kernels in part.groupby("run_id"):
            scale = by_run.loc[run_id, "test_acc"] * np.arange(1, KERNELS_OUT + 1)
            assert kernels["norm"].to_numpy() == pytest.approx(scale, rel=1e-5)


# How to check each figure's frame against the synthetic data; a new figure needs a line.
CHECKS = {
    0: check_summary,
    1: check_summary,
    2: check_kernel_images,
    3: check_summary,
    4: check_summary,
    5: check_relgrad("model.depth", 5),
    6: check_summary,
    7: check_relgrad("model.batchnorm", True),
    8: check_landscape,
    9: check_summary,
    10: check_history("model.block"),
    11: check_history("optimizer.name"),
    12: check_cutout,
}


def check_frame(spec, frame, runs, points, n=len(SEEDS)):
    CHECKS[spec.number](spec, frame, runs, points, n)


def specs(accuracy_only=False):
    every = [s for s in FIGURES.values() if not accuracy_only or CHECKS.get(s.number) is check_summary]
    return pytest.mark.parametrize("spec", every, ids=lambda s: f"figure-{s.number}")


@specs()
def test_every_figure_has_synthetic_axes(spec):
    assert spec.study in AXES, f"add the swept keys of study {spec.study!r} to AXES"
    assert spec.number in CHECKS, f"add a check of figure {spec.number}'s frame to CHECKS"
    assert spec.caption and figures.get(spec.number) is spec


@specs()
def test_draw_plots_the_known_numbers(spec, tmp_path):
    runs = make_runs(spec.study)
    fig, frame = spec.draw(*data(runs))
    assert isinstance(fig, Figure)
    check_frame(spec, frame, runs, grid(spec.study))
    assert fig._suptitle.get_text().replace("\n", " ") == f"Figure {spec.number}: {spec.caption}"
    frame.to_csv(tmp_path / "figure.csv", index=False)  # the frame must be writable as is


@specs()
def test_unfinished_and_failed_runs_are_ignored(spec):
    runs = make_runs(spec.study)
    # wildly wrong numbers (in metrics and artifacts too), so any that leak in show
    for status in ("failed", "pending", "running"):
        extra = make_runs(spec.study, status=status)
        extra["test_acc"] = 0.99 if status != "pending" else np.nan
        runs = with_extra(runs, extra)
    _, frame = spec.draw(*data(runs))
    check_frame(spec, frame, runs, grid(spec.study))


@specs()
def test_diverged_runs_count_as_results(spec):
    runs = make_runs(spec.study)
    extra = make_runs(spec.study, seeds=(2,), status="diverged")  # one more seed at the mean
    runs = with_extra(runs, extra)
    _, frame = spec.draw(*data(runs))
    check_frame(spec, frame, runs, grid(spec.study), n=3)


@specs()
def test_partial_grid_and_single_seed(spec, tmp_path):
    points = grid(spec.study)[1:]  # the first grid point never ran
    if not points:
        pytest.skip("study has a single grid point")
    runs = make_runs(spec.study, points=points, seeds=(0,))
    fig, frame = spec.draw(*data(runs))
    check_frame(spec, frame, runs, points, n=1)
    if "ci_low" in frame:
        assert frame["ci_low"].isna().all()  # one seed has no interval
    # Saving lays the figure out and renders it: a partial grid and NaN intervals must draw.
    path = tmp_path / f"figure-{spec.number:02d}.png"
    figures.save(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@specs()
def test_no_results_is_a_clear_error(spec):
    runs = make_runs(spec.study, status="pending")
    with pytest.raises(ValueError, match=spec.study):
        spec.draw(*data(runs))


def heatmap_cell(fig, row, col):
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    return ax.images[0].get_array()[rows.index(str(row)), cols.index(str(col))]


def test_kernel_heatmap_cell_holds_its_mean():
    fig, frame = figures.get(1).draw(*data(make_runs("kernel")))
    means = {(p["model.kernel_size.0"], p["model.kernel_size.1"]): m for p, m in grid("kernel")}
    assert heatmap_cell(fig, 3, 5) == pytest.approx(means[(3, 5)])
    cell = frame[(frame["model.kernel_size.0"] == 3) & (frame["model.kernel_size.1"] == 5)]
    assert cell["mean"].item() == pytest.approx(means[(3, 5)])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert f"{100 * means[(3, 5)]:.1f}%" in texts  # in percent, as the colour bar reads


def test_heatmap_missing_cell_is_blank():
    cell = {"model.channels.0": 32, "model.channels.1": 64}
    points = [(p, m) for p, m in grid("channels") if p != cell]
    fig, frame = figures.get(3).draw(*data(make_runs("channels", points=points)))
    assert np.ma.is_masked(heatmap_cell(fig, 32, 64))
    assert len(fig.axes[0].texts) == len(points)  # no annotation on the blank cell
    assert len(frame) == len(points)


def test_activation_bars_keep_the_study_order():
    _, frame = figures.get(6).draw(*data(make_runs("activation")))
    assert list(frame["model.activation"]) == AXES["activation"]["model.activation"]


def test_depth_figure_has_test_and_train_series():
    fig, frame = figures.get(4).draw(*data(make_runs("depth")))
    assert set(frame["series"]) == {"test", "train"}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["test", "train"]


def test_get_unknown_figure_lists_known_numbers():
    with pytest.raises(KeyError, match="known figures: 0, 1, 2, 3"):
        figures.get(99)


def test_registering_a_number_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        figures.figure(1, "kernel", "again")(lambda runs, metrics, artifacts: None)


def test_save_is_reproducible(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        fig, _ = figures.get(4).draw(*data(make_runs("depth")))
        figures.save(fig, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


@specs(accuracy_only=True)
def test_point_whose_runs_all_diverged_without_accuracy_is_missing(spec, tmp_path):
    runs = make_runs(spec.study)
    first = grid(spec.study)[0][0]
    hit = np.logical_and.reduce([runs[k] == v for k, v in first.items()])
    runs.loc[hit, ["status", "test_acc", "train_acc"]] = ["diverged", np.nan, np.nan]
    fig, frame = spec.draw(*data(runs))
    missing = frame[np.logical_and.reduce([frame[k] == v for k, v in first.items()])]
    assert (missing["n"] == 0).all() and missing["mean"].isna().all()
    figures.save(fig, tmp_path / "diverged.png")


def test_figures_module_stays_off_the_database_and_pyplot():
    tree = ast.parse(Path(figures.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    banned = ("sqlalchemy", "torch", "ablate.store", "matplotlib.pyplot")
    assert not [m for m in imported if m.startswith(banned)]


# ------------------------------------------------------------------ the probe and artifact figures


def test_draw_gets_only_the_artifacts_of_result_runs(monkeypatch):
    monkeypatch.setattr(figures, "FIGURES", {})
    seen = {}

    @figures.figure(1, "kernel", "spy")
    def spy(runs, metrics, artifacts):
        seen.update(runs=set(runs["run_id"]), metrics=set(metrics["run_id"]), artifacts=set(artifacts))
        return Figure(), pd.DataFrame()

    runs = with_extra(make_runs("kernel"), make_runs("kernel", status="failed"))
    figures.get(1).draw(*data(runs))
    done = set(runs.loc[runs["status"] == "complete", "run_id"])
    assert seen == {"runs": done, "metrics": done, "artifacts": done}
    figures.get(1).draw(runs, make_metrics(runs))  # artifacts may be left out: none kept


def test_kernel_mosaic_scales_each_kernel_and_lays_them_out_in_rows():
    weights = np.random.default_rng(0).normal(size=(10, 3, 2, 2))
    weights[9] = 1.5  # a constant kernel has no range: mid grey
    mosaic = figures.kernel_mosaic(weights, columns=8)
    assert mosaic.shape == (2 * 3 - 1, 8 * 3 - 1, 3)  # two rows of 2x2 kernels, 1-pixel gaps
    w = weights[1]
    assert mosaic[0:2, 3:5] == pytest.approx(((w - w.min()) / (w.max() - w.min())).transpose(1, 2, 0))
    assert mosaic[3:5, 3:5] == pytest.approx(0.5)  # kernel 9: second row, second column
    assert (mosaic[2] == 1.0).all() and (mosaic[:, 2] == 1.0).all()  # white gaps
    assert (mosaic[3:5, 6:] == 1.0).all()  # the unfilled end of the last row


def test_kernel_figure_shows_the_chosen_runs_kernels():
    runs = make_runs("kernel")
    fig, frame = figures.get(2).draw(*data(runs))
    (image,) = fig.axes[0].images
    kernels = make_artifacts(runs)[frame["run_id"].iloc[0]]["kernels.conv1"]
    assert np.asarray(image.get_array()) == pytest.approx(figures.kernel_mosaic(kernels.astype(float)))
    assert not fig.axes[0].axison  # no ticks on a picture


def test_kernel_figure_takes_another_second_layer_size_when_7x7_did_not_run():
    points = [({"model.kernel_size.0": 7, "model.kernel_size.1": k}, 0.5) for k in (5, 3)]
    runs = make_runs("kernel", points=points)
    _, frame = figures.get(2).draw(*data(runs))
    run = runs.set_index("run_id").loc[frame["run_id"].iloc[0]]
    assert (run["model.kernel_size.1"], run["seed"]) == (5, 0)  # the first in run order, seed 0


def test_relgrad_lines_are_smoothed_per_layer_on_a_log_scale():
    fig, frame = figures.get(5).draw(*data(make_runs("depth")))
    layer = frame[frame["layer"] == 3].reset_index(drop=True)
    window = figures.SMOOTH_RELGRAD
    i = len(layer) // 2  # a point whose whole centred window is recorded
    assert layer["smoothed"][i] == pytest.approx(layer["value"][i - window // 2 : i + window // 2 + 1].mean())
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"conv{i}" for i in range(1, 6)]
    # the subtitle names seeds, never a database id, and says what the faint and bold lines are
    title = ax.get_title()
    assert "run " not in title and "mean of 2 seeds" in title
    assert f"bold: rolling mean of {window} probes" in title and "faint: every probe" in title


def test_landscape_bands_go_log_when_their_ranges_differ_a_lot():
    fig, frame = figures.get(8).draw(*data(make_runs("batchnorm")))
    assert fig.axes[0].get_yscale() == "log"  # without BN the band spans 28x
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["without BN", "with BN"]
    assert {"low_smoothed", "high_smoothed"} <= set(frame.columns)
    with_bn = [({"model.batchnorm": True}, 0.5)]
    fig, _ = figures.get(8).draw(*data(make_runs("batchnorm", points=with_bn)))
    assert fig.axes[0].get_yscale() == "linear"


def legend_texts(fig):
    """The history figures' legend: inside the train-loss panel, not beside the figure."""
    assert fig.legends == []
    return [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_history_figures_name_blocks_and_optimizers_as_the_report_does():
    fig, _ = figures.get(10).draw(*data(make_runs("resblock")))
    assert legend_texts(fig) == [
        "Original",
        "BN after addition",
        "ReLU before addition",
        "ReLU-only pre-activation",
        "Full pre-activation",
    ]
    assert len(fig.axes) == 2  # test accuracy and train loss
    fig, frame = figures.get(11).draw(*data(make_runs("optimizer")))
    assert legend_texts(fig) == ["SGD", "Adam", "MyAdaDelta (no decay on biases)"]
    assert frame.loc[frame["optimizer.name"] == "adadelta", "label"].unique().item().startswith("MyAdaDelta")


def test_cutout_compares_runs_that_differ_only_in_cutout():
    def point(crop, flip, cut):
        return {"data.aug.crop_padding": crop, "data.aug.flip": flip, "data.aug.cutout": cut}

    # no crop+flip pair, but a pair with no other augmentation: that one
    points = [(point(0, False, 0), 0.5), (point(0, False, 8), 0.6), (point(4, True, 0), 0.7)]
    runs = make_runs("augmentation", points=points, seeds=(0,))
    fig, frame = figures.get(12).draw(*data(runs))
    assert sorted(frame["run_id"].unique()) == [1, 2]
    assert fig.axes[0].get_title() == "no other augmentation; cutout 8 or none"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["without Cutout", "with Cutout"]
    # the subtitle names the settings as a reader says them, not their keys at default values
    both = [
        (dict(point(4, True, 0), **{"data.aug.flip_mode": "random", "data.aug.pad_mode": "zeros"}), 0.5),
        (dict(point(4, True, 8), **{"data.aug.flip_mode": "random", "data.aug.pad_mode": "zeros"}), 0.6),
    ]
    fig, _ = figures.get(12).draw(*data(make_runs("augmentation", points=both, seeds=(0,))))
    assert fig.axes[0].get_title() == "crop 4, flip; cutout 8 or none"

    # no pair at all: every run with cutout against every run without
    runs = make_runs("augmentation", points=[points[1], points[2]], seeds=(0,))
    fig, frame = figures.get(12).draw(*data(runs))
    assert set(frame.groupby("setting")["run_id"].unique().map(tuple)) == {(1,), (2,)}
    assert "every run" in fig.axes[0].get_title()


def drop_metrics(prefix):
    def drop(runs, metrics, artifacts):
        return runs, metrics[~metrics["name"].str.startswith(prefix)], artifacts

    return drop


def drop_artifacts(runs, metrics, artifacts):
    return runs, metrics, {}


def only_points(**wanted):
    def keep(runs, metrics, artifacts):
        hit = np.logical_and.reduce([runs[k] == v for k, v in wanted.items()])
        return runs[hit], metrics, artifacts

    return keep


def without_points(**unwanted):
    def keep(runs, metrics, artifacts):
        hit = np.logical_and.reduce([runs[k] == v for k, v in unwanted.items()])
        return runs[~hit], metrics, artifacts

    return keep


@pytest.mark.parametrize(
    "number, spoil, missing",
    [
        (2, without_points(**{"model.kernel_size.0": 7}), "model.kernel_size.0 == 7"),
        (2, drop_artifacts, "no 'kernels.conv1' artifact"),
        (5, without_points(**{"model.depth": 5}), "model.depth == 5"),
        (
            5,
            drop_metrics("relgrad"),
            "no relgrad.conv.* metrics .*grad_norm_every must be > 0 and at most a run.s training steps",
        ),
        (7, only_points(**{"model.batchnorm": False}), "model.batchnorm == True"),
        (7, drop_metrics("relgrad"), "no relgrad.conv"),
        (
            8,
            drop_metrics("landscape"),
            "no landscape.x.* metrics .*landscape_every must be > 0 and at most a run.s training steps",
        ),
        (10, drop_metrics(""), "no per-epoch test_acc"),
        (11, drop_metrics(""), "no per-epoch test_acc"),
        (12, only_points(**{"data.aug.cutout": 0}), "with cutout .* all 8 are without"),
        (12, drop_artifacts, "no 'kernels.conv1' artifact .*probes.kernels"),
    ],
)
def test_missing_pieces_are_named(number, spoil, missing):
    spec = figures.get(number)
    with pytest.raises(ValueError, match=f"figure {number} .*{missing}"):
        spec.draw(*spoil(*data(make_runs(spec.study))))


def test_bar_labels_are_percentages_in_the_figures_sans_serif_font():
    """Figure 6's bar labels (issue 14, item 16): "%" and the figures' font, not a serif fallback."""
    import matplotlib
    from matplotlib import font_manager

    with matplotlib.rc_context({"font.family": "serif"}):  # a user's matplotlibrc may say so
        fig, frame = figures.get(6).draw(*data(make_runs("activation")))
    labels = fig.axes[0].texts
    assert len(labels) == len(frame)
    for text, mean in zip(labels, frame["mean"]):
        assert text.get_text() == f"{100 * mean:.1f}%"
        assert text.get_fontfamily() == [figures.RC["font.family"]]
        assert "DejaVuSans" in Path(font_manager.findfont(text.get_fontproperties())).name


def test_chance_level_is_drawn_where_accuracies_come_near_it():
    """A point at 12% is guessing, not a weak result: the axis shows the 10% line beside it.
    Points far above chance leave the axis as it was."""

    def dashed(ax):
        return [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]

    near = pd.DataFrame(
        {"model.dropout": [0.0, 0.5], "mean": [0.6, 0.12], "ci_low": [np.nan] * 2, "ci_high": [np.nan] * 2, "n": [1, 1]}
    )
    ax = Figure().subplots()
    figures.accuracy_lines(ax, near, "model.dropout")
    (line,) = dashed(ax)
    assert list(line.get_ydata()) == [figures.CHANCE] * 2 and ax.get_ylim()[0] <= figures.CHANCE
    far = near.assign(mean=[0.6, 0.7])
    ax = Figure().subplots()
    figures.accuracy_bars(ax, far.assign(**{"model.dropout": ["a", "b"]}), "model.dropout")
    assert dashed(ax) == []


def test_the_figure_numbers_a_study_file_may_name_are_the_registered_ones():
    from ablate.studies import FIGURE_NUMBERS

    assert sorted(FIGURE_NUMBERS) == sorted(figures.FIGURES)
