"""Each recipe runs on the CPU for a handful of steps, through the real study file."""

import math

import pytest

from ablate.data import synthetic
from ablate.models import count_params, create_model
from ablate.studies import expand, load
from ablate.train import Hooks, train

RECIPES = ["fast", "best", "ranger", "densenet"]


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=64, n_test=32)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_a_few_steps_on_cpu(name, data):
    study = load(name)
    assert study.reported and study.size == 1
    overrides = [("epochs", 2), ("batch_size", 16), ("train_subset", 32), ("data.dataset", "synthetic")]
    if study.base.get("switch"):
        overrides.append(("switch.at_epoch", 1))  # both phases, one epoch each
    (point,) = expand(study, overrides)
    epochs = []
    result = train(point.config, data, "cpu", Hooks(epoch=lambda e, m: epochs.append((e, m))))
    assert result.status == "complete" and result.epochs_done == 2
    assert [e for e, _ in epochs] == [1, 2]
    for _, m in epochs:  # a recipe that blows up in its first epochs is broken, whatever it ends at
        assert all(math.isfinite(m[k]) for k in ("train_loss", "test_loss")), m
        assert 0 <= m["train_acc"] <= 1 and 0 <= m["test_acc"] <= 1


@pytest.mark.parametrize("name, params", [("fast", 6_573_130), ("best", None)])
def test_recipe_models_are_the_reports(name, params):
    (point,) = expand(load(name))
    model = create_model(point.config.model.name, **point.config.model.args)
    if params:
        assert count_params(model) == params
    else:
        assert point.config.model.args["block"] == "preact" and point.config.model.args["activation"] == "mish"
