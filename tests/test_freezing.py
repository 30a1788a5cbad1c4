"""Parameters that train for a number of steps only (``ablate.freezing``): speednet's
whitening bias, as airbench94_muon freezes it. The optimizer's own group and its squeezed
schedule, the freeze in the trainer, and a resume on either side of it."""

import pytest
import torch
from torch import nn

from ablate.config import OptimCfg, ScheduleCfg, from_dict
from ablate.data import synthetic
from ablate.freezing import Freeze
from ablate.models import create_model
from ablate.optim import build_optimizer, build_schedule
from ablate.train import Hooks, train
from tests.conftest import one_thread

STEPS = 4  # 3 steps an epoch (96 images of 32): the freeze falls inside the second epoch
TINY = {
    "epochs": 3,
    "batch_size": 32,
    "data": {"dataset": "synthetic", "aug": {"crop_padding": 2, "pad_mode": "reflect", "flip": True}},
    "model": {"name": "speednet", "widths": [8, 16, 16], "whiten_bias_steps": STEPS, "bias_lr_scale": 1.0},
    "optimizer": {
        "name": "muon",
        "lr": 2.0,
        "momentum": 0.85,
        "nesterov": True,
        "weight_decay": 0.0,
        "muon": {"bias_lr": 1.0},
    },
    "schedule": {"name": "linear"},
}


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=96, n_test=32)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("name", ["sgd", "muon"])
def test_the_frozen_after_parameter_gets_its_own_group_and_a_squeezed_schedule(name):
    model = create_model("speednet", widths=[8, 16, 16], whiten_bias_steps=STEPS)
    cfg = OptimCfg(name=name, lr=0.5, momentum=0.85, weight_decay=1e-3)
    optimizer = build_optimizer(cfg, model, 20, Freeze(model).steps_left(0))
    *others, own = optimizer.param_groups
    assert own["params"] == [model[0].bias] and own["train_steps"] == STEPS
    assert own["weight_decay"] == 1e-3 and own["lr"] == 0.5  # its former group's settings
    assert all(model[0].bias is not p for g in others for p in g["params"])
    schedule = build_schedule(ScheduleCfg(name="linear"), optimizer, epochs=4, steps_per_epoch=5)
    lrs = []
    for _ in range(8):
        lrs.append((others[-1]["lr"], own["lr"]))  # the group it came from
        optimizer.step()
        schedule.step()
    # The run's linear 1 -> 0 over 20 steps; the bias's over its own 4 (the record's 1 - step/4), then 0.
    assert [o for o, _ in lrs] == pytest.approx([0.5 * (1 - s / 20) for s in range(8)])
    assert [b for _, b in lrs] == pytest.approx([0.5 * (1 - s / 4) for s in range(4)] + [0.0] * 4)


def test_a_parameter_with_no_step_left_is_left_out_and_none_asked_changes_nothing():
    model = create_model("speednet", widths=[8, 16, 16], whiten_bias_steps=STEPS)
    optimizer = build_optimizer(OptimCfg(), model, 20, Freeze(model).steps_left(STEPS))
    assert all(model[0].bias is not p for g in optimizer.param_groups for p in g["params"])
    plain = create_model("speednet", widths=[8, 16, 16])
    assert Freeze(plain).after == {} and len(build_optimizer(OptimCfg(), plain, 20, {}).param_groups) == 1


def test_a_model_naming_a_parameter_it_lacks_is_refused():
    class Wrong(nn.Linear):
        def frozen_after(self):
            return {"nope": 3}

    with pytest.raises(ValueError, match="names no parameter of it: nope"):
        Freeze(Wrong(2, 2))


def test_freeze_stops_the_gradient_once_due():
    model = create_model("speednet", widths=[8, 16, 16], whiten_bias_steps=STEPS)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    freeze = Freeze(model)
    freeze.apply(STEPS - 1)
    assert model[0].bias.requires_grad and model[0].bias.grad is not None
    freeze.apply(STEPS)
    assert not model[0].bias.requires_grad and model[0].bias.grad is None
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    assert model[0].bias.grad is None and model[2][0].weight.grad is not None  # the rest still trains


def test_the_trainer_freezes_the_bias_after_its_steps(data):
    def bias_after_each_epoch(d):
        states = []
        train(from_dict({**d, "epochs": 4}), data, "cpu", Hooks(checkpoint=states.append))
        return [s["model"]["0.bias"] for s in states]  # after steps 3, 6 and 9

    after_3, after_6, after_9 = bias_after_each_epoch(TINY)
    assert not torch.equal(after_3, after_6)  # step 4 still moves it (at 1/4 of its lr) ...
    assert torch.equal(after_6, after_9)  # ... and nothing after
    free = bias_after_each_epoch({**TINY, "model": {**TINY["model"], "whiten_bias_steps": None}})
    assert not torch.equal(free[1], free[2])  # without the freeze it goes on moving


def test_an_optimizer_switch_before_the_freeze_gives_the_bias_its_steps_left(data):
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    d = {**TINY, "switch": {"at_epoch": 1, "optimizer": sgd, "schedule": {"name": "linear"}}}
    whole = train(from_dict(d), data, "cpu")
    states = []
    train(from_dict(d), data, "cpu", Hooks(checkpoint=states.append, should_stop=lambda: len(states) == 2))
    *_, own = states[-1]["optimizer"]["param_groups"]  # the second phase's: 1 of the bias's 4 steps left
    assert own["train_steps"] == 1 and len(own["params"]) == 1
    resumed = train(from_dict(d), data, "cpu", resume=states[-1])
    assert resumed.metrics["test_loss"] == whole.metrics["test_loss"]


@pytest.mark.parametrize("stop_after", [1, 2])  # resumed before the freeze, and past it
def test_a_resumed_run_ends_as_an_unbroken_one(stop_after, data, monkeypatch):
    whole = train(from_dict(TINY), data, "cpu")
    states = []
    train(from_dict(TINY), data, "cpu", Hooks(checkpoint=states.append, should_stop=lambda: len(states) == stop_after))
    assert len(states) == stop_after
    applied = []  # (steps done, the bias still trained?) at each call
    apply = Freeze.apply
    monkeypatch.setattr(
        Freeze, "apply", lambda f, done: (apply(f, done), applied.append((done, f.params["0.bias"].requires_grad)))
    )
    resumed = train(from_dict(TINY), data, "cpu", resume=states[-1])
    # Past its steps the bias is frozen before the first step (its lr is 0 by then anyway:
    # the freeze only saves its backward, which the numbers alone would not show).
    assert applied[0] == (3 * stop_after, stop_after == 1)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed.metrics[key] == whole.metrics[key], key
