import pytest

from ablate.config import ConfigError
from ablate.studies import StudyError, expand, list_studies, load, parse, study_files

BUILTIN = [
    "activation",
    "augment_extra",
    "augmentation",
    "batchnorm",
    "best",
    "bn_lr",
    "channels",
    "cutout18",
    "deepmish",
    "densenet",
    "depth",
    "downsample12",
    "downsample18",
    "dropout",
    "fast",
    "fast_sgd",
    "kernel",
    "loss",
    "mish18",
    "optimizer",
    "ranger",
    "relu_lr",
    "resblock",
    "resblock18",
    "smoke",
    "speed",
]


def test_builtin_studies_ship_with_the_package():
    assert set(BUILTIN) <= set(study_files())


@pytest.mark.parametrize("name", sorted(study_files()))
def test_every_study_loads_and_expands(name):
    study = load(name)
    points = expand(study)
    assert len(points) == study.size * study.seeds
    assert len({(p.config_hash, p.seed) for p in points}) == len(points)
    assert study.description
    # Each feeds the report: a figure, the results table (recipes) or the Claims table.
    assert (
        study.figures or study.reported or study.claims or name in ("speedrun", "speedrun_legacy", "fast_sgd")
    )  # beside the report


@pytest.mark.parametrize("name", sorted(study_files()))
def test_every_study_runs_shortened_to_two_epochs(name):
    # `ablate run all --epochs 4` (and a GPU window's suite) shortens every study at once.
    points = expand(load(name), [("epochs", 2)])
    assert {p.config.epochs for p in points} == {2}


def test_a_shortened_recipe_switches_optimizer_at_the_same_fraction():
    study = load("best")  # Adam for 75 of 150 epochs, then SGD
    assert study.base["epochs"] == 150 and study.base["switch"]["at_epoch"] == 75
    assert [p.config.switch.at_epoch for p in expand(study, [("epochs", 4)])] == [2]
    assert [p.config.switch.at_epoch for p in expand(study, [("epochs", 2)])] == [1]
    assert [p.config.switch.at_epoch for p in expand(study, [("epochs", 300)])] == [150]
    named = expand(study, [("epochs", 4), ("switch.at_epoch", 3)])  # said outright, it stands
    assert [p.config.switch.at_epoch for p in named] == [3]
    with pytest.raises(ConfigError, match=r"--epochs 1 leaves no room for both phases"):
        expand(study, [("epochs", 1)])
    assert [p.config.switch.at_epoch for p in expand(study, [("epochs", 1), ("switch.at_epoch", 0)])] == [0]


def test_grid_is_the_product_of_the_axes_times_seeds():
    study = load("kernel")
    points = expand(study, seeds=2)
    assert len(points) == 16 * 2
    assert {tuple(p.config.model.args["kernel_size"]) for p in points} == {
        (a, b) for a in (1, 3, 5, 7) for b in (1, 3, 5, 7)
    }
    assert {p.seed for p in points} == {0, 1}


def test_points_store_the_models_resolved_defaults():
    point = expand(load("depth"))[0]
    assert point.config.model.args["activation"] == "relu"
    assert point.config.model.args["batchnorm"] is False


def test_overrides_apply_to_every_point_and_change_the_hash():
    study = load("smoke")
    plain = expand(study)
    changed = expand(study, [("optimizer.lr", 0.2), ("epochs", 1)])
    assert all(p.config.optimizer.lr == 0.2 and p.config.epochs == 1 for p in changed)
    assert {p.config_hash for p in plain}.isdisjoint({p.config_hash for p in changed})


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("optimizer.lrr", 0.1, "optimizer.lrr"),
        ("nothing.here", 1, "unknown config key 'nothing.here'"),
        ("optimizer.lr", "fast", "optimizer.lr must be a number"),
        ("model.depth", 3, "is an axis"),
        ("model.widht", 3, "model.widht"),
        ("data.train_subset", 10, "unknown config key 'data.train_subset'"),
    ],
)
def test_bad_overrides_are_refused(key, value, fragment):
    with pytest.raises(ConfigError) as e:
        expand(load("depth"), [(key, value)])
    assert fragment in str(e.value)


def test_data_train_subset_override():
    points = expand(load("depth"), [("train_subset", 500)])
    assert all(p.config.train_subset == 500 for p in points)


def test_study_file_by_path_and_local_directory(tmp_path):
    text = 'description = "d"\nfigures = []\n[base]\nepochs = 1\n[axes]\n"optimizer.lr" = [0.1, 0.2]\n'
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert load(str(path)).name == "mine" and load(str(path)).size == 2
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "local.toml").write_text(text)  # cwd is tmp_path in tests
    assert load("local").size == 2 and "local" in [s.name for s in list_studies()]


def test_invalid_study_files_name_path_and_line(tmp_path):
    with pytest.raises(StudyError, match=r"x.toml: invalid TOML.*line 2"):
        parse("description = 'ok'\nthis is not toml\n", tmp_path / "x.toml")
    with pytest.raises(StudyError, match=r"y.toml \(line 3\): unknown config key 'optimizer.lrr'"):
        parse("description = 'd'\n[base]\noptimizer = { lrr = 1 }\n", tmp_path / "y.toml")
    with pytest.raises(StudyError, match="non-empty list"):
        parse("[axes]\n'epochs' = []\n", tmp_path / "z.toml")


def test_unknown_study_lists_the_known_ones():
    with pytest.raises(StudyError, match="unknown study 'nope'; known studies: .*depth"):
        load("nope")


def test_table_valued_axes_merge_or_replace(tmp_path):
    text = (
        'description = "d"\nfigures = []\n[base]\nepochs = 1\n'
        'optimizer = { name = "sgd", lr = 0.1, weight_decay = 0.001 }\n'
        'model = { name = "plain_cnn", depth = 2 }\n'
        "[axes]\n"
        'optimizer = [{ lr = 0.2 }, { name = "adam", lr = 0.001 }]\n'
        'model = [{ width = 8 }, { name = "resnet" }]\n'
    )
    study = parse(text, tmp_path / "t.toml")
    points = expand(study)
    by = {(p.config.optimizer.name, p.config.model.name): p for p in points}
    sgd = by[("sgd", "plain_cnn")].config
    assert sgd.optimizer.lr == 0.2 and sgd.optimizer.weight_decay == 0.001  # merged into the base
    assert sgd.model.args["depth"] == 2 and sgd.model.args["width"] == 8
    adam = by[("adam", "resnet")].config
    assert adam.optimizer.weight_decay == 5e-4  # a new name starts from the defaults
    assert "depth" in adam.model.args and adam.model.args != sgd.model.args
    assert by[("adam", "resnet")].label == "optimizer={name=adam,lr=0.001} model={name=resnet}"
