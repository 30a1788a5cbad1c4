import pytest

from ablate.config import (
    ConfigError,
    RunConfig,
    config_hash,
    flatten,
    from_dict,
    get_key,
    merge,
    parse_assignment,
    set_key,
    to_dict,
)


def test_round_trip_through_dict():
    cfg = from_dict({"epochs": 3, "optimizer": {"lr": 0.1}, "model": {"name": "plain_cnn", "depth": 4}})
    assert cfg.epochs == 3 and cfg.optimizer.lr == 0.1 and cfg.model.args == {"depth": 4}
    assert from_dict(to_dict(cfg)) == cfg


def test_defaults_fill_missing_keys():
    assert from_dict({}) == RunConfig()


@pytest.mark.parametrize(
    "d, fragment",
    [
        ({"optimzer": {}}, "unknown config key 'optimzer'"),
        ({"optimizer": {"lrr": 1}}, "unknown config key 'optimizer.lrr'"),
        ({"epochs": "ten"}, "epochs must be an integer"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"optimizer": {"lr": -0.1}}, "optimizer.lr must be >0"),
        ({"optimizer": {"name": "lion"}}, "optimizer.name must be one of sgd, adam, adamw"),
        ({"data": {"aug": {"flip": 1}}}, "data.aug.flip must be true or false"),
        ({"loss": {"label_smoothing": 1.5}}, "loss.label_smoothing must be in [0.0, 1.0]"),
    ],
)
def test_bad_values_are_refused_by_name(d, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        from_dict(d)
    assert fragment in str(e.value)


def test_ints_are_accepted_for_floats_but_not_the_reverse():
    assert from_dict({"optimizer": {"lr": 1}}).optimizer.lr == 1.0
    with pytest.raises(ConfigError):
        from_dict({"epochs": 2.5})


def test_hash_ignores_seed_and_sees_everything_else():
    a = from_dict({"seed": 0})
    assert config_hash(a) == config_hash(from_dict({"seed": 7}))
    assert config_hash(a) != config_hash(from_dict({"optimizer": {"lr": 0.01}}))
    assert config_hash(a) != config_hash(from_dict({"model": {"depth": 5}}))


def test_hash_is_independent_of_key_order():
    a = from_dict({"optimizer": {"lr": 0.1, "name": "adam"}, "epochs": 2})
    b = from_dict({"epochs": 2, "optimizer": {"name": "adam", "lr": 0.1}})
    assert config_hash(a) == config_hash(b)


def test_assignments_parse_toml_values():
    assert parse_assignment("optimizer.lr=0.05") == ("optimizer.lr", 0.05)
    assert parse_assignment("data.aug.flip=true") == ("data.aug.flip", True)
    assert parse_assignment("model.kernel_size=[3, 5]") == ("model.kernel_size", [3, 5])
    assert parse_assignment("model.activation=gelu") == ("model.activation", "gelu")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("epochs")


def test_set_key_indexes_lists_and_copies():
    d = {"model": {"kernel_size": [3, 3]}}
    out = set_key(d, "model.kernel_size.1", 7)
    assert out["model"]["kernel_size"] == [3, 7] and d["model"]["kernel_size"] == [3, 3]
    with pytest.raises(ConfigError, match="out of range"):
        set_key(d, "model.kernel_size.2", 7)


def test_flatten_uses_dotted_keys():
    assert flatten({"a": {"b": 1, "c": [2, 3]}}) == {"a.b": 1, "a.c.0": 2, "a.c.1": 3}


# Each message in full: it is all the user sees of a bad value (one line, exit code 2).
MESSAGES = [
    ({"epochs": "ten"}, "epochs must be an integer, got 'ten'"),
    ({"train_subset": "all"}, "train_subset must be an integer or none, got 'all'"),
    ({"optimizer": {"betas": 0.9}}, "optimizer.betas must be a list, got 0.9"),
    ({"optimizer": {"betas": [0.9]}}, "optimizer.betas must have 2 items, got [0.9]"),
    ({"optimizer": {"betas": [0.9, "x"]}}, "optimizer.betas.1 must be a number, got 'x'"),
    ({"probes": {"landscape_steps": [0.5, "x"]}}, "probes.landscape_steps.1 must be a number, got 'x'"),
    ({"optimizer": {"name": 3}}, "optimizer.name must be a string, got 3"),
    ({"data": {"aug": {"flip": 1}}}, "data.aug.flip must be true or false, got 1"),
    ({"model": {"name": 3}}, "model.name must be a string, got 3"),
    ({"data": {"aug": 5}}, "data.aug must be a table of keys, got 5"),
    (
        {"optimizer": {"lrr": 1}},
        "unknown config key 'optimizer.lrr'; accepted here: optimizer.betas, "
        "optimizer.decay_weights_only, optimizer.lr, optimizer.momentum, optimizer.muon, optimizer.name, "
        "optimizer.nesterov, optimizer.weight_decay",
    ),
    ({"optimizer": {"lr": 0}}, "optimizer.lr must be >0.0, got 0.0"),
    ({"data": {"aug": {"jitter": 1.01}}}, "data.aug.jitter must be in [0.0, 1.0], got 1.01"),
    ({"epochs": 2, "switch": {"at_epoch": 2}}, "switch.at_epoch must be below epochs (2), got 2"),
    (
        {"data": {"pipeline": "pil", "aug": {"pad_mode": "reflect"}}},
        'data.aug.flip_mode and data.aug.pad_mode other than random and zeros need data.pipeline = "device"',
    ),
    (
        {"data": {"pipeline": "pil", "aug": {"flip": True, "flip_mode": "alternate"}}},
        'data.aug.flip_mode and data.aug.pad_mode other than random and zeros need data.pipeline = "device"',
    ),
]


@pytest.mark.parametrize("d, message", MESSAGES)
def test_bad_values_are_refused_with_the_whole_message(d, message):
    with pytest.raises(ConfigError) as e:
        from_dict(d)
    assert str(e.value) == message


def test_values_at_the_ends_of_a_range_and_whole_floats_are_accepted():
    cfg = from_dict({"epochs": 3.0, "data": {"aug": {"jitter": 1.0, "crop_padding": 16}}, "train_subset": None})
    assert cfg.epochs == 3 and type(cfg.epochs) is int
    assert cfg.data.aug.jitter == 1.0 and cfg.data.aug.crop_padding == 16 and cfg.train_subset is None
    assert from_dict({"epochs": 2, "switch": {"at_epoch": 1}}).switch.at_epoch == 1
    assert from_dict({"probes": {"landscape_steps": [1, 2]}}).probes.landscape_steps == (1.0, 2.0)


def test_set_key_makes_missing_tables_and_names_what_is_wrong():
    assert set_key({}, "optimizer.lr", 0.1) == {"optimizer": {"lr": 0.1}}
    with pytest.raises(ConfigError) as e:
        set_key({"model": {"kernel_size": [3, 3]}}, "model.kernel_size.2", 7)
    assert str(e.value) == "model.kernel_size has 2 items; 'model.kernel_size.2' is out of range"
    with pytest.raises(ConfigError) as e:
        set_key({"optimizer": {"lr": 0.1}}, "optimizer.lr.x", 1)
    assert str(e.value) == "unknown config key 'optimizer.lr.x': optimizer.lr is a value, not a table"


def test_get_key_follows_tables_and_list_indices():
    assert get_key({"model": {"kernel_size": [3, {"a": 5}]}}, "model.kernel_size.1.a") == 5


def test_merge_is_deep_and_the_update_wins():
    base = {"optimizer": {"lr": 0.1, "name": "sgd"}, "epochs": 3, "data": 1}
    out = merge(base, {"optimizer": {"lr": 0.2}, "data": {"dataset": "synthetic"}})
    assert out == {"optimizer": {"lr": 0.2, "name": "sgd"}, "epochs": 3, "data": {"dataset": "synthetic"}}
    assert base["optimizer"]["lr"] == 0.1  # a copy


def test_an_assignment_splits_at_its_first_equals_sign():
    assert parse_assignment("data.dataset=a=b") == ("data.dataset", "a=b")


def test_the_later_schedule_loss_and_resnet12_options_leave_earlier_hashes_alone():
    from ablate.studies import _resolve, expand, parse

    # Computed with the code on main at 216f561, before schedule.start_frac, loss.smoothing_form
    # and resnet12's downsample existed (python -c with the same calls), on the study files of
    # that commit (since changed on purpose: they use the report's label smoothing now).
    resnet12 = _resolve({"model": {"name": "resnet12"}})
    assert resnet12.model.args["downsample"] == "maxpool"  # stored resolved, yet not hashed
    assert config_hash(resnet12) == "4ac87f5751386eff"
    assert {p.config_hash for p in expand(parse(RANGER_AT_216F561))} == {"663b2325166073a4"}
    onecycle = {
        "model": {"name": "resnet9"},
        "schedule": {"name": "onecycle", "peak_at": 0.2},
        "loss": {"label_smoothing": 0.2},
    }
    assert config_hash(_resolve(onecycle)) == "8a3437e5a0d3b218"
    assert {p.config_hash for p in expand(parse(LOSS_AT_216F561))} == {
        "0b00bf0b85e83366",
        "36ac7c370f122ec4",
        "4e73b80e2c5ee926",
        "6c641a030a726352",
        "a89c46d1719c9b3d",
        "cd8904a84654aa21",
        "f7c687fd4aa77734",
        "fb862dd1f8dd72d3",
    }
    # Away from their defaults they are part of the identity.
    assert config_hash(_resolve({"model": {"name": "resnet12", "downsample": "stride"}})) != config_hash(resnet12)
    assert (
        config_hash(_resolve({**onecycle, "loss": {"label_smoothing": 0.2, "smoothing_form": "report"}}))
        != "8a3437e5a0d3b218"
    )
    assert (
        config_hash(_resolve({**onecycle, "schedule": {"name": "onecycle", "peak_at": 0.2, "start_frac": 0.1}}))
        != "8a3437e5a0d3b218"
    )


RANGER_AT_216F561 = """description = "Recipe: a 12-layer residual net with Cutout, label smoothing and Ranger, 80 epochs (report: 94.89%)"
figures = []
seeds = 1
reported = { acc = 0.9489, epochs = 80, layers = 12, params = 7827786, note = "Cutout, label smoothing, Ranger" }

[base]
epochs = 80
batch_size = 128
data = { aug = { crop_padding = 4, flip = true, cutout = 16 } }
model = { name = "resnet12" }
optimizer = { name = "ranger", lr = 3e-3, betas = [0.95, 0.999], weight_decay = 1e-4 }
schedule = { name = "cosine", warmup_epochs = 2 }
loss = { label_smoothing = 0.1 }
"""
LOSS_AT_216F561 = """description = "Label smoothing on the toy net and on a residual net that can overfit"
figures = []
seeds = 1

[base]
epochs = 20
data = { aug = { crop_padding = 4, flip = true } }
optimizer = { name = "sgd", lr = 0.05, nesterov = true }

[axes]
"loss.label_smoothing" = [0.0, 0.05, 0.1, 0.2]
model = [{ name = "plain_cnn", depth = 3 }, { name = "resnet", depth = 2, width = 64 }]
"""
